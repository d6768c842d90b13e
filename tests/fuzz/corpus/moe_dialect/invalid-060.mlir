func.func @gather_weights_token_mismatch(%s: tensor<4x8xf32>, %ids: tensor<?x2xi32>) {
  %w = moe.gather %s[%ids] : tensor<4x8xf32>, tensor<?x2xi32> -> tensor<5x2xf32>
  return
}
