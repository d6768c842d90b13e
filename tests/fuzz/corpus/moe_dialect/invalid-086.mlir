func.func @dispatch_slot_positions_not_multiple_of_k(%ids: tensor<?x4xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x4xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<6xi32>
  return
}
