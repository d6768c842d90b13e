func.func @add_bias_result_type(%s: tensor<4x8xf32>, %b: tensor<8xf32>) {
  %k = "moe.add_bias"(%s, %b) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  return
}
