func.func @dispatch_rank1_ids(%ids: tensor<?xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
