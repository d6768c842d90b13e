func.func @dispatch_slot_lengths_differ(%ids: tensor<?x2xi32>) {
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4xi32>, tensor<6xi32>
  return
}
