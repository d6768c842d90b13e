func.func @gather_ids_weights_tokens(%s: tensor<?x8xf32>, %ids: tensor<3x2xi32>) {
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<3x2xi32> -> tensor<4x2xf32>
  return
}
