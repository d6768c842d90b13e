func.func @dispatch_too_many_experts(%ids: tensor<?x2xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 2147483647
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
