// RUN: moegen-opt %s | moegen-opt | FileCheck %s
// RUN: moegen-opt %s --mlir-print-op-generic | moegen-opt | FileCheck %s

// Round trip of every moe op and variant through the custom assembly format
// and through the generic form. The verifier rules are exercised in
// invalid.mlir; the folders in canonicalize.mlir.

//===----------------------------------------------------------------------===//
// moe.score
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @score_softmax_f32
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<4x8xf32>
func.func @score_softmax_f32(%logits: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // CHECK: %[[S:.*]] = moe.score softmax %[[L]] : tensor<4x8xf32> -> tensor<4x8xf32>
  %s = moe.score softmax %logits : tensor<4x8xf32> -> tensor<4x8xf32>
  // CHECK: return %[[S]]
  return %s : tensor<4x8xf32>
}

// CHECK-LABEL: func.func @shared_gate_bf16
// CHECK-SAME:    %[[X:[a-zA-Z0-9_]+]]: tensor<?x1xbf16>
func.func @shared_gate_bf16(%x: tensor<?x1xbf16>) -> tensor<?x1xf32> {
  // CHECK: %[[G:.*]] = moe.shared_gate %[[X]] : tensor<?x1xbf16> -> tensor<?x1xf32>
  %g = moe.shared_gate %x : tensor<?x1xbf16> -> tensor<?x1xf32>
  // CHECK: return %[[G]]
  return %g : tensor<?x1xf32>
}

// CHECK-LABEL: func.func @score_sigmoid_bf16
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x256xbf16>
func.func @score_sigmoid_bf16(%logits: tensor<?x256xbf16>) -> tensor<?x256xf32> {
  // CHECK: %[[S:.*]] = moe.score sigmoid %[[L]] : tensor<?x256xbf16> -> tensor<?x256xf32>
  %s = moe.score sigmoid %logits : tensor<?x256xbf16> -> tensor<?x256xf32>
  // CHECK: return %[[S]]
  return %s : tensor<?x256xf32>
}

