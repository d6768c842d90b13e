func.func @dispatch_hash_ids_wrong_experts(%tok: tensor<?xi32>, %table: tensor<?x2xi32>) {
  %ids = moe.hash_select %tok, %table experts 16 : tensor<?xi32>, tensor<?x2xi32> -> tensor<?x2xi32>
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}
