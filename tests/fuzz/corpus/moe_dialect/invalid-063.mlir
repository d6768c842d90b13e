func.func @gather_bf16_weights(%s: tensor<?x8xf32>, %ids: tensor<?x2xi32>) {
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xbf16>
  return
}
