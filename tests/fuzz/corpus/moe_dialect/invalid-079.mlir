func.func @dispatch_dynamic_k(%ids: tensor<?x?xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x?xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
