func.func @gather_k_above_experts(%s: tensor<?x8xf32>, %ids: tensor<?x9xi32>) {
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x9xi32> -> tensor<?x9xf32>
  return
}
