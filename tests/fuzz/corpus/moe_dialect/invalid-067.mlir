func.func @normalize_rank1(%w: tensor<8xf32>) {
  %n = moe.normalize %w epsilon 0.0 : tensor<8xf32>
  return
}
