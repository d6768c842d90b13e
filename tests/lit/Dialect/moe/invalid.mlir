// RUN: moegen-opt %s -split-input-file -verify-diagnostics

// One case per verifier rule of MoEOps.cpp (every emitOpError path of every
// op), then the TableGen type constraints and the AllTypesMatch traits.

//===----------------------------------------------------------------------===//
// moe.score
//===----------------------------------------------------------------------===//

func.func @score_dynamic_experts(%l: tensor<4x?xf32>) {
  // expected-error @+1 {{'moe.score' op logits must have a static expert dimension (dim 1), got 'tensor<4x?xf32>'}}
  %s = moe.score softmax %l : tensor<4x?xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @shared_gate_two_logits(%x: tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.shared_gate' op logits must be [T, 1] (one logit per token), got [T, 2]}}
  %g = moe.shared_gate %x : tensor<?x2xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @shared_gate_tokens(%x: tensor<4x1xf32>) {
  // expected-error @+1 {{'moe.shared_gate' op token dimension of gate (5) must match logits (4)}}
  %g = moe.shared_gate %x : tensor<4x1xf32> -> tensor<5x1xf32>
  return
}

// -----

func.func @shared_gate_width(%x: tensor<?x1xf16>) {
  // expected-error @+1 {{'moe.shared_gate' op gate dim 1 is 3, expected 1 (one gate per token)}}
  %g = moe.shared_gate %x : tensor<?x1xf16> -> tensor<?x3xf32>
  return
}

// -----

func.func @score_empty_experts(%l: tensor<?x0xbf16>) {
  // expected-error @+1 {{'moe.score' op logits must have a non-empty expert dimension (dim 1), got 'tensor<?x0xbf16>'}}
  %s = moe.score sigmoid %l : tensor<?x0xbf16> -> tensor<?x0xf32>
  return
}

// -----

func.func @score_token_mismatch(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.score' op token dimension of scores (3) must match logits (4)}}
  %s = moe.score softmax %l : tensor<4x8xf32> -> tensor<3x8xf32>
  return
}

// -----

func.func @score_expert_mismatch(%l: tensor<?x8xf16>) {
  // expected-error @+1 {{'moe.score' op scores dim 1 is 16, expected 8 (one score per expert of logits)}}
  %s = moe.score sqrtsoftplus %l : tensor<?x8xf16> -> tensor<?x16xf32>
  return
}

// -----

func.func @score_integer_logits(%l: tensor<4x8xi32>) {
  // expected-error @+1 {{'moe.score' op operand #0 must be 2D tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<4x8xi32>'}}
  %s = moe.score softmax %l : tensor<4x8xi32> -> tensor<4x8xf32>
  return
}

// -----

func.func @score_f64_logits(%l: tensor<4x8xf64>) {
  // expected-error @+1 {{'moe.score' op operand #0 must be 2D tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<4x8xf64>'}}
  %s = moe.score softmax %l : tensor<4x8xf64> -> tensor<4x8xf32>
  return
}

// -----

func.func @score_rank1_logits(%l: tensor<8xf32>) {
  // expected-error @+1 {{'moe.score' op operand #0 must be 2D tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<8xf32>'}}
  %s = moe.score softmax %l : tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @score_bf16_scores(%l: tensor<4x8xbf16>) {
  // expected-error @+1 {{'moe.score' op result #0 must be 2D tensor of 32-bit float values, but got 'tensor<4x8xbf16>'}}
  %s = moe.score softmax %l : tensor<4x8xbf16> -> tensor<4x8xbf16>
  return
}

// -----

func.func @score_unknown_kind(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{expected string or keyword containing one of the following enum values for attribute 'kind' [softmax, sigmoid, sqrtsoftplus, identity]}}
  %s = moe.score relu %l : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.add_bias
//===----------------------------------------------------------------------===//

func.func @add_bias_dynamic_experts(%s: tensor<?x?xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'moe.add_bias' op scores must have a static expert dimension (dim 1), got 'tensor<?x?xf32>'}}
  %k = moe.add_bias %s, %b : tensor<?x?xf32>, tensor<8xf32>
  return
}

// -----

func.func @add_bias_empty_experts(%s: tensor<?x0xf32>, %b: tensor<0xf32>) {
  // expected-error @+1 {{'moe.add_bias' op scores must have a non-empty expert dimension (dim 1), got 'tensor<?x0xf32>'}}
  %k = moe.add_bias %s, %b : tensor<?x0xf32>, tensor<0xf32>
  return
}

// -----

func.func @add_bias_length_mismatch(%s: tensor<?x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'moe.add_bias' op bias dim 0 is 4, expected 8 (one bias per expert of scores)}}
  %k = moe.add_bias %s, %b : tensor<?x8xf32>, tensor<4xf32>
  return
}

// -----

func.func @add_bias_rank2_bias(%s: tensor<?x8xf32>, %b: tensor<1x8xf32>) {
  // expected-error @+1 {{'moe.add_bias' op operand #1 must be 1D tensor of 32-bit float values, but got 'tensor<1x8xf32>'}}
  %k = moe.add_bias %s, %b : tensor<?x8xf32>, tensor<1x8xf32>
  return
}

// -----

func.func @add_bias_bf16_scores(%s: tensor<?x8xbf16>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'moe.add_bias' op operand #0 must be 2D tensor of 32-bit float values, but got 'tensor<?x8xbf16>'}}
  %k = moe.add_bias %s, %b : tensor<?x8xbf16>, tensor<8xf32>
  return
}

// -----

func.func @add_bias_result_type(%s: tensor<4x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'moe.add_bias' op failed to verify that all of {scores, keys} have same type}}
  %k = "moe.add_bias"(%s, %b) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.group_mask
