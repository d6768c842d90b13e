// A route whose template has no routed scaling factor: the unit scale folds
// and the normalized weights are returned directly.

func.func @route_unit_scale(%logits: tensor<?x8xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %s = moe.score softmax %logits : tensor<?x8xbf16> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x2xf32>
  %ws = moe.scale %n by 1.0 : tensor<?x2xf32>
  return %ids, %ws : tensor<?x2xi32>, tensor<?x2xf32>
}
