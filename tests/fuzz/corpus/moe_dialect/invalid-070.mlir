func.func @scale_negative_factor(%w: tensor<?x8xf32>) {
  %s = moe.scale %w by -2.5 : tensor<?x8xf32>
  return
}
