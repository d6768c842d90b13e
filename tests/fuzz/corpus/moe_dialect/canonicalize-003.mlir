// A chain of unit scales folds completely; the non-unit one in the middle
// stays.

func.func @scale_chain(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %s0 = moe.scale %w by 1.0 : tensor<?x8xf32>
  %s1 = moe.scale %s0 by 2.0 : tensor<?x8xf32>
  %s2 = moe.scale %s1 by 1.0 : tensor<?x8xf32>
  return %s2 : tensor<?x8xf32>
}
