func.func @scale_result_type(%w: tensor<4x8xf32>) {
  %s = "moe.scale"(%w) <{factor = 2.0 : f64}> : (tensor<4x8xf32>) -> tensor<3x8xf32>
  return
}
