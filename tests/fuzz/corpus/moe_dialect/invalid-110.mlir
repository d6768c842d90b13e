func.func @dispatch_slots_just_over_i32(%ids: tensor<1073741824x2xi32>) {
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<1073741824x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
