func.func @hash_select_rank2_token_ids(%tok: tensor<?x1xi64>, %t: tensor<?x2xi32>) {
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?x1xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  return
}
