// Every moe op is Pure: unused results are erased.

func.func @dead_ops(%logits: tensor<?x256xf16>, %bias: tensor<256xf32>,
                    %tok: tensor<?xi64>, %table: tensor<?x8xi32>,
                    %forced: tensor<?x8xi64>, %buf: tensor<?x61x8xi16>,
                    %layer: index) {
  %s = moe.score sigmoid %logits : tensor<?x256xf16> -> tensor<?x256xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x256xf32>, tensor<256xf32>
  %m = moe.group_mask %keys groups 8 keep 4 by top2_sum : tensor<?x256xf32>
  %ids = moe.topk %m k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
  %hids = moe.hash_select %tok, %table experts 256 : tensor<?xi64>, tensor<?x8xi32> -> tensor<?x8xi32>
  %fids = moe.forced_select %forced experts 256 : tensor<?x8xi64> -> tensor<?x8xi32>
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  %ws = moe.scale %n by 2.5 : tensor<?x8xf32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %fids experts 256
      : tensor<?x8xi32> -> tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>
  %cap = moe.capture %hids into %buf[%layer] experts 256 : tensor<?x8xi32> into tensor<?x61x8xi16>
  return
}