//===----------------------------------------------------------------------===//

func.func @group_mask_dynamic_experts(%k: tensor<4x?xf32>) {
  // expected-error @+1 {{'moe.group_mask' op keys must have a static expert dimension (dim 1), got 'tensor<4x?xf32>'}}
  %m = moe.group_mask %k groups 2 keep 1 by max : tensor<4x?xf32>
  return
}

// -----

func.func @group_mask_empty_experts(%k: tensor<4x0xf32>) {
  // expected-error @+1 {{'moe.group_mask' op keys must have a non-empty expert dimension (dim 1), got 'tensor<4x0xf32>'}}
  %m = moe.group_mask %k groups 1 keep 1 by max : tensor<4x0xf32>
  return
}

// -----

func.func @group_mask_zero_groups(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'groups' = 0 must be in [1, 8] (the number of experts)}}
  %m = moe.group_mask %k groups 0 keep 1 by max : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_negative_groups(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'groups' = -2 must be in [1, 8] (the number of experts)}}
  %m = moe.group_mask %k groups -2 keep 1 by max : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_more_groups_than_experts(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'groups' = 16 must be in [1, 8] (the number of experts)}}
  %m = moe.group_mask %k groups 16 keep 1 by max : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_groups_not_dividing(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'groups' = 3 must divide the 8 experts}}
  %m = moe.group_mask %k groups 3 keep 1 by max : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_zero_keep(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'keep' = 0 must be in [1, 4] (the number of groups)}}
  %m = moe.group_mask %k groups 4 keep 0 by top2_sum : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_keep_more_than_groups(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'keep' = 5 must be in [1, 4] (the number of groups)}}
  %m = moe.group_mask %k groups 4 keep 5 by top2_sum : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_top2_sum_one_per_group(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'group_score' = top2_sum needs at least 2 experts per group, got 1 (8 experts / 8 groups)}}
  %m = moe.group_mask %k groups 8 keep 4 by top2_sum : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_top2_sum_single_expert(%k: tensor<?x1xf32>) {
  // expected-error @+1 {{'moe.group_mask' op attribute 'group_score' = top2_sum needs at least 2 experts per group, got 1 (1 experts / 1 groups)}}
  %m = moe.group_mask %k groups 1 keep 1 by top2_sum : tensor<?x1xf32>
  return
}

// -----

func.func @group_mask_unknown_group_score(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{expected string or keyword containing one of the following enum values for attribute 'group_score' [top2_sum, max]}}
  %m = moe.group_mask %k groups 2 keep 1 by min : tensor<?x8xf32>
  return
}

// -----

func.func @group_mask_f16_keys(%k: tensor<?x8xf16>) {
  // expected-error @+1 {{'moe.group_mask' op operand #0 must be 2D tensor of 32-bit float values, but got 'tensor<?x8xf16>'}}
  %m = moe.group_mask %k groups 2 keep 1 by max : tensor<?x8xf16>
  return
}

// -----

func.func @group_mask_result_type(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.group_mask' op failed to verify that all of {keys, masked} have same type}}
  %m = "moe.group_mask"(%k) <{group_score = 1 : i32, groups = 2 : i64, keep = 1 : i64}> : (tensor<?x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.topk
//===----------------------------------------------------------------------===//

func.func @update_bias_zero_rate(%b: tensor<8xf32>, %c: tensor<8xi32>) {
  // expected-error @+1 {{'moe.update_bias' op attribute 'rate' = 0 must be a normal f32 value > 0, in [1.1754944e-38, 3.4028234e38] (it is added to the bias in f32)}}
  %u = moe.update_bias %b, %c rate 0.0 : tensor<8xf32>, tensor<8xi32> -> tensor<8xf32>
  return
}

// -----

func.func @update_bias_counts_mismatch(%b: tensor<8xf32>, %c: tensor<9xi32>) {
  // expected-error @+1 {{'moe.update_bias' op counts dim 0 is 9, expected 8 (one load per expert of bias)}}
  %u = moe.update_bias %b, %c rate 0.5 : tensor<8xf32>, tensor<9xi32> -> tensor<8xf32>
  return
}

// -----

func.func @topp_zero_p(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.topp' op attribute 'p' = 0 must be a normal f32 value > 0, in [1.1754944e-38, 3.4028234e38] (the running sum of the selected keys is compared with it in f32)}}
  %ids = moe.topp %k k 2 p 0.0 : tensor<?x8xf32> -> tensor<?x2xi32>
  return
}

// -----

func.func @topp_k_above_experts(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.topp' op attribute 'k' = 9 must be in [1, 8] (the number of experts)}}
  %ids = moe.topp %k k 9 p 0.5 : tensor<?x8xf32> -> tensor<?x9xi32>
  return
}

// -----

func.func @topp_wrong_ids(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.topp' op ids}}
  %ids = moe.topp %k k 2 p 0.5 : tensor<?x8xf32> -> tensor<?x3xi32>
  return
}

// -----

func.func @expert_choice_zero_capacity(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.expert_choice' op attribute 'capacity_factor' = 0 must be a normal f32 value > 0, in [1.1754944e-38, 3.4028234e38] (each expert takes ceil(capacity_factor * T / E) tokens)}}
  %ids = moe.expert_choice %k k 2 capacity_factor 0.0 : tensor<?x8xf32> -> tensor<?x2xi32>
  return
}

// -----

func.func @expert_choice_k_above_experts(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.expert_choice' op attribute 'k' = 9 must be in [1, 8] (the number of experts)}}
  %ids = moe.expert_choice %k k 9 capacity_factor 1.0 : tensor<?x8xf32> -> tensor<?x9xi32>
  return
}

// -----

func.func @expert_choice_wrong_ids(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.expert_choice' op ids}}
  %ids = moe.expert_choice %k k 2 capacity_factor 1.0 : tensor<?x8xf32> -> tensor<?x3xi32>
  return
}

// -----

func.func @topk_dynamic_experts(%k: tensor<?x?xf32>) {
  // expected-error @+1 {{'moe.topk' op keys must have a static expert dimension (dim 1), got 'tensor<?x?xf32>'}}
  %ids = moe.topk %k k 2 : tensor<?x?xf32> -> tensor<?x2xi32>
  return
}

// -----

func.func @topk_empty_experts(%k: tensor<?x0xf32>) {
  // expected-error @+1 {{'moe.topk' op keys must have a non-empty expert dimension (dim 1), got 'tensor<?x0xf32>'}}
  %ids = moe.topk %k k 1 : tensor<?x0xf32> -> tensor<?x1xi32>
  return
}

// -----

func.func @topk_zero_k(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.topk' op attribute 'k' = 0 must be in [1, 8] (the number of experts)}}
  %ids = moe.topk %k k 0 : tensor<?x8xf32> -> tensor<?x0xi32>
  return
}

// -----

func.func @topk_k_above_experts(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.topk' op attribute 'k' = 9 must be in [1, 8] (the number of experts)}}
  %ids = moe.topk %k k 9 : tensor<?x8xf32> -> tensor<?x9xi32>
  return
}

// -----

func.func @topk_token_mismatch(%k: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.topk' op token dimension of ids (3) must match keys (4)}}
  %ids = moe.topk %k k 2 : tensor<4x8xf32> -> tensor<3x2xi32>
  return
}

// -----

func.func @topk_ids_width(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.topk' op ids dim 1 is 3, expected 2 (k ids per token)}}
  %ids = moe.topk %k k 2 : tensor<?x8xf32> -> tensor<?x3xi32>
  return
}

// -----

func.func @topk_i64_ids(%k: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.topk' op result #0 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?x2xi64>'}}
  %ids = moe.topk %k k 2 : tensor<?x8xf32> -> tensor<?x2xi64>
  return
}

