func.func @gather_ids_from_wider_topk(%keys: tensor<?x16xf32>, %s: tensor<?x8xf32>) {
  %ids = moe.topk %keys k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}
