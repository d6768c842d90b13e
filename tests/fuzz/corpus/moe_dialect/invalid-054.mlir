//===----------------------------------------------------------------------===//
// moe.gather
//===----------------------------------------------------------------------===//

func.func @gather_dynamic_experts(%s: tensor<?x?xf32>, %ids: tensor<?x2xi32>) {
  %w = moe.gather %s[%ids] : tensor<?x?xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}
