// moe.scale by exactly 1 folds to its operand.

func.func @scale_by_one(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %s = moe.scale %w by 1.0 : tensor<?x8xf32>
  return %s : tensor<?x8xf32>
}
