func.func @dispatch_i64_counts(%ids: tensor<?x2xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<8xi64>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
