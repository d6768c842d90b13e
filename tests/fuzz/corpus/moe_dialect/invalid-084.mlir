func.func @dispatch_slot_positions_static_tokens(%ids: tensor<4x2xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<10xi32>
  return
}
