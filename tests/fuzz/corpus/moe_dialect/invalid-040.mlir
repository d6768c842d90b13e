func.func @hash_select_k_above_experts(%tok: tensor<?xi32>, %t: tensor<?x6xi32>) {
  %ids = moe.hash_select %tok, %t experts 4 : tensor<?xi32>, tensor<?x6xi32> -> tensor<?x6xi32>
  return
}
