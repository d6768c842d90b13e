//===----------------------------------------------------------------------===//
// moe.hash_select
//===----------------------------------------------------------------------===//

func.func @hash_select_zero_experts(%tok: tensor<?xi64>, %t: tensor<?x2xi32>) {
  %ids = moe.hash_select %tok, %t experts 0 : tensor<?xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  return
}
