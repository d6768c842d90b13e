func.func @add_bias_length_mismatch(%s: tensor<?x8xf32>, %b: tensor<4xf32>) {
  %k = moe.add_bias %s, %b : tensor<?x8xf32>, tensor<4xf32>
  return
}