// -----

func.func @topk_rank3_keys(%k: tensor<2x4x8xf32>) {
  // expected-error @+1 {{'moe.topk' op operand #0 must be 2D tensor of 32-bit float values, but got 'tensor<2x4x8xf32>'}}
  %ids = moe.topk %k k 2 : tensor<2x4x8xf32> -> tensor<?x2xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.hash_select
//===----------------------------------------------------------------------===//

func.func @hash_select_zero_experts(%tok: tensor<?xi64>, %t: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.hash_select' op attribute 'experts' = 0 must be in [1, 2147483647] (the i32 id limit)}}
  %ids = moe.hash_select %tok, %t experts 0 : tensor<?xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  return
}

// -----

func.func @hash_select_too_many_experts(%tok: tensor<?xi64>, %t: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.hash_select' op attribute 'experts' = 2147483648 must be in [1, 2147483647] (the i32 id limit)}}
  %ids = moe.hash_select %tok, %t experts 2147483648 : tensor<?xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  return
}

// -----

func.func @hash_select_dynamic_k(%tok: tensor<?xi64>, %t: tensor<?x?xi32>) {
  // expected-error @+1 {{'moe.hash_select' op table must have a static ids-per-token dimension (dim 1), got 'tensor<?x?xi32>'}}
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?xi64>, tensor<?x?xi32> -> tensor<?x2xi32>
  return
}

// -----

func.func @hash_select_empty_k(%tok: tensor<?xi64>, %t: tensor<?x0xi32>) {
  // expected-error @+1 {{'moe.hash_select' op table must have a non-empty ids-per-token dimension (dim 1), got 'tensor<?x0xi32>'}}
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?xi64>, tensor<?x0xi32> -> tensor<?x0xi32>
  return
}

// -----

func.func @hash_select_k_above_experts(%tok: tensor<?xi32>, %t: tensor<?x6xi32>) {
  // expected-error @+1 {{'moe.hash_select' op table has 6 ids per token, more than the 4 experts}}
  %ids = moe.hash_select %tok, %t experts 4 : tensor<?xi32>, tensor<?x6xi32> -> tensor<?x6xi32>
  return
}

// -----

func.func @hash_select_token_mismatch(%tok: tensor<4xi64>, %t: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.hash_select' op token dimension of ids (3) must match token_ids (4)}}
  %ids = moe.hash_select %tok, %t experts 8 : tensor<4xi64>, tensor<?x2xi32> -> tensor<3x2xi32>
  return
}

// -----

func.func @hash_select_ids_width(%tok: tensor<?xi64>, %t: tensor<?x6xi32>) {
  // expected-error @+1 {{'moe.hash_select' op ids dim 1 is 4, expected 6 (one id per column of the table)}}
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?xi64>, tensor<?x6xi32> -> tensor<?x4xi32>
  return
}

// -----

func.func @hash_select_rank2_token_ids(%tok: tensor<?x1xi64>, %t: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.hash_select' op operand #0 must be 1D tensor of 32-bit signless integer or 64-bit signless integer values, but got 'tensor<?x1xi64>'}}
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?x1xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  return
}

// -----

func.func @hash_select_i64_table(%tok: tensor<?xi64>, %t: tensor<?x2xi64>) {
  // expected-error @+1 {{'moe.hash_select' op operand #1 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?x2xi64>'}}
  %ids = moe.hash_select %tok, %t experts 8 : tensor<?xi64>, tensor<?x2xi64> -> tensor<?x2xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.forced_select
//===----------------------------------------------------------------------===//

func.func @forced_select_zero_experts(%f: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.forced_select' op attribute 'experts' = 0 must be in [1, 2147483647] (the i32 id limit)}}
  %ids = moe.forced_select %f experts 0 : tensor<?x2xi32> -> tensor<?x2xi32>
  return
}

// -----

func.func @forced_select_too_many_experts(%f: tensor<?x2xi64>) {
  // expected-error @+1 {{'moe.forced_select' op attribute 'experts' = 4294967296 must be in [1, 2147483647] (the i32 id limit)}}
  %ids = moe.forced_select %f experts 4294967296 : tensor<?x2xi64> -> tensor<?x2xi32>
  return
}

// -----

func.func @forced_select_dynamic_k(%f: tensor<?x?xi64>) {
  // expected-error @+1 {{'moe.forced_select' op forced_ids must have a static ids-per-token dimension (dim 1), got 'tensor<?x?xi64>'}}
  %ids = moe.forced_select %f experts 8 : tensor<?x?xi64> -> tensor<?x2xi32>
  return
}

// -----

func.func @forced_select_empty_k(%f: tensor<4x0xi32>) {
  // expected-error @+1 {{'moe.forced_select' op forced_ids must have a non-empty ids-per-token dimension (dim 1), got 'tensor<4x0xi32>'}}
  %ids = moe.forced_select %f experts 8 : tensor<4x0xi32> -> tensor<4x0xi32>
  return
}

// -----

func.func @forced_select_k_above_experts(%f: tensor<?x8xi64>) {
  // expected-error @+1 {{'moe.forced_select' op forced_ids has 8 ids per token, more than the 4 experts (ids must be distinct)}}
  %ids = moe.forced_select %f experts 4 : tensor<?x8xi64> -> tensor<?x8xi32>
  return
}

// -----

func.func @forced_select_token_mismatch(%f: tensor<4x2xi64>) {
  // expected-error @+1 {{'moe.forced_select' op token dimension of ids (5) must match forced_ids (4)}}
  %ids = moe.forced_select %f experts 8 : tensor<4x2xi64> -> tensor<5x2xi32>
  return
}

// -----

func.func @forced_select_ids_width(%f: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.forced_select' op ids dim 1 is 3, expected 2 (same k as forced_ids)}}
  %ids = moe.forced_select %f experts 8 : tensor<?x2xi32> -> tensor<?x3xi32>
  return
}

// -----

func.func @forced_select_i16_forced_ids(%f: tensor<?x2xi16>) {
  // expected-error @+1 {{'moe.forced_select' op operand #0 must be 2D tensor of 32-bit signless integer or 64-bit signless integer values, but got 'tensor<?x2xi16>'}}
  %ids = moe.forced_select %f experts 8 : tensor<?x2xi16> -> tensor<?x2xi32>
  return
}

// -----

func.func @forced_select_i64_ids(%f: tensor<?x2xi64>) {
  // expected-error @+1 {{'moe.forced_select' op result #0 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?x2xi64>'}}
  %ids = moe.forced_select %f experts 8 : tensor<?x2xi64> -> tensor<?x2xi64>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.gather
//===----------------------------------------------------------------------===//

func.func @gather_dynamic_experts(%s: tensor<?x?xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.gather' op scores must have a static expert dimension (dim 1), got 'tensor<?x?xf32>'}}
  %w = moe.gather %s[%ids] : tensor<?x?xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @gather_empty_experts(%s: tensor<?x0xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.gather' op scores must have a non-empty expert dimension (dim 1), got 'tensor<?x0xf32>'}}
  %w = moe.gather %s[%ids] : tensor<?x0xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @gather_dynamic_k(%s: tensor<?x8xf32>, %ids: tensor<?x?xi32>) {
  // expected-error @+1 {{'moe.gather' op ids must have a static ids-per-token dimension (dim 1), got 'tensor<?x?xi32>'}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x?xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @gather_empty_k(%s: tensor<?x8xf32>, %ids: tensor<?x0xi32>) {
  // expected-error @+1 {{'moe.gather' op ids must have a non-empty ids-per-token dimension (dim 1), got 'tensor<?x0xi32>'}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x0xi32> -> tensor<?x0xf32>
  return
}

// -----

func.func @gather_k_above_experts(%s: tensor<?x8xf32>, %ids: tensor<?x9xi32>) {
  // expected-error @+1 {{'moe.gather' op ids has 9 ids per token, more than the 8 experts of scores}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x9xi32> -> tensor<?x9xf32>
  return
}

// -----

func.func @gather_ids_token_mismatch(%s: tensor<4x8xf32>, %ids: tensor<3x2xi32>) {
  // expected-error @+1 {{'moe.gather' op token dimension of ids (3) must match scores (4)}}
  %w = moe.gather %s[%ids] : tensor<4x8xf32>, tensor<3x2xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @gather_weights_token_mismatch(%s: tensor<4x8xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.gather' op token dimension of weights (5) must match scores (4)}}
  %w = moe.gather %s[%ids] : tensor<4x8xf32>, tensor<?x2xi32> -> tensor<5x2xf32>
  return
}

// -----

func.func @gather_weights_width(%s: tensor<?x8xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.gather' op weights dim 1 is 3, expected 2 (one weight per id)}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x3xf32>
  return
}

// -----

func.func @gather_i64_ids(%s: tensor<?x8xf32>, %ids: tensor<?x2xi64>) {
  // expected-error @+1 {{'moe.gather' op operand #1 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?x2xi64>'}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi64> -> tensor<?x2xf32>
  return
}

// -----

func.func @gather_bf16_weights(%s: tensor<?x8xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.gather' op result #0 must be 2D tensor of 32-bit float values, but got 'tensor<?x2xbf16>'}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xbf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.normalize
//===----------------------------------------------------------------------===//

func.func @normalize_negative_epsilon(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.normalize' op attribute 'epsilon' = -1e-20 must be finite and >= 0}}
  %n = moe.normalize %w epsilon -1.0e-20 : tensor<?x8xf32>
  return
}

// -----

func.func @normalize_nan_epsilon(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.normalize' op attribute 'epsilon' = nan must be finite and >= 0}}
  %n = moe.normalize %w epsilon 0x7FF8000000000000 : tensor<?x8xf32>
  return
}

// -----

func.func @normalize_inf_epsilon(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.normalize' op attribute 'epsilon' = inf must be finite and >= 0}}
  %n = moe.normalize %w epsilon 0x7FF0000000000000 : tensor<?x8xf32>
  return
}

// -----

func.func @normalize_rank1(%w: tensor<8xf32>) {
  // expected-error @+1 {{'moe.normalize' op operand #0 must be 2D tensor of 32-bit float values, but got 'tensor<8xf32>'}}
  %n = moe.normalize %w epsilon 0.0 : tensor<8xf32>
  return
}

// -----

func.func @normalize_result_type(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.normalize' op failed to verify that all of {weights, normalized} have same type}}
  %n = "moe.normalize"(%w) <{epsilon = 0.0 : f64}> : (tensor<?x8xf32>) -> tensor<?x4xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.scale
//===----------------------------------------------------------------------===//

func.func @scale_zero_factor(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.scale' op attribute 'factor' = 0 must be finite and > 0}}
  %s = moe.scale %w by 0.0 : tensor<?x8xf32>
  return
}

// -----

func.func @scale_negative_factor(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.scale' op attribute 'factor' = -2.5 must be finite and > 0}}
  %s = moe.scale %w by -2.5 : tensor<?x8xf32>
  return
}

// -----

func.func @scale_nan_factor(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.scale' op attribute 'factor' = nan must be finite and > 0}}
  %s = moe.scale %w by 0x7FF8000000000000 : tensor<?x8xf32>
  return
}

// -----

func.func @scale_inf_factor(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.scale' op attribute 'factor' = inf must be finite and > 0}}
  %s = moe.scale %w by 0x7FF0000000000000 : tensor<?x8xf32>
  return
}

// -----

func.func @scale_factor_overflows_f32(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.scale' op attribute 'factor' = 1e+300 must be a normal f32 value, in [1.1754944e-38, 3.4028234e38]}}
  %s = moe.scale %w by 1.0e300 : tensor<?x8xf32>
  return
}

// -----

func.func @scale_factor_underflows_f32(%w: tensor<?x8xf32>) {
  // expected-error @+1 {{'moe.scale' op attribute 'factor' = 1e-39 must be a normal f32 value}}
  %s = moe.scale %w by 1.0e-39 : tensor<?x8xf32>
  return
}

// -----

func.func @scale_f16_weights(%w: tensor<?x8xf16>) {
  // expected-error @+1 {{'moe.scale' op operand #0 must be 2D tensor of 32-bit float values, but got 'tensor<?x8xf16>'}}
  %s = moe.scale %w by 2.0 : tensor<?x8xf16>
  return
}

// -----

func.func @scale_result_type(%w: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.scale' op failed to verify that all of {weights, scaled} have same type}}
  %s = "moe.scale"(%w) <{factor = 2.0 : f64}> : (tensor<4x8xf32>) -> tensor<3x8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.dispatch
//===----------------------------------------------------------------------===//

func.func @dispatch_zero_experts(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op attribute 'experts' = 0 must be in [1, 2147483646] (the i32 id limit)}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 0
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_too_many_experts(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op attribute 'experts' = 2147483647 must be in [1, 2147483646] (the i32 id limit)}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 2147483647
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_dynamic_k(%ids: tensor<?x?xi32>) {
  // expected-error @+1 {{'moe.dispatch' op ids must have a static ids-per-token dimension (dim 1), got 'tensor<?x?xi32>'}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x?xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_empty_k(%ids: tensor<?x0xi32>) {
  // expected-error @+1 {{'moe.dispatch' op ids must have a non-empty ids-per-token dimension (dim 1), got 'tensor<?x0xi32>'}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x0xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_counts_length(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op counts dim 0 is 4, expected 8 (one count per expert)}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<4xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_offsets_length(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op offsets dim 0 is 8, expected 9 (experts + 1 offsets)}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<8xi32>, tensor<8xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_sorted_slots_static_tokens(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op sorted_slots has 6 entries, expected tokens * k = 8}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<6xi32>, tensor<8xi32>
  return
}

// -----

func.func @dispatch_slot_positions_static_tokens(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op slot_positions has 10 entries, expected tokens * k = 8}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<10xi32>
  return
}

// -----

func.func @dispatch_sorted_slots_not_multiple_of_k(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op sorted_slots has 5 entries, not a multiple of k = 2}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<5xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_slot_positions_not_multiple_of_k(%ids: tensor<?x4xi32>) {
  // expected-error @+1 {{'moe.dispatch' op slot_positions has 6 entries, not a multiple of k = 4}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x4xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<6xi32>
  return
}

// -----

func.func @dispatch_i64_counts(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op result #0 must be 1D tensor of 32-bit signless integer values, but got 'tensor<8xi64>'}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<8xi64>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_rank2_slots(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op result #2 must be 1D tensor of 32-bit signless integer values, but got 'tensor<?x2xi32>'}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?x2xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_rank1_ids(%ids: tensor<?xi32>) {
  // expected-error @+1 {{'moe.dispatch' op operand #0 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?xi32>'}}
  %c, %o, %ss, %sp = moe.dispatch %ids experts 8
      : tensor<?xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.capture
//===----------------------------------------------------------------------===//

func.func @capture_zero_experts(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi32>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op attribute 'experts' = 0 must be in [1, 2147483647] (the i32 id limit)}}
  %c = moe.capture %ids into %buf[%layer] experts 0 : tensor<?x2xi32> into tensor<?x4x2xi32>
  return
}

// -----

func.func @capture_too_many_experts(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi32>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op attribute 'experts' = 2147483648 must be in [1, 2147483647] (the i32 id limit)}}
  %c = moe.capture %ids into %buf[%layer] experts 2147483648 : tensor<?x2xi32> into tensor<?x4x2xi32>
  return
}

// -----

func.func @capture_dynamic_k(%ids: tensor<?x?xi32>, %buf: tensor<?x4x2xi32>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op ids must have a static ids-per-token dimension (dim 1), got 'tensor<?x?xi32>'}}
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x?xi32> into tensor<?x4x2xi32>
  return
}

// -----

func.func @capture_empty_k(%ids: tensor<?x0xi32>, %buf: tensor<?x4x0xi32>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op ids must have a non-empty ids-per-token dimension (dim 1), got 'tensor<?x0xi32>'}}
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x0xi32> into tensor<?x4x0xi32>
  return
}

// -----

func.func @capture_token_mismatch(%ids: tensor<4x2xi32>, %buf: tensor<3x4x2xi16>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op token dimension of buffer (3) must match ids (4)}}
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<4x2xi32> into tensor<3x4x2xi16>
  return
}

