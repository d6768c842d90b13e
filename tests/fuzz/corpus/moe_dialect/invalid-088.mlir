func.func @dispatch_rank2_slots(%ids: tensor<?x2xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?x2xi32>, tensor<?xi32>
  return
}
