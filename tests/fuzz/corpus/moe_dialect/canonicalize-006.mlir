// Only the ops that feed a used value survive: the unused add_bias /
// group_mask chain and the unused capture go; dispatch stays because one of
// its four results is used.

func.func @partially_dead(%logits: tensor<?x64xf32>, %bias: tensor<64xf32>,
                          %buf: tensor<?x2x4xi32>, %layer: index) -> tensor<64xi32> {
  %s = moe.score sqrtsoftplus %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x64xf32>, tensor<64xf32>
  %m = moe.group_mask %keys groups 8 keep 2 by max : tensor<?x64xf32>
  %ids = moe.topk %s k 4 : tensor<?x64xf32> -> tensor<?x4xi32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 64
      : tensor<?x4xi32> -> tensor<64xi32>, tensor<65xi32>, tensor<?xi32>, tensor<?xi32>
  %cap = moe.capture %ids into %buf[%layer] experts 64 : tensor<?x4xi32> into tensor<?x2x4xi32>
  return %counts : tensor<64xi32>
}
