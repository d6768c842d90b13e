func.func @normalize_nan_epsilon(%w: tensor<?x8xf32>) {
  %n = moe.normalize %w epsilon 0x7FF8000000000000 : tensor<?x8xf32>
  return
}