// -----

func.func @capture_buffer_k(%ids: tensor<?x2xi32>, %buf: tensor<?x4x4xi16>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op buffer dim 2 is 4, expected 2 (layout [tokens, layers, k])}}
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x4x4xi16>
  return
}

// -----

func.func @capture_i16_too_many_experts(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi16>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op buffer of i16 cannot hold the ids of 32768 experts (i16 needs experts <= 32767; use i32)}}
  %c = moe.capture %ids into %buf[%layer] experts 32768 : tensor<?x2xi32> into tensor<?x4x2xi16>
  return
}

// -----

func.func @capture_i8_buffer(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi8>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op operand #1 must be 3D tensor of 16-bit signless integer or 32-bit signless integer values, but got 'tensor<?x4x2xi8>'}}
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x4x2xi8>
  return
}

// -----

func.func @capture_rank2_buffer(%ids: tensor<?x2xi32>, %buf: tensor<?x2xi32>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op operand #1 must be 3D tensor of 16-bit signless integer or 32-bit signless integer values, but got 'tensor<?x2xi32>'}}
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x2xi32>
  return
}

// -----

func.func @capture_i32_layer(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi32>, %layer: i32) {
  // expected-error @+1 {{'moe.capture' op operand #2 must be index, but got 'i32'}}
  %c = "moe.capture"(%ids, %buf, %layer) <{experts = 8 : i64}> : (tensor<?x2xi32>, tensor<?x4x2xi32>, i32) -> tensor<?x4x2xi32>
  return
}

