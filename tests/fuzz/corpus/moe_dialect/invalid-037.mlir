func.func @hash_select_too_many_experts(%tok: tensor<?xi64>, %t: tensor<?x2xi32>) {
  %ids = moe.hash_select %tok, %t experts 2147483648 : tensor<?xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  return
}
