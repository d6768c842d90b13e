func.func @add_bias_bf16_scores(%s: tensor<?x8xbf16>, %b: tensor<8xf32>) {
  %k = moe.add_bias %s, %b : tensor<?x8xbf16>, tensor<8xf32>
  return
}
