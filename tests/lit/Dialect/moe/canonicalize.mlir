// RUN: moegen-opt %s -canonicalize -split-input-file | FileCheck %s

// moe.scale by exactly 1 folds to its operand.

// CHECK-LABEL: func.func @scale_by_one
// CHECK-SAME:    %[[W:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-NOT:     moe.scale
// CHECK:         return %[[W]] : tensor<?x8xf32>
func.func @scale_by_one(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %s = moe.scale %w by 1.0 : tensor<?x8xf32>
  return %s : tensor<?x8xf32>
}

// -----

// Any other factor stays.

// CHECK-LABEL: func.func @scale_by_two_and_a_half
// CHECK-SAME:    %[[W:[a-zA-Z0-9_]+]]: tensor<4x2xf32>
// CHECK:         %[[S:.*]] = moe.scale %[[W]] by 2.500000e+00 : tensor<4x2xf32>
// CHECK:         return %[[S]] : tensor<4x2xf32>
func.func @scale_by_two_and_a_half(%w: tensor<4x2xf32>) -> tensor<4x2xf32> {
  %s = moe.scale %w by 2.5 : tensor<4x2xf32>
  return %s : tensor<4x2xf32>
}

// -----

// A factor close to but not exactly 1 does not fold.

// CHECK-LABEL: func.func @scale_by_almost_one
// CHECK:         moe.scale %{{.*}} by 1.0000000000000002 : tensor<?x8xf32>
func.func @scale_by_almost_one(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %s = moe.scale %w by 0x3FF0000000000001 : tensor<?x8xf32>
  return %s : tensor<?x8xf32>
}

// -----

// A chain of unit scales folds completely; the non-unit one in the middle
// stays.

// CHECK-LABEL: func.func @scale_chain
// CHECK-SAME:    %[[W:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK:         %[[S:.*]] = moe.scale %[[W]] by 2.000000e+00 : tensor<?x8xf32>
// CHECK-NOT:     moe.scale
// CHECK:         return %[[S]] : tensor<?x8xf32>
func.func @scale_chain(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %s0 = moe.scale %w by 1.0 : tensor<?x8xf32>
  %s1 = moe.scale %s0 by 2.0 : tensor<?x8xf32>
  %s2 = moe.scale %s1 by 1.0 : tensor<?x8xf32>
  return %s2 : tensor<?x8xf32>
}

// -----

// A route whose template has no routed scaling factor: the unit scale folds
// and the normalized weights are returned directly.

// CHECK-LABEL: func.func @route_unit_scale
// CHECK:         %[[S:.*]] = moe.score softmax
// CHECK-NEXT:    %[[IDS:.*]] = moe.topk %[[S]] k 2
// CHECK-NEXT:    %[[W:.*]] = moe.gather %[[S]][%[[IDS]]]
// CHECK-NEXT:    %[[N:.*]] = moe.normalize %[[W]]
// CHECK-NEXT:    return %[[IDS]], %[[N]] : tensor<?x2xi32>, tensor<?x2xf32>
func.func @route_unit_scale(%logits: tensor<?x8xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %s = moe.score softmax %logits : tensor<?x8xbf16> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x2xf32>
  %ws = moe.scale %n by 1.0 : tensor<?x2xf32>
  return %ids, %ws : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Every moe op is Pure: unused results are erased.

// CHECK-LABEL: func.func @dead_ops
// CHECK-NOT:     moe.
// CHECK:         return
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

// -----

// Only the ops that feed a used value survive: the unused add_bias /
// group_mask chain and the unused capture go; dispatch stays because one of
// its four results is used.

// CHECK-LABEL: func.func @partially_dead
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
// CHECK:         %[[S:.*]] = moe.score sqrtsoftplus %[[L]]
// CHECK-NOT:     moe.add_bias
// CHECK-NOT:     moe.group_mask
// CHECK-NEXT:    %[[IDS:.*]] = moe.topk %[[S]] k 4
// CHECK-NEXT:    %[[C:.*]], %{{.*}}, %{{.*}}, %{{.*}} = moe.dispatch %[[IDS]] experts 64
// CHECK-NOT:     moe.capture
// CHECK:         return %[[C]] : tensor<64xi32>
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