// -----

func.func @capture_result_type(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi16>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op failed to verify that all of {buffer, updated} have same type}}
  %c = "moe.capture"(%ids, %buf, %layer) <{experts = 8 : i64}> : (tensor<?x2xi32>, tensor<?x4x2xi16>, index) -> tensor<?x4x2xi32>
  return
}

// -----

func.func @gather_ids_weights_tokens(%s: tensor<?x8xf32>, %ids: tensor<3x2xi32>) {
  // expected-error @+1 {{'moe.gather' op token dimension of weights (4) must match ids (3)}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<3x2xi32> -> tensor<4x2xf32>
  return
}

// -----

func.func @dispatch_slot_lengths_differ(%ids: tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op slot_positions has 6 entries, sorted_slots 4 (both hold one entry per slot)}}
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4xi32>, tensor<6xi32>
  return
}

// -----

func.func @hash_table_without_rows(%tok: tensor<?xi32>, %table: tensor<0x6xi32>) {
  // expected-error @+1 {{'moe.hash_select' op table has no rows: every token id would be outside it}}
  %ids = moe.hash_select %tok, %table experts 256 : tensor<?xi32>, tensor<0x6xi32> -> tensor<?x6xi32>
  return
}

// -----

func.func @capture_without_layers(%ids: tensor<?x8xi32>, %cap: tensor<?x0x8xi16>, %layer: index) {
  // expected-error @+1 {{'moe.capture' op buffer has no layers: every layer index would be outside it}}
  %c = moe.capture %ids into %cap[%layer] experts 256 : tensor<?x8xi32> into tensor<?x0x8xi16>
  return
}

