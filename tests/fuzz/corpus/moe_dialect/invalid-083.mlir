func.func @dispatch_sorted_slots_static_tokens(%ids: tensor<4x2xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<6xi32>, tensor<8xi32>
  return
}