// CHECK-LABEL: func.func @score_sqrtsoftplus_f16
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x64xf16>
func.func @score_sqrtsoftplus_f16(%logits: tensor<?x64xf16>) -> tensor<?x64xf32> {
  // CHECK: %[[S:.*]] = moe.score sqrtsoftplus %[[L]] : tensor<?x64xf16> -> tensor<?x64xf32>
  %s = moe.score sqrtsoftplus %logits : tensor<?x64xf16> -> tensor<?x64xf32>
  // CHECK: return %[[S]]
  return %s : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @score_softmax_bf16_static
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<16x128xbf16>
func.func @score_softmax_bf16_static(%logits: tensor<16x128xbf16>) -> tensor<16x128xf32> {
  // CHECK: %[[S:.*]] = moe.score softmax %[[L]] : tensor<16x128xbf16> -> tensor<16x128xf32>
  %s = moe.score softmax %logits : tensor<16x128xbf16> -> tensor<16x128xf32>
  return %s : tensor<16x128xf32>
}

// CHECK-LABEL: func.func @score_sigmoid_f16_static
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<3x8xf16>
func.func @score_sigmoid_f16_static(%logits: tensor<3x8xf16>) -> tensor<3x8xf32> {
  // CHECK: %[[S:.*]] = moe.score sigmoid %[[L]] : tensor<3x8xf16> -> tensor<3x8xf32>
  %s = moe.score sigmoid %logits : tensor<3x8xf16> -> tensor<3x8xf32>
  return %s : tensor<3x8xf32>
}

// CHECK-LABEL: func.func @score_sqrtsoftplus_f32
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x256xf32>
func.func @score_sqrtsoftplus_f32(%logits: tensor<?x256xf32>) -> tensor<?x256xf32> {
  // CHECK: %[[S:.*]] = moe.score sqrtsoftplus %[[L]] : tensor<?x256xf32> -> tensor<?x256xf32>
  %s = moe.score sqrtsoftplus %logits : tensor<?x256xf32> -> tensor<?x256xf32>
  return %s : tensor<?x256xf32>
}

// A dynamic token dimension is compatible with a static one, either way.
// CHECK-LABEL: func.func @score_mixed_token_dims
// CHECK-SAME:    %[[L0:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
// CHECK-SAME:    %[[L1:[a-zA-Z0-9_]+]]: tensor<4x8xbf16>
func.func @score_mixed_token_dims(%l0: tensor<?x8xf32>, %l1: tensor<4x8xbf16>)
    -> (tensor<4x8xf32>, tensor<?x8xf32>) {
  // CHECK: moe.score softmax %[[L0]] : tensor<?x8xf32> -> tensor<4x8xf32>
  %s0 = moe.score softmax %l0 : tensor<?x8xf32> -> tensor<4x8xf32>
  // CHECK: moe.score softmax %[[L1]] : tensor<4x8xbf16> -> tensor<?x8xf32>
  %s1 = moe.score softmax %l1 : tensor<4x8xbf16> -> tensor<?x8xf32>
  return %s0, %s1 : tensor<4x8xf32>, tensor<?x8xf32>
}

//===----------------------------------------------------------------------===//
// moe.add_bias
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @add_bias_dynamic_tokens
// CHECK-SAME:    %[[S:[a-zA-Z0-9_]+]]: tensor<?x256xf32>
// CHECK-SAME:    %[[B:[a-zA-Z0-9_]+]]: tensor<256xf32>
func.func @add_bias_dynamic_tokens(%s: tensor<?x256xf32>, %bias: tensor<256xf32>) -> tensor<?x256xf32> {
  // CHECK: %[[K:.*]] = moe.add_bias %[[S]], %[[B]] : tensor<?x256xf32>, tensor<256xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x256xf32>, tensor<256xf32>
  // CHECK: return %[[K]] : tensor<?x256xf32>
  return %keys : tensor<?x256xf32>
}

// CHECK-LABEL: func.func @add_bias_static_tokens
// CHECK-SAME:    %[[S:[a-zA-Z0-9_]+]]: tensor<4x8xf32>
// CHECK-SAME:    %[[B:[a-zA-Z0-9_]+]]: tensor<8xf32>
func.func @add_bias_static_tokens(%s: tensor<4x8xf32>, %bias: tensor<8xf32>) -> tensor<4x8xf32> {
  // CHECK: %[[K:.*]] = moe.add_bias %[[S]], %[[B]] : tensor<4x8xf32>, tensor<8xf32>
  %keys = moe.add_bias %s, %bias : tensor<4x8xf32>, tensor<8xf32>
  // CHECK: return %[[K]] : tensor<4x8xf32>
  return %keys : tensor<4x8xf32>
}

// A bias of unknown length is accepted; its length is checked at run time.
// CHECK-LABEL: func.func @add_bias_dynamic_bias
func.func @add_bias_dynamic_bias(%s: tensor<?x8xf32>, %bias: tensor<?xf32>) -> tensor<?x8xf32> {
  // CHECK: moe.add_bias %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<?xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x8xf32>, tensor<?xf32>
  return %keys : tensor<?x8xf32>
}

//===----------------------------------------------------------------------===//
// moe.group_mask
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @group_mask_top2_sum
// CHECK-SAME:    %[[K:[a-zA-Z0-9_]+]]: tensor<?x256xf32>
func.func @group_mask_top2_sum(%keys: tensor<?x256xf32>) -> tensor<?x256xf32> {
  // CHECK: %[[M:.*]] = moe.group_mask %[[K]] groups 8 keep 4 by top2_sum : tensor<?x256xf32>
  %m = moe.group_mask %keys groups 8 keep 4 by top2_sum : tensor<?x256xf32>
  // CHECK: return %[[M]] : tensor<?x256xf32>
  return %m : tensor<?x256xf32>
}

// CHECK-LABEL: func.func @group_mask_max
// CHECK-SAME:    %[[K:[a-zA-Z0-9_]+]]: tensor<4x64xf32>
func.func @group_mask_max(%keys: tensor<4x64xf32>) -> tensor<4x64xf32> {
  // CHECK: %[[M:.*]] = moe.group_mask %[[K]] groups 8 keep 3 by max : tensor<4x64xf32>
  %m = moe.group_mask %keys groups 8 keep 3 by max : tensor<4x64xf32>
  // CHECK: return %[[M]] : tensor<4x64xf32>
  return %m : tensor<4x64xf32>
}

// Edge cases the verifier accepts: one expert per group (max only), all
// groups kept, two experts per group (the minimum for top2_sum), one group.
// CHECK-LABEL: func.func @group_mask_edges
func.func @group_mask_edges(%keys: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // CHECK: moe.group_mask %{{.*}} groups 8 keep 1 by max : tensor<?x8xf32>
  %m0 = moe.group_mask %keys groups 8 keep 1 by max : tensor<?x8xf32>
  // CHECK: moe.group_mask %{{.*}} groups 4 keep 4 by top2_sum : tensor<?x8xf32>
  %m1 = moe.group_mask %m0 groups 4 keep 4 by top2_sum : tensor<?x8xf32>
  // CHECK: moe.group_mask %{{.*}} groups 1 keep 1 by top2_sum : tensor<?x8xf32>
  %m2 = moe.group_mask %m1 groups 1 keep 1 by top2_sum : tensor<?x8xf32>
  return %m2 : tensor<?x8xf32>
}

//===----------------------------------------------------------------------===//
// moe.topk
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @topk_dynamic_tokens
// CHECK-SAME:    %[[K:[a-zA-Z0-9_]+]]: tensor<?x256xf32>
func.func @topk_dynamic_tokens(%keys: tensor<?x256xf32>) -> tensor<?x8xi32> {
  // CHECK: %[[IDS:.*]] = moe.topk %[[K]] k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
  %ids = moe.topk %keys k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
  // CHECK: return %[[IDS]] : tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

// CHECK-LABEL: func.func @topk_static_tokens
// CHECK-SAME:    %[[K:[a-zA-Z0-9_]+]]: tensor<4x8xf32>
func.func @topk_static_tokens(%keys: tensor<4x8xf32>) -> tensor<4x2xi32> {
  // CHECK: %[[IDS:.*]] = moe.topk %[[K]] k 2 : tensor<4x8xf32> -> tensor<4x2xi32>
  %ids = moe.topk %keys k 2 : tensor<4x8xf32> -> tensor<4x2xi32>
  // CHECK: return %[[IDS]] : tensor<4x2xi32>
  return %ids : tensor<4x2xi32>
}

// k may be as large as the number of experts, and k = 1 is allowed.
// CHECK-LABEL: func.func @topk_edges
func.func @topk_edges(%keys: tensor<?x8xf32>) -> (tensor<?x8xi32>, tensor<?x1xi32>) {
  // CHECK: moe.topk %{{.*}} k 8 : tensor<?x8xf32> -> tensor<?x8xi32>
  %all = moe.topk %keys k 8 : tensor<?x8xf32> -> tensor<?x8xi32>
  // CHECK: moe.topk %{{.*}} k 1 : tensor<?x8xf32> -> tensor<?x1xi32>
  %one = moe.topk %keys k 1 : tensor<?x8xf32> -> tensor<?x1xi32>
  return %all, %one : tensor<?x8xi32>, tensor<?x1xi32>
}

//===----------------------------------------------------------------------===//
// moe.topp
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @topp_dynamic_tokens
// CHECK-SAME:    %[[K:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
func.func @topp_dynamic_tokens(%keys: tensor<?x64xf32>) -> tensor<?x8xi32> {
  // CHECK: %[[IDS:.*]] = moe.topp %[[K]] k 8 p 6.000000e-01 : tensor<?x64xf32> -> tensor<?x8xi32>
  %ids = moe.topp %keys k 8 p 0.6 : tensor<?x64xf32> -> tensor<?x8xi32>
  // CHECK: return %[[IDS]] : tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

//===----------------------------------------------------------------------===//
// moe.expert_choice
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @expert_choice_dynamic_tokens
// CHECK-SAME:    %[[K:[a-zA-Z0-9_]+]]: tensor<?x64xf32>
func.func @expert_choice_dynamic_tokens(%keys: tensor<?x64xf32>) -> tensor<?x4xi32> {
  // CHECK: %[[IDS:.*]] = moe.expert_choice %[[K]] k 4 capacity_factor 2.000000e+00 : tensor<?x64xf32> -> tensor<?x4xi32>
  %ids = moe.expert_choice %keys k 4 capacity_factor 2.0
      : tensor<?x64xf32> -> tensor<?x4xi32>
  // CHECK: return %[[IDS]] : tensor<?x4xi32>
  return %ids : tensor<?x4xi32>
}

// The ops that read a top-p router's ids or metadata carry unused_slots.
// CHECK-LABEL: func.func @unused_slots
func.func @unused_slots(%forced: tensor<?x8xi32>, %hidden: tensor<?x?xbf16>,
                        %out: tensor<?x?xbf16>, %w: tensor<?x8xf32>)
    -> (tensor<?x8xi32>, tensor<256xi32>, tensor<?x?xbf16>, tensor<?x?xbf16>) {
  // CHECK: moe.forced_select %{{.*}} experts 256 unused_slots : tensor<?x8xi32> -> tensor<?x8xi32>
  %ids = moe.forced_select %forced experts 256 unused_slots
      : tensor<?x8xi32> -> tensor<?x8xi32>
  // CHECK: moe.dispatch %{{.*}} experts 256 unused_slots : tensor<?x8xi32> -> tensor<256xi32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %forced experts 256
      unused_slots : tensor<?x8xi32> -> tensor<256xi32>, tensor<257xi32>,
                     tensor<?xi32>, tensor<?xi32>
  // CHECK: moe.permute %{{.*}}[%{{.*}}] k 8 unused_slots : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  %permuted = moe.permute %hidden[%sorted] k 8 unused_slots
      : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  // CHECK: moe.combine %{{.*}}[%{{.*}}] weights %{{.*}} unused_slots : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x8xf32> -> tensor<?x?xbf16>
  %combined = moe.combine %out[%positions] weights %w unused_slots
      : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x8xf32> -> tensor<?x?xbf16>
  return %ids, %counts, %permuted, %combined
      : tensor<?x8xi32>, tensor<256xi32>, tensor<?x?xbf16>, tensor<?x?xbf16>
}

//===----------------------------------------------------------------------===//
// moe.update_bias
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @update_bias
func.func @update_bias(%bias: tensor<256xf32>, %counts: tensor<256xi32>) -> tensor<256xf32> {
  // CHECK: %[[U:.*]] = moe.update_bias %{{.*}}, %{{.*}} rate 1.000000e-03 : tensor<256xf32>, tensor<256xi32> -> tensor<256xf32>
  %updated = moe.update_bias %bias, %counts rate 0.001
      : tensor<256xf32>, tensor<256xi32> -> tensor<256xf32>
  // CHECK: return %[[U]]
  return %updated : tensor<256xf32>
}

//===----------------------------------------------------------------------===//
// moe.hash_select
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @hash_select_i32_token_ids
// CHECK-SAME:    %[[TOK:[a-zA-Z0-9_]+]]: tensor<?xi32>
// CHECK-SAME:    %[[TAB:[a-zA-Z0-9_]+]]: tensor<?x6xi32>
func.func @hash_select_i32_token_ids(%tok: tensor<?xi32>, %table: tensor<?x6xi32>) -> tensor<?x6xi32> {
  // CHECK: %[[IDS:.*]] = moe.hash_select %[[TOK]], %[[TAB]] experts 256 : tensor<?xi32>, tensor<?x6xi32> -> tensor<?x6xi32>
  %ids = moe.hash_select %tok, %table experts 256 : tensor<?xi32>, tensor<?x6xi32> -> tensor<?x6xi32>
  // CHECK: return %[[IDS]] : tensor<?x6xi32>
  return %ids : tensor<?x6xi32>
}

// CHECK-LABEL: func.func @hash_select_i64_token_ids
// CHECK-SAME:    %[[TOK:[a-zA-Z0-9_]+]]: tensor<?xi64>
// CHECK-SAME:    %[[TAB:[a-zA-Z0-9_]+]]: tensor<129280x6xi32>
func.func @hash_select_i64_token_ids(%tok: tensor<?xi64>, %table: tensor<129280x6xi32>) -> tensor<?x6xi32> {
  // CHECK: %[[IDS:.*]] = moe.hash_select %[[TOK]], %[[TAB]] experts 256 : tensor<?xi64>, tensor<129280x6xi32> -> tensor<?x6xi32>
  %ids = moe.hash_select %tok, %table experts 256 : tensor<?xi64>, tensor<129280x6xi32> -> tensor<?x6xi32>
  // CHECK: return %[[IDS]] : tensor<?x6xi32>
  return %ids : tensor<?x6xi32>
}

// Static tokens; k equal to the number of experts is allowed.
// CHECK-LABEL: func.func @hash_select_static_tokens
// CHECK-SAME:    %[[TOK:[a-zA-Z0-9_]+]]: tensor<5xi64>
// CHECK-SAME:    %[[TAB:[a-zA-Z0-9_]+]]: tensor<100x4xi32>
func.func @hash_select_static_tokens(%tok: tensor<5xi64>, %table: tensor<100x4xi32>) -> tensor<5x4xi32> {
  // CHECK: moe.hash_select %[[TOK]], %[[TAB]] experts 4 : tensor<5xi64>, tensor<100x4xi32> -> tensor<5x4xi32>
  %ids = moe.hash_select %tok, %table experts 4 : tensor<5xi64>, tensor<100x4xi32> -> tensor<5x4xi32>
  return %ids : tensor<5x4xi32>
}

//===----------------------------------------------------------------------===//
// moe.forced_select
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @forced_select_i32
// CHECK-SAME:    %[[F:[a-zA-Z0-9_]+]]: tensor<?x8xi32>
func.func @forced_select_i32(%forced: tensor<?x8xi32>) -> tensor<?x8xi32> {
  // CHECK: %[[IDS:.*]] = moe.forced_select %[[F]] experts 256 : tensor<?x8xi32> -> tensor<?x8xi32>
  %ids = moe.forced_select %forced experts 256 : tensor<?x8xi32> -> tensor<?x8xi32>
  // CHECK: return %[[IDS]] : tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

// CHECK-LABEL: func.func @forced_select_i64
// CHECK-SAME:    %[[F:[a-zA-Z0-9_]+]]: tensor<?x8xi64>
func.func @forced_select_i64(%forced: tensor<?x8xi64>) -> tensor<?x8xi32> {
  // CHECK: %[[IDS:.*]] = moe.forced_select %[[F]] experts 256 : tensor<?x8xi64> -> tensor<?x8xi32>
  %ids = moe.forced_select %forced experts 256 : tensor<?x8xi64> -> tensor<?x8xi32>
  // CHECK: return %[[IDS]] : tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

// CHECK-LABEL: func.func @forced_select_static_tokens
// CHECK-SAME:    %[[F:[a-zA-Z0-9_]+]]: tensor<3x2xi64>
func.func @forced_select_static_tokens(%forced: tensor<3x2xi64>) -> tensor<3x2xi32> {
  // CHECK: moe.forced_select %[[F]] experts 2 : tensor<3x2xi64> -> tensor<3x2xi32>
  %ids = moe.forced_select %forced experts 2 : tensor<3x2xi64> -> tensor<3x2xi32>
  return %ids : tensor<3x2xi32>
}

//===----------------------------------------------------------------------===//
// moe.gather
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @gather_dynamic_tokens
// CHECK-SAME:    %[[S:[a-zA-Z0-9_]+]]: tensor<?x256xf32>
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x8xi32>
func.func @gather_dynamic_tokens(%s: tensor<?x256xf32>, %ids: tensor<?x8xi32>) -> tensor<?x8xf32> {
  // CHECK: %[[W:.*]] = moe.gather %[[S]][%[[IDS]]] : tensor<?x256xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  // CHECK: return %[[W]] : tensor<?x8xf32>
  return %w : tensor<?x8xf32>
}

// CHECK-LABEL: func.func @gather_static_tokens
// CHECK-SAME:    %[[S:[a-zA-Z0-9_]+]]: tensor<4x8xf32>
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<4x2xi32>
func.func @gather_static_tokens(%s: tensor<4x8xf32>, %ids: tensor<4x2xi32>) -> tensor<4x2xf32> {
  // CHECK: %[[W:.*]] = moe.gather %[[S]][%[[IDS]]] : tensor<4x8xf32>, tensor<4x2xi32> -> tensor<4x2xf32>
  %w = moe.gather %s[%ids] : tensor<4x8xf32>, tensor<4x2xi32> -> tensor<4x2xf32>
  // CHECK: return %[[W]] : tensor<4x2xf32>
  return %w : tensor<4x2xf32>
}

//===----------------------------------------------------------------------===//
// moe.normalize
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @normalize
// CHECK-SAME:    %[[W:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
func.func @normalize(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // CHECK: %[[N:.*]] = moe.normalize %[[W]] epsilon 9.9999999999999995E-21 : tensor<?x8xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  // CHECK: return %[[N]] : tensor<?x8xf32>
  return %n : tensor<?x8xf32>
}

// An epsilon of zero is allowed.
// CHECK-LABEL: func.func @normalize_zero_epsilon_static
// CHECK-SAME:    %[[W:[a-zA-Z0-9_]+]]: tensor<4x2xf32>
func.func @normalize_zero_epsilon_static(%w: tensor<4x2xf32>) -> tensor<4x2xf32> {
  // CHECK: moe.normalize %[[W]] epsilon 0.000000e+00 : tensor<4x2xf32>
  %n = moe.normalize %w epsilon 0.0 : tensor<4x2xf32>
  return %n : tensor<4x2xf32>
}

//===----------------------------------------------------------------------===//
// moe.scale
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @scale
// CHECK-SAME:    %[[W:[a-zA-Z0-9_]+]]: tensor<?x8xf32>
func.func @scale(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // CHECK: %[[SC:.*]] = moe.scale %[[W]] by 2.500000e+00 : tensor<?x8xf32>
  %ws = moe.scale %w by 2.5 : tensor<?x8xf32>
  // CHECK: return %[[SC]] : tensor<?x8xf32>
  return %ws : tensor<?x8xf32>
}

// Without -canonicalize, a factor of 1 is kept as written.
// CHECK-LABEL: func.func @scale_by_one_static
// CHECK-SAME:    %[[W:[a-zA-Z0-9_]+]]: tensor<4x2xf32>
func.func @scale_by_one_static(%w: tensor<4x2xf32>) -> tensor<4x2xf32> {
  // CHECK: %[[SC:.*]] = moe.scale %[[W]] by 1.000000e+00 : tensor<4x2xf32>
  %ws = moe.scale %w by 1.0 : tensor<4x2xf32>
  // CHECK: return %[[SC]] : tensor<4x2xf32>
  return %ws : tensor<4x2xf32>
}

//===----------------------------------------------------------------------===//
// moe.dispatch
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @dispatch_dynamic_tokens
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x8xi32>
func.func @dispatch_dynamic_tokens(%ids: tensor<?x8xi32>)
    -> (tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>) {
  // CHECK: %[[C:.*]], %[[O:.*]], %[[SS:.*]], %[[SP:.*]] = moe.dispatch %[[IDS]] experts 256 : tensor<?x8xi32> -> tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 256
      : tensor<?x8xi32> -> tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>
  // CHECK: return %[[C]], %[[O]], %[[SS]], %[[SP]]
  return %counts, %offsets, %sorted, %positions
      : tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>
}

// Static tokens: the slot tensors have tokens * k = 8 entries.
// CHECK-LABEL: func.func @dispatch_static_tokens
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<4x2xi32>
func.func @dispatch_static_tokens(%ids: tensor<4x2xi32>)
    -> (tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<8xi32>) {
  // CHECK: moe.dispatch %[[IDS]] experts 8 : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<8xi32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 8
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<8xi32>
  return %counts, %offsets, %sorted, %positions
      : tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<8xi32>
}

// Dynamic tokens with static slot tensors (a multiple of k) and dynamic
// counts and offsets.
// CHECK-LABEL: func.func @dispatch_mixed_dims
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x2xi32>
func.func @dispatch_mixed_dims(%ids: tensor<?x2xi32>)
    -> (tensor<?xi32>, tensor<?xi32>, tensor<6xi32>, tensor<?xi32>) {
  // CHECK: moe.dispatch %[[IDS]] experts 8 : tensor<?x2xi32> -> tensor<?xi32>, tensor<?xi32>, tensor<6xi32>, tensor<?xi32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<?xi32>, tensor<6xi32>, tensor<?xi32>
  return %counts, %offsets, %sorted, %positions
      : tensor<?xi32>, tensor<?xi32>, tensor<6xi32>, tensor<?xi32>
}

//===----------------------------------------------------------------------===//
// moe.capture
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @capture_i16
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x8xi32>
// CHECK-SAME:    %[[BUF:[a-zA-Z0-9_]+]]: tensor<?x?x8xi16>
// CHECK-SAME:    %[[LAYER:[a-zA-Z0-9_]+]]: index
func.func @capture_i16(%ids: tensor<?x8xi32>, %buf: tensor<?x?x8xi16>, %layer: index) -> tensor<?x?x8xi16> {
  // CHECK: %[[CAP:.*]] = moe.capture %[[IDS]] into %[[BUF]][%[[LAYER]]] experts 256 : tensor<?x8xi32> into tensor<?x?x8xi16>
  %cap = moe.capture %ids into %buf[%layer] experts 256 : tensor<?x8xi32> into tensor<?x?x8xi16>
  // CHECK: return %[[CAP]] : tensor<?x?x8xi16>
  return %cap : tensor<?x?x8xi16>
}

// CHECK-LABEL: func.func @capture_i32
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<?x8xi32>
// CHECK-SAME:    %[[BUF:[a-zA-Z0-9_]+]]: tensor<?x61x8xi32>
// CHECK-SAME:    %[[LAYER:[a-zA-Z0-9_]+]]: index
func.func @capture_i32(%ids: tensor<?x8xi32>, %buf: tensor<?x61x8xi32>, %layer: index) -> tensor<?x61x8xi32> {
  // CHECK: %[[CAP:.*]] = moe.capture %[[IDS]] into %[[BUF]][%[[LAYER]]] experts 100000 : tensor<?x8xi32> into tensor<?x61x8xi32>
  %cap = moe.capture %ids into %buf[%layer] experts 100000 : tensor<?x8xi32> into tensor<?x61x8xi32>
  // CHECK: return %[[CAP]] : tensor<?x61x8xi32>
  return %cap : tensor<?x61x8xi32>
}

// Static tokens, a constant layer, and the largest expert count i16 takes.
// CHECK-LABEL: func.func @capture_static_i16_max_experts
// CHECK-SAME:    %[[IDS:[a-zA-Z0-9_]+]]: tensor<4x2xi32>
// CHECK-SAME:    %[[BUF:[a-zA-Z0-9_]+]]: tensor<4x3x2xi16>
func.func @capture_static_i16_max_experts(%ids: tensor<4x2xi32>, %buf: tensor<4x3x2xi16>) -> tensor<4x3x2xi16> {
  // CHECK: %[[LAYER:.*]] = arith.constant 1 : index
  %layer = arith.constant 1 : index
  // CHECK: moe.capture %[[IDS]] into %[[BUF]][%[[LAYER]]] experts 32767 : tensor<4x2xi32> into tensor<4x3x2xi16>
  %cap = moe.capture %ids into %buf[%layer] experts 32767 : tensor<4x2xi32> into tensor<4x3x2xi16>
  return %cap : tensor<4x3x2xi16>
}

//===----------------------------------------------------------------------===//
// Result names
//===----------------------------------------------------------------------===//

// Results print with their role as name.
// CHECK-LABEL: func.func @result_names
func.func @result_names(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>,
                        %forced: tensor<?x2xi64>, %tok: tensor<?xi64>,
                        %table: tensor<?x2xi32>, %buf: tensor<?x4x2xi16>,
                        %layer: index) {
  // CHECK: %scores = moe.score
  %0 = moe.score softmax %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  // CHECK: %keys = moe.add_bias
  %1 = moe.add_bias %0, %bias : tensor<?x8xf32>, tensor<8xf32>
  // CHECK: %masked = moe.group_mask
  %2 = moe.group_mask %1 groups 4 keep 2 by top2_sum : tensor<?x8xf32>
  // CHECK: %ids = moe.topk
  %3 = moe.topk %2 k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  // CHECK: %ids_0 = moe.hash_select
  %4 = moe.hash_select %tok, %table experts 8 : tensor<?xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  // CHECK: %ids_1 = moe.forced_select
  %5 = moe.forced_select %forced experts 8 : tensor<?x2xi64> -> tensor<?x2xi32>
  // CHECK: %weights = moe.gather
  %6 = moe.gather %0[%3] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  // CHECK: %normalized = moe.normalize
  %7 = moe.normalize %6 epsilon 0.0 : tensor<?x2xf32>
  // CHECK: %scaled = moe.scale
  %8 = moe.scale %7 by 2.0 : tensor<?x2xf32>
  // CHECK: %counts, %offsets, %sorted_slots, %slot_positions = moe.dispatch
  %9:4 = moe.dispatch %3 experts 8
      : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  // CHECK: %captured = moe.capture
  %10 = moe.capture %3 into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x4x2xi16>
  return
}

//===----------------------------------------------------------------------===//
// Compositions
//===----------------------------------------------------------------------===//

// Softmax top-k (Mixtral / Qwen3 style).
// CHECK-LABEL: func.func @softmax_topk_route
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x128xbf16>
func.func @softmax_topk_route(%logits: tensor<?x128xbf16>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  // CHECK:      %[[S:.*]] = moe.score softmax %[[L]] : tensor<?x128xbf16> -> tensor<?x128xf32>
  // CHECK-NEXT: %[[IDS:.*]] = moe.topk %[[S]] k 8 : tensor<?x128xf32> -> tensor<?x8xi32>
  // CHECK-NEXT: %[[W:.*]] = moe.gather %[[S]][%[[IDS]]] : tensor<?x128xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  // CHECK-NEXT: %[[N:.*]] = moe.normalize %[[W]] epsilon 9.9999999999999995E-21 : tensor<?x8xf32>
  // CHECK-NEXT: return %[[IDS]], %[[N]] : tensor<?x8xi32>, tensor<?x8xf32>
  %s = moe.score softmax %logits : tensor<?x128xbf16> -> tensor<?x128xf32>
  %ids = moe.topk %s k 8 : tensor<?x128xf32> -> tensor<?x8xi32>
  %w = moe.gather %s[%ids] : tensor<?x128xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  return %ids, %n : tensor<?x8xi32>, tensor<?x8xf32>
}

// DeepSeek-V3: sigmoid scores, selection bias, grouped top-k, weights from
// the unbiased scores, routed scaling factor, ids captured for replay.
// CHECK-LABEL: func.func @deepseek_v3_route
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x256xf32>
// CHECK-SAME:    %[[B:[a-zA-Z0-9_]+]]: tensor<256xf32>
// CHECK-SAME:    %[[BUF:[a-zA-Z0-9_]+]]: tensor<?x?x8xi16>
// CHECK-SAME:    %[[LAYER:[a-zA-Z0-9_]+]]: index
func.func @deepseek_v3_route(%logits: tensor<?x256xf32>, %bias: tensor<256xf32>,
                             %cap: tensor<?x?x8xi16>, %layer: index)
    -> (tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x?x8xi16>) {
  // CHECK:      %[[S:.*]] = moe.score sigmoid %[[L]] : tensor<?x256xf32> -> tensor<?x256xf32>
  // CHECK-NEXT: %[[K:.*]] = moe.add_bias %[[S]], %[[B]] : tensor<?x256xf32>, tensor<256xf32>
  // CHECK-NEXT: %[[M:.*]] = moe.group_mask %[[K]] groups 8 keep 4 by top2_sum : tensor<?x256xf32>
  // CHECK-NEXT: %[[IDS:.*]] = moe.topk %[[M]] k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
  // CHECK-NEXT: %[[W:.*]] = moe.gather %[[S]][%[[IDS]]] : tensor<?x256xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  // CHECK-NEXT: %[[N:.*]] = moe.normalize %[[W]] epsilon 9.9999999999999995E-21 : tensor<?x8xf32>
  // CHECK-NEXT: %[[SC:.*]] = moe.scale %[[N]] by 2.500000e+00 : tensor<?x8xf32>
  // CHECK-NEXT: %[[CAP:.*]] = moe.capture %[[IDS]] into %[[BUF]][%[[LAYER]]] experts 256 : tensor<?x8xi32> into tensor<?x?x8xi16>
  // CHECK-NEXT: return %[[IDS]], %[[SC]], %[[CAP]] : tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x?x8xi16>
  %s = moe.score sigmoid %logits : tensor<?x256xf32> -> tensor<?x256xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x256xf32>, tensor<256xf32>
  %m = moe.group_mask %keys groups 8 keep 4 by top2_sum : tensor<?x256xf32>
  %ids = moe.topk %m k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  %ws = moe.scale %n by 2.5 : tensor<?x8xf32>
  %cap1 = moe.capture %ids into %cap[%layer] experts 256 : tensor<?x8xi32> into tensor<?x?x8xi16>
  return %ids, %ws, %cap1 : tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x?x8xi16>
}

// DeepSeek-V4 hash layer: sqrtsoftplus scores, ids from the token-id table.
// CHECK-LABEL: func.func @deepseek_v4_hash_route
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x256xbf16>
// CHECK-SAME:    %[[TOK:[a-zA-Z0-9_]+]]: tensor<?xi64>
// CHECK-SAME:    %[[TAB:[a-zA-Z0-9_]+]]: tensor<?x6xi32>
func.func @deepseek_v4_hash_route(%logits: tensor<?x256xbf16>, %tok: tensor<?xi64>,
                                  %table: tensor<?x6xi32>) -> (tensor<?x6xi32>, tensor<?x6xf32>) {
  // CHECK:      %[[S:.*]] = moe.score sqrtsoftplus %[[L]] : tensor<?x256xbf16> -> tensor<?x256xf32>
  // CHECK-NEXT: %[[IDS:.*]] = moe.hash_select %[[TOK]], %[[TAB]] experts 256 : tensor<?xi64>, tensor<?x6xi32> -> tensor<?x6xi32>
  // CHECK-NEXT: %[[W:.*]] = moe.gather %[[S]][%[[IDS]]] : tensor<?x256xf32>, tensor<?x6xi32> -> tensor<?x6xf32>
  // CHECK-NEXT: %[[N:.*]] = moe.normalize %[[W]] epsilon 9.9999999999999995E-21 : tensor<?x6xf32>
  // CHECK-NEXT: %[[SC:.*]] = moe.scale %[[N]] by 1.500000e+00 : tensor<?x6xf32>
  // CHECK-NEXT: return %[[IDS]], %[[SC]] : tensor<?x6xi32>, tensor<?x6xf32>
  %s = moe.score sqrtsoftplus %logits : tensor<?x256xbf16> -> tensor<?x256xf32>
  %ids = moe.hash_select %tok, %table experts 256 : tensor<?xi64>, tensor<?x6xi32> -> tensor<?x6xi32>
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x6xi32> -> tensor<?x6xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x6xf32>
  %ws = moe.scale %n by 1.5 : tensor<?x6xf32>
  return %ids, %ws : tensor<?x6xi32>, tensor<?x6xf32>
}

// Router replay: forced ids, weights from the live scores, ids captured
// into an i32 buffer.
// CHECK-LABEL: func.func @replay
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<?x384xf16>
// CHECK-SAME:    %[[F:[a-zA-Z0-9_]+]]: tensor<?x8xi64>
// CHECK-SAME:    %[[BUF:[a-zA-Z0-9_]+]]: tensor<?x61x8xi32>
// CHECK-SAME:    %[[LAYER:[a-zA-Z0-9_]+]]: index
func.func @replay(%logits: tensor<?x384xf16>, %forced: tensor<?x8xi64>,
                  %cap: tensor<?x61x8xi32>, %layer: index)
    -> (tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x61x8xi32>) {
  // CHECK:      %[[S:.*]] = moe.score sigmoid %[[L]] : tensor<?x384xf16> -> tensor<?x384xf32>
  // CHECK-NEXT: %[[IDS:.*]] = moe.forced_select %[[F]] experts 384 : tensor<?x8xi64> -> tensor<?x8xi32>
  // CHECK-NEXT: %[[W:.*]] = moe.gather %[[S]][%[[IDS]]] : tensor<?x384xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  // CHECK-NEXT: %[[N:.*]] = moe.normalize %[[W]] epsilon 9.9999999999999995E-21 : tensor<?x8xf32>
  // CHECK-NEXT: %[[SC:.*]] = moe.scale %[[N]] by 2.827000e+00 : tensor<?x8xf32>
  // CHECK-NEXT: %[[CAP:.*]] = moe.capture %[[IDS]] into %[[BUF]][%[[LAYER]]] experts 384 : tensor<?x8xi32> into tensor<?x61x8xi32>
  // CHECK-NEXT: return %[[IDS]], %[[SC]], %[[CAP]]
  %s = moe.score sigmoid %logits : tensor<?x384xf16> -> tensor<?x384xf32>
  %ids = moe.forced_select %forced experts 384 : tensor<?x8xi64> -> tensor<?x8xi32>
  %w = moe.gather %s[%ids] : tensor<?x384xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  %ws = moe.scale %n by 2.827 : tensor<?x8xf32>
  %cap1 = moe.capture %ids into %cap[%layer] experts 384 : tensor<?x8xi32> into tensor<?x61x8xi32>
  return %ids, %ws, %cap1 : tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x61x8xi32>
}

// Route then dispatch, static tokens, in one function.
// CHECK-LABEL: func.func @route_and_dispatch
// CHECK-SAME:    %[[L:[a-zA-Z0-9_]+]]: tensor<16x64xf32>
func.func @route_and_dispatch(%logits: tensor<16x64xf32>)
    -> (tensor<16x4xf32>, tensor<64xi32>, tensor<65xi32>, tensor<64xi32>, tensor<64xi32>) {
  // CHECK:      %[[S:.*]] = moe.score softmax %[[L]] : tensor<16x64xf32> -> tensor<16x64xf32>
  // CHECK-NEXT: %[[M:.*]] = moe.group_mask %[[S]] groups 16 keep 2 by max : tensor<16x64xf32>
  // CHECK-NEXT: %[[IDS:.*]] = moe.topk %[[M]] k 4 : tensor<16x64xf32> -> tensor<16x4xi32>
  // CHECK-NEXT: %[[W:.*]] = moe.gather %[[S]][%[[IDS]]] : tensor<16x64xf32>, tensor<16x4xi32> -> tensor<16x4xf32>
  // CHECK-NEXT: %[[C:.*]], %[[O:.*]], %[[SS:.*]], %[[SP:.*]] = moe.dispatch %[[IDS]] experts 64 : tensor<16x4xi32> -> tensor<64xi32>, tensor<65xi32>, tensor<64xi32>, tensor<64xi32>
  // CHECK-NEXT: return %[[W]], %[[C]], %[[O]], %[[SS]], %[[SP]]
  %s = moe.score softmax %logits : tensor<16x64xf32> -> tensor<16x64xf32>
  %m = moe.group_mask %s groups 16 keep 2 by max : tensor<16x64xf32>
  %ids = moe.topk %m k 4 : tensor<16x64xf32> -> tensor<16x4xi32>
  %w = moe.gather %s[%ids] : tensor<16x64xf32>, tensor<16x4xi32> -> tensor<16x4xf32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 64
      : tensor<16x4xi32> -> tensor<64xi32>, tensor<65xi32>, tensor<64xi32>, tensor<64xi32>
  return %w, %counts, %offsets, %sorted, %positions
      : tensor<16x4xf32>, tensor<64xi32>, tensor<65xi32>, tensor<64xi32>, tensor<64xi32>
}

// Permute and combine move rows of a run-time hidden size.
// CHECK-LABEL: func.func @permute_and_combine(
func.func @permute_and_combine(%hidden: tensor<?x?xbf16>, %sorted: tensor<?xi32>, %positions: tensor<?xi32>, %w: tensor<?x8xf32>, %out: tensor<?x?xbf16>) -> (tensor<?x?xbf16>, tensor<?x?xbf16>) {
  // CHECK:      %[[P:.*]] = moe.permute %{{.*}}[%{{.*}}] k 8 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  // CHECK-NEXT: %[[C:.*]] = moe.combine %{{.*}}[%{{.*}}] weights %{{.*}} : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x8xf32> -> tensor<?x?xbf16>
  // CHECK-NEXT: return %[[P]], %[[C]]
  %p = moe.permute %hidden[%sorted] k 8 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  %c = moe.combine %out[%positions] weights %w : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x8xf32> -> tensor<?x?xbf16>
  return %p, %c : tensor<?x?xbf16>, tensor<?x?xbf16>
}

// Temperature and soft cap on the logits, before scoring.
// CHECK-LABEL: func.func @score_transforms(
func.func @score_transforms(%l: tensor<?x64xbf16>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  // CHECK:      moe.score softmax %{{.*}} temperature 2.000000e+00 softcap 3.000000e+01 : tensor<?x64xbf16> -> tensor<?x64xf32>
  // CHECK-NEXT: moe.score sigmoid %{{.*}} softcap 5.000000e+00 : tensor<?x64xbf16> -> tensor<?x64xf32>
  %a = moe.score softmax %l temperature 2.0 softcap 30.0 : tensor<?x64xbf16> -> tensor<?x64xf32>
  %b = moe.score sigmoid %l softcap 5.0 : tensor<?x64xbf16> -> tensor<?x64xf32>
  return %a, %b : tensor<?x64xf32>, tensor<?x64xf32>
}
