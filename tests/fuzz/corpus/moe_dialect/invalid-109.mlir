func.func @dispatch_slots_overflow_i32(%ids: tensor<4611686018427387904x8xi32>) {
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<4611686018427387904x8xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
