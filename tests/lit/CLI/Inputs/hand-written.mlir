// A router written directly in the moe dialect: selection from sigmoid
// keys plus a bias, weights from a softmax of the same logits.
module @hand_written {
  func.func @route(%logits: tensor<?x16xf32>, %bias: tensor<16xf32>)
      -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route"} {
    %s = moe.score sigmoid %logits : tensor<?x16xf32> -> tensor<?x16xf32>
    %keys = moe.add_bias %s, %bias : tensor<?x16xf32>, tensor<16xf32>
    %ids = moe.topk %keys k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
    %p = moe.score softmax %logits : tensor<?x16xf32> -> tensor<?x16xf32>
    %w = moe.gather %p[%ids] : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
    %n = moe.normalize %w epsilon 0.0 : tensor<?x2xf32>
    return %ids, %n : tensor<?x2xi32>, tensor<?x2xf32>
  }
  func.func @dispatch(%ids: tensor<?x2xi32>)
      -> (tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>)
      attributes {moe.entry = "dispatch"} {
    %c, %o, %s, %p = moe.dispatch %ids experts 16 : tensor<?x2xi32>
        -> tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>
    return %c, %o, %s, %p : tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>
  }
}
