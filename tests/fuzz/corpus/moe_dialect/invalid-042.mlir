func.func @hash_select_ids_width(%tok: tensor<?xi64>, %t: tensor<?x6xi32>) {
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?xi64>, tensor<?x6xi32> -> tensor<?x4xi32>
  return
}
