//===----------------------------------------------------------------------===//
// moe.forced_select
//===----------------------------------------------------------------------===//

func.func @forced_select_zero_experts(%f: tensor<?x2xi32>) {
  %ids = moe.forced_select %f experts 0 : tensor<?x2xi32> -> tensor<?x2xi32>
  return
}
