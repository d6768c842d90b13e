func.func @hash_select_token_mismatch(%tok: tensor<4xi64>, %t: tensor<?x2xi32>) {
  %ids = moe.hash_select %tok, %t experts 8 : tensor<4xi64>, tensor<?x2xi32> -> tensor<3x2xi32>
  return
}
