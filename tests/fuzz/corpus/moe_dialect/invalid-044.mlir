func.func @hash_select_i64_table(%tok: tensor<?xi64>, %t: tensor<?x2xi64>) {
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?xi64>, tensor<?x2xi64> -> tensor<?x2xi32>
  return
}