// -----

func.func @gather_ids_from_wider_topk(%keys: tensor<?x16xf32>, %s: tensor<?x8xf32>) {
  %ids = moe.topk %keys k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  // expected-error @+1 {{'moe.gather' op ids select among 16 experts (from 'moe.topk'), but scores has 8}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @gather_forced_ids_wrong_experts(%f: tensor<?x2xi32>, %s: tensor<?x8xf32>) {
  %ids = moe.forced_select %f experts 1000 : tensor<?x2xi32> -> tensor<?x2xi32>
  // expected-error @+1 {{'moe.gather' op ids select among 1000 experts (from 'moe.forced_select'), but scores has 8}}
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @dispatch_hash_ids_wrong_experts(%tok: tensor<?xi32>, %table: tensor<?x2xi32>) {
  %ids = moe.hash_select %tok, %table experts 16 : tensor<?xi32>, tensor<?x2xi32> -> tensor<?x2xi32>
  // expected-error @+1 {{'moe.dispatch' op ids select among 16 experts (from 'moe.hash_select'), but 'experts' is 8}}
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @capture_ids_wrong_experts(%keys: tensor<?x16xf32>, %cap: tensor<?x?x2xi16>, %layer: index) {
  %ids = moe.topk %keys k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  // expected-error @+1 {{'moe.capture' op ids select among 16 experts (from 'moe.topk'), but 'experts' is 256}}
  %c = moe.capture %ids into %cap[%layer] experts 256 : tensor<?x2xi32> into tensor<?x?x2xi16>
  return
}

// -----

func.func @dispatch_slots_overflow_i32(%ids: tensor<4611686018427387904x8xi32>) {
  // expected-error @+1 {{'moe.dispatch' op ids has 4611686018427387904 x 8 slots, more than slot indices (i32) can address}}
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<4611686018427387904x8xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @dispatch_slots_just_over_i32(%ids: tensor<1073741824x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op ids has 1073741824 x 2 slots, more than slot indices (i32) can address}}
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<1073741824x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return
}

// -----

// expected-error @+1 {{attribute 'moe.entry' must be one of "route", "route_hash", "replay", "dispatch", "permute", "combine", "update_bias", got "reroute"}}
func.func @bad_entry_kind() attributes {moe.entry = "reroute"} {
  return
}

// -----

// expected-error @+1 {{attribute 'moe.entry' must be one of "route", "route_hash", "replay", "dispatch", "permute", "combine", "update_bias", got 5 : i64}}
func.func @entry_not_a_string() attributes {moe.entry = 5} {
  return
}

// -----

// expected-error @+1 {{unknown moe dialect attribute 'moe.bogus' (known: 'moe.entry', 'moe.kernel_config', 'moe.launch', 'moe.fused_dispatch_max_slots', 'moe.split_from')}}
func.func @unknown_moe_attribute() attributes {moe.bogus} {
  return
}

// -----

// expected-error @+1 {{attribute 'moe.split_from' must be a string on a module (the gpu.module split from), got 3 : i64}}
module attributes {moe.split_from = 3} {
}

// -----

// expected-error @+1 {{attribute 'moe.split_from' must be a string on a module (the gpu.module split from), got "kernels"}}
func.func @split_from_on_a_function() attributes {moe.split_from = "kernels"} {
  return
}

// -----

// expected-error @+1 {{attribute 'moe.entry' belongs on a function}}
module attributes {moe.entry = "route"} {
}

// -----

// expected-error @+1 {{attribute 'moe.kernel_config' must be a #moe.kernel_config, got 8 : i64}}
func.func @config_untyped() attributes {moe.entry = "route", moe.kernel_config = 8} {
  return
}

// -----

// expected-error @+2 {{expected ::mlir::moe::KernelTarget to be one of: cpu, nvptx}}
// expected-error @+1 {{failed to parse MoE_KernelConfigAttr parameter 'target'}}
func.func @config_unknown_target() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = tpu, vector_width = 8, tokens_per_task = 64, topk = insertion>} {
  return
}

