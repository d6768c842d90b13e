func.func @dispatch_sorted_slots_not_multiple_of_k(%ids: tensor<?x2xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<5xi32>, tensor<?xi32>
  return
}
