func.func @scale_f16_weights(%w: tensor<?x8xf16>) {
  %s = moe.scale %w by 2.0 : tensor<?x8xf16>
  return
}
