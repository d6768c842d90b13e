func.func @gather_ids_token_mismatch(%s: tensor<4x8xf32>, %ids: tensor<3x2xi32>) {
  %w = moe.gather %s[%ids] : tensor<4x8xf32>, tensor<3x2xi32> -> tensor<?x2xf32>
  return
}
