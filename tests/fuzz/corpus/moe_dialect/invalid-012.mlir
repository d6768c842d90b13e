func.func @add_bias_rank2_bias(%s: tensor<?x8xf32>, %b: tensor<1x8xf32>) {
  %k = moe.add_bias %s, %b : tensor<?x8xf32>, tensor<1x8xf32>
  return
}
