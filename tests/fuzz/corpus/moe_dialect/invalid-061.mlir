func.func @gather_weights_width(%s: tensor<?x8xf32>, %ids: tensor<?x2xi32>) {
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x3xf32>
  return
}