// -----

// expected-error @+1 {{expected ','}}
func.func @config_no_tokens_per_task() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, topk = insertion>} {
  return
}

// -----

// expected-error @+1 {{#moe.kernel_config: vector_width = 6 must be a power of two up to 64}}
func.func @config_width_not_power_of_two() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 6, tokens_per_task = 64, topk = insertion>} {
  return
}

// -----

// expected-error @+1 {{#moe.kernel_config: tokens_per_task = 0 must be positive}}
func.func @config_no_tokens() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 0, topk = insertion>} {
  return
}

// -----

// expected-error @+1 {{expected '>'}}
func.func @config_unknown_key() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = insertion, threads = 4>} {
  return
}

// -----

// expected-error @+1 {{attribute 'moe.kernel_config' belongs on a function with 'moe.entry'}}
func.func @config_without_entry() attributes {moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = insertion>} {
  return
}

// -----

// expected-error @+2 {{expected ::mlir::moe::TopKMethod to be one of: argmax_passes, insertion}}
// expected-error @+1 {{failed to parse MoE_KernelConfigAttr parameter 'topk'}}
func.func @config_unknown_topk() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = heap>} {
  return
}

// -----

// expected-error @+1 {{#moe.launch: block_dim = 0 must be in [1, 1024]}}
func.func @launch_empty_block() attributes {moe.launch = #moe.launch<block_dim = 0, tokens_per_block = 1, dynamic_shared_memory_bytes = 0>} {
  return
}

// -----

// expected-error @+1 {{attribute 'moe.launch' must be a #moe.launch, got {block_dim = 32 : i64}}}
func.func @launch_untyped() attributes {moe.launch = {block_dim = 32}} {
  return
}

// -----

// expected-error @+1 {{#moe.kernel_arg 'ids': shape entry "N" must be an extent or one of "T", "V", "L", "T*k"}}
func.func @kernel_arg_unknown_symbol(%ids: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "ids", role = tensor, dtype = i32, shape = ["N"], access = read>}) {
  return
}

// -----

// expected-error @+1 {{#moe.kernel_arg 'layer': a scalar argument has no shape}}
func.func @kernel_arg_shaped_scalar(%layer: index {moe.kernel_arg = #moe.kernel_arg<name = "layer", role = scalar, dtype = i64, shape = [2], access = read>}) {
  return
}

// -----

// expected-error @+1 {{argument #0: attribute 'moe.kernel_arg' #moe.kernel_arg<name = "ids", role = tensor, dtype = i32, shape = ["T"], access = read> does not describe 'memref<?x2xi32>'}}
func.func @kernel_arg_wrong_rank(%ids: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "ids", role = tensor, dtype = i32, shape = ["T"], access = read>}) {
  return
}

// -----

// expected-error @+1 {{argument #0: attribute 'moe.kernel_arg' dimension 0 (64 : i64) does not describe 'memref<?x2xi32>'}}
func.func @kernel_arg_static_for_dynamic(%ids: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "ids", role = tensor, dtype = i32, shape = [64, 2], access = read>}) {
  return
}

