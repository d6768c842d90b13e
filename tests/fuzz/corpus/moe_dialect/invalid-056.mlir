func.func @gather_dynamic_k(%s: tensor<?x8xf32>, %ids: tensor<?x?xi32>) {
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x?xi32> -> tensor<?x2xf32>
  return
}
