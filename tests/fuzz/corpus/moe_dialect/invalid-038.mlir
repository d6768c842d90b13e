func.func @hash_select_dynamic_k(%tok: tensor<?xi64>, %t: tensor<?x?xi32>) {
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?xi64>, tensor<?x?xi32> -> tensor<?x2xi32>
  return
}
