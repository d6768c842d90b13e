// Any other factor stays.

func.func @scale_by_two_and_a_half(%w: tensor<4x2xf32>) -> tensor<4x2xf32> {
  %s = moe.scale %w by 2.5 : tensor<4x2xf32>
  return %s : tensor<4x2xf32>
}