// -----

// expected-error @+1 {{argument #0: attribute 'moe.kernel_bogus' is not a moe argument attribute (known: 'moe.kernel_arg', 'moe.kernel_size')}}
func.func @kernel_arg_unknown(%ids: memref<?x2xi32> {moe.kernel_bogus = 1}) {
  return
}

// -----

func.func @permute_converts(%h: tensor<?x?xbf16>, %s: tensor<?xi32>) -> tensor<?x?xf32> {
  // expected-error @+1 {{'moe.permute' op permuted element type 'f32' must match hidden ('bf16'): rows are moved, not converted}}
  %p = moe.permute %h[%s] k 2 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xf32>
  return %p : tensor<?x?xf32>
}

// -----

func.func @permute_hidden_size(%h: tensor<?x64xbf16>, %s: tensor<?xi32>) -> tensor<?x32xbf16> {
  // expected-error @+1 {{'moe.permute' op hidden size of permuted (32) must match hidden (64)}}
  %p = moe.permute %h[%s] k 2 : tensor<?x64xbf16>, tensor<?xi32> -> tensor<?x32xbf16>
  return %p : tensor<?x32xbf16>
}

// -----

func.func @permute_k(%h: tensor<?x?xbf16>, %s: tensor<?xi32>) -> tensor<?x?xbf16> {
  // expected-error @+1 {{'moe.permute' op attribute 'k' = 0 must be in [1, 2147483647] (the i32 slot limit)}}
  %p = moe.permute %h[%s] k 0 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  return %p : tensor<?x?xbf16>
}

// -----

func.func @permute_slots(%h: tensor<4x?xf16>, %s: tensor<7xi32>) -> tensor<?x?xf16> {
  // expected-error @+1 {{'moe.permute' op sorted_slots has 7 rows or entries, expected tokens * k = 4 * 2}}
  %p = moe.permute %h[%s] k 2 : tensor<4x?xf16>, tensor<7xi32> -> tensor<?x?xf16>
  return %p : tensor<?x?xf16>
}

// -----

func.func @permute_rows(%h: tensor<?x?xf32>, %s: tensor<8xi32>) -> tensor<6x?xf32> {
  // expected-error @+1 {{'moe.permute' op permuted has 6 rows, sorted_slots 8 entries (one row per slot)}}
  %p = moe.permute %h[%s] k 2 : tensor<?x?xf32>, tensor<8xi32> -> tensor<6x?xf32>
  return %p : tensor<6x?xf32>
}

// -----

func.func @combine_dynamic_k(%o: tensor<?x?xbf16>, %pos: tensor<?xi32>, %w: tensor<?x?xf32>) -> tensor<?x?xbf16> {
  // expected-error @+1 {{'moe.combine' op weights must have a static ids-per-token dimension (dim 1), got 'tensor<?x?xf32>'}}
  %c = moe.combine %o[%pos] weights %w : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x?xf32> -> tensor<?x?xbf16>
  return %c : tensor<?x?xbf16>
}

// -----

func.func @combine_converts(%o: tensor<?x?xbf16>, %pos: tensor<?xi32>, %w: tensor<?x2xf32>) -> tensor<?x?xf16> {
  // expected-error @+1 {{'moe.combine' op combined element type 'f16' must match expert_output ('bf16'): rows are moved, not converted}}
  %c = moe.combine %o[%pos] weights %w : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x?xf16>
  return %c : tensor<?x?xf16>
}

// -----

func.func @combine_tokens(%o: tensor<?x?xbf16>, %pos: tensor<?xi32>, %w: tensor<3x2xf32>) -> tensor<4x?xbf16> {
  // expected-error @+1 {{'moe.combine' op token dimension of combined (4) must match weights (3)}}
  %c = moe.combine %o[%pos] weights %w : tensor<?x?xbf16>, tensor<?xi32>, tensor<3x2xf32> -> tensor<4x?xbf16>
  return %c : tensor<4x?xbf16>
}

// -----

func.func @combine_positions(%o: tensor<?x?xbf16>, %pos: tensor<5xi32>, %w: tensor<3x2xf32>) -> tensor<3x?xbf16> {
  // expected-error @+1 {{'moe.combine' op slot_positions has 5 rows or entries, expected tokens * k = 3 * 2}}
  %c = moe.combine %o[%pos] weights %w : tensor<?x?xbf16>, tensor<5xi32>, tensor<3x2xf32> -> tensor<3x?xbf16>
  return %c : tensor<3x?xbf16>
}

// -----

func.func @combine_rows(%o: tensor<7x?xbf16>, %pos: tensor<6xi32>, %w: tensor<?x2xf32>) -> tensor<?x?xbf16> {
  // expected-error @+1 {{'moe.combine' op expert_output has 7 rows, slot_positions 6 entries (one row per slot)}}
  %c = moe.combine %o[%pos] weights %w : tensor<7x?xbf16>, tensor<6xi32>, tensor<?x2xf32> -> tensor<?x?xbf16>
  return %c : tensor<?x?xbf16>
}

// -----

func.func @score_temperature(%l: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.score' op attribute 'temperature' = 0 must be a normal f32 value > 0, in [1.1754944e-38, 3.4028234e38]}}
  %s = moe.score softmax %l temperature 0.0 : tensor<?x8xf32> -> tensor<?x8xf32>
  return %s : tensor<?x8xf32>
}

// -----

func.func @score_softcap(%l: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.score' op attribute 'softcap' = -1 must be a normal f32 value > 0, in [1.1754944e-38, 3.4028234e38]}}
  %s = moe.score softmax %l softcap -1.0 : tensor<?x8xf32> -> tensor<?x8xf32>
  return %s : tensor<?x8xf32>
}
