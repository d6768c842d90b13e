//===----------------------------------------------------------------------===//
// moe.dispatch
//===----------------------------------------------------------------------===//

func.func @dispatch_zero_experts(%ids: tensor<?x2xi32>) {
  %c, %o, %ss, %sp = moe.dispatch %ids experts 0
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
