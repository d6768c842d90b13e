// Round trip of every moe op and variant through the custom assembly format
// and through the generic form. The verifier rules are exercised in
// invalid.mlir; the folders in canonicalize.mlir.

//===----------------------------------------------------------------------===//
// moe.score
//===----------------------------------------------------------------------===//

func.func @score_softmax_f32(%logits: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %s = moe.score softmax %logits : tensor<4x8xf32> -> tensor<4x8xf32>
  return %s : tensor<4x8xf32>
}

func.func @score_sigmoid_bf16(%logits: tensor<?x256xbf16>) -> tensor<?x256xf32> {
  %s = moe.score sigmoid %logits : tensor<?x256xbf16> -> tensor<?x256xf32>
  return %s : tensor<?x256xf32>
}

func.func @score_sqrtsoftplus_f16(%logits: tensor<?x64xf16>) -> tensor<?x64xf32> {
  %s = moe.score sqrtsoftplus %logits : tensor<?x64xf16> -> tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

func.func @score_softmax_bf16_static(%logits: tensor<16x128xbf16>) -> tensor<16x128xf32> {
  %s = moe.score softmax %logits : tensor<16x128xbf16> -> tensor<16x128xf32>
  return %s : tensor<16x128xf32>
}

func.func @score_sigmoid_f16_static(%logits: tensor<3x8xf16>) -> tensor<3x8xf32> {
  %s = moe.score sigmoid %logits : tensor<3x8xf16> -> tensor<3x8xf32>
  return %s : tensor<3x8xf32>
}

func.func @score_sqrtsoftplus_f32(%logits: tensor<?x256xf32>) -> tensor<?x256xf32> {
  %s = moe.score sqrtsoftplus %logits : tensor<?x256xf32> -> tensor<?x256xf32>
  return %s : tensor<?x256xf32>
}

// A dynamic token dimension is compatible with a static one, either way.
func.func @score_mixed_token_dims(%l0: tensor<?x8xf32>, %l1: tensor<4x8xbf16>)
    -> (tensor<4x8xf32>, tensor<?x8xf32>) {
  %s0 = moe.score softmax %l0 : tensor<?x8xf32> -> tensor<4x8xf32>
  %s1 = moe.score softmax %l1 : tensor<4x8xbf16> -> tensor<?x8xf32>
  return %s0, %s1 : tensor<4x8xf32>, tensor<?x8xf32>
}

//===----------------------------------------------------------------------===//
// moe.add_bias
//===----------------------------------------------------------------------===//

func.func @add_bias_dynamic_tokens(%s: tensor<?x256xf32>, %bias: tensor<256xf32>) -> tensor<?x256xf32> {
  %keys = moe.add_bias %s, %bias : tensor<?x256xf32>, tensor<256xf32>
  return %keys : tensor<?x256xf32>
}

func.func @add_bias_static_tokens(%s: tensor<4x8xf32>, %bias: tensor<8xf32>) -> tensor<4x8xf32> {
  %keys = moe.add_bias %s, %bias : tensor<4x8xf32>, tensor<8xf32>
  return %keys : tensor<4x8xf32>
}

// A bias of unknown length is accepted; its length is checked at run time.
func.func @add_bias_dynamic_bias(%s: tensor<?x8xf32>, %bias: tensor<?xf32>) -> tensor<?x8xf32> {
  %keys = moe.add_bias %s, %bias : tensor<?x8xf32>, tensor<?xf32>
  return %keys : tensor<?x8xf32>
}

//===----------------------------------------------------------------------===//
// moe.group_mask
//===----------------------------------------------------------------------===//

func.func @group_mask_top2_sum(%keys: tensor<?x256xf32>) -> tensor<?x256xf32> {
  %m = moe.group_mask %keys groups 8 keep 4 by top2_sum : tensor<?x256xf32>
  return %m : tensor<?x256xf32>
}

func.func @group_mask_max(%keys: tensor<4x64xf32>) -> tensor<4x64xf32> {
  %m = moe.group_mask %keys groups 8 keep 3 by max : tensor<4x64xf32>
  return %m : tensor<4x64xf32>
}

// Edge cases the verifier accepts: one expert per group (max only), all
// groups kept, two experts per group (the minimum for top2_sum), one group.
func.func @group_mask_edges(%keys: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %m0 = moe.group_mask %keys groups 8 keep 1 by max : tensor<?x8xf32>
  %m1 = moe.group_mask %m0 groups 4 keep 4 by top2_sum : tensor<?x8xf32>
  %m2 = moe.group_mask %m1 groups 1 keep 1 by top2_sum : tensor<?x8xf32>
  return %m2 : tensor<?x8xf32>
}

//===----------------------------------------------------------------------===//
// moe.topk
//===----------------------------------------------------------------------===//

func.func @topk_dynamic_tokens(%keys: tensor<?x256xf32>) -> tensor<?x8xi32> {
  %ids = moe.topk %keys k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

func.func @topk_static_tokens(%keys: tensor<4x8xf32>) -> tensor<4x2xi32> {
  %ids = moe.topk %keys k 2 : tensor<4x8xf32> -> tensor<4x2xi32>
  return %ids : tensor<4x2xi32>
}

// k may be as large as the number of experts, and k = 1 is allowed.
func.func @topk_edges(%keys: tensor<?x8xf32>) -> (tensor<?x8xi32>, tensor<?x1xi32>) {
  %all = moe.topk %keys k 8 : tensor<?x8xf32> -> tensor<?x8xi32>
  %one = moe.topk %keys k 1 : tensor<?x8xf32> -> tensor<?x1xi32>
  return %all, %one : tensor<?x8xi32>, tensor<?x1xi32>
}

//===----------------------------------------------------------------------===//
// moe.hash_select
//===----------------------------------------------------------------------===//

func.func @hash_select_i32_token_ids(%tok: tensor<?xi32>, %table: tensor<?x6xi32>) -> tensor<?x6xi32> {
  %ids = moe.hash_select %tok, %table experts 256 : tensor<?xi32>, tensor<?x6xi32> -> tensor<?x6xi32>
  return %ids : tensor<?x6xi32>
}

func.func @hash_select_i64_token_ids(%tok: tensor<?xi64>, %table: tensor<129280x6xi32>) -> tensor<?x6xi32> {
  %ids = moe.hash_select %tok, %table experts 256 : tensor<?xi64>, tensor<129280x6xi32> -> tensor<?x6xi32>
  return %ids : tensor<?x6xi32>
}

// Static tokens; k equal to the number of experts is allowed.
func.func @hash_select_static_tokens(%tok: tensor<5xi64>, %table: tensor<100x4xi32>) -> tensor<5x4xi32> {
  %ids = moe.hash_select %tok, %table experts 4 : tensor<5xi64>, tensor<100x4xi32> -> tensor<5x4xi32>
  return %ids : tensor<5x4xi32>
}

//===----------------------------------------------------------------------===//
// moe.forced_select
//===----------------------------------------------------------------------===//

func.func @forced_select_i32(%forced: tensor<?x8xi32>) -> tensor<?x8xi32> {
  %ids = moe.forced_select %forced experts 256 : tensor<?x8xi32> -> tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

func.func @forced_select_i64(%forced: tensor<?x8xi64>) -> tensor<?x8xi32> {
  %ids = moe.forced_select %forced experts 256 : tensor<?x8xi64> -> tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

func.func @forced_select_static_tokens(%forced: tensor<3x2xi64>) -> tensor<3x2xi32> {
  %ids = moe.forced_select %forced experts 2 : tensor<3x2xi64> -> tensor<3x2xi32>
  return %ids : tensor<3x2xi32>
}

//===----------------------------------------------------------------------===//
// moe.gather
//===----------------------------------------------------------------------===//

func.func @gather_dynamic_tokens(%s: tensor<?x256xf32>, %ids: tensor<?x8xi32>) -> tensor<?x8xf32> {
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  return %w : tensor<?x8xf32>
}

func.func @gather_static_tokens(%s: tensor<4x8xf32>, %ids: tensor<4x2xi32>) -> tensor<4x2xf32> {
  %w = moe.gather %s[%ids] : tensor<4x8xf32>, tensor<4x2xi32> -> tensor<4x2xf32>
  return %w : tensor<4x2xf32>
}

//===----------------------------------------------------------------------===//
// moe.normalize
//===----------------------------------------------------------------------===//

func.func @normalize(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  return %n : tensor<?x8xf32>
}

// An epsilon of zero is allowed.
func.func @normalize_zero_epsilon_static(%w: tensor<4x2xf32>) -> tensor<4x2xf32> {
  %n = moe.normalize %w epsilon 0.0 : tensor<4x2xf32>
  return %n : tensor<4x2xf32>
}

//===----------------------------------------------------------------------===//
// moe.scale
//===----------------------------------------------------------------------===//

func.func @scale(%w: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %ws = moe.scale %w by 2.5 : tensor<?x8xf32>
  return %ws : tensor<?x8xf32>
}

// Without -canonicalize, a factor of 1 is kept as written.
func.func @scale_by_one_static(%w: tensor<4x2xf32>) -> tensor<4x2xf32> {
  %ws = moe.scale %w by 1.0 : tensor<4x2xf32>
  return %ws : tensor<4x2xf32>
}

//===----------------------------------------------------------------------===//
// moe.dispatch
//===----------------------------------------------------------------------===//

func.func @dispatch_dynamic_tokens(%ids: tensor<?x8xi32>)
    -> (tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>) {
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 256
      : tensor<?x8xi32> -> tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>
  return %counts, %offsets, %sorted, %positions
      : tensor<256xi32>, tensor<257xi32>, tensor<?xi32>, tensor<?xi32>
}

// Static tokens: the slot tensors have tokens * k = 8 entries.
func.func @dispatch_static_tokens(%ids: tensor<4x2xi32>)
    -> (tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<8xi32>) {
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 8
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<8xi32>
  return %counts, %offsets, %sorted, %positions
      : tensor<8xi32>, tensor<9xi32>, tensor<8xi32>, tensor<8xi32>
}

// Dynamic tokens with static slot tensors (a multiple of k) and dynamic
// counts and offsets.
func.func @dispatch_mixed_dims(%ids: tensor<?x2xi32>)
    -> (tensor<?xi32>, tensor<?xi32>, tensor<6xi32>, tensor<?xi32>) {
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 8
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<?xi32>, tensor<6xi32>, tensor<?xi32>
  return %counts, %offsets, %sorted, %positions
      : tensor<?xi32>, tensor<?xi32>, tensor<6xi32>, tensor<?xi32>
}

//===----------------------------------------------------------------------===//
// moe.capture
//===----------------------------------------------------------------------===//

func.func @capture_i16(%ids: tensor<?x8xi32>, %buf: tensor<?x?x8xi16>, %layer: index) -> tensor<?x?x8xi16> {
  %cap = moe.capture %ids into %buf[%layer] experts 256 : tensor<?x8xi32> into tensor<?x?x8xi16>
  return %cap : tensor<?x?x8xi16>
}

func.func @capture_i32(%ids: tensor<?x8xi32>, %buf: tensor<?x61x8xi32>, %layer: index) -> tensor<?x61x8xi32> {
  %cap = moe.capture %ids into %buf[%layer] experts 100000 : tensor<?x8xi32> into tensor<?x61x8xi32>
  return %cap : tensor<?x61x8xi32>
}

// Static tokens, a constant layer, and the largest expert count i16 takes.
func.func @capture_static_i16_max_experts(%ids: tensor<4x2xi32>, %buf: tensor<4x3x2xi16>) -> tensor<4x3x2xi16> {
  %layer = arith.constant 1 : index
  %cap = moe.capture %ids into %buf[%layer] experts 32767 : tensor<4x2xi32> into tensor<4x3x2xi16>
  return %cap : tensor<4x3x2xi16>
}

//===----------------------------------------------------------------------===//
// Result names
//===----------------------------------------------------------------------===//

// Results print with their role as name.
func.func @result_names(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>,
                        %forced: tensor<?x2xi64>, %tok: tensor<?xi64>,
                        %table: tensor<?x2xi32>, %buf: tensor<?x4x2xi16>,
                        %layer: index) {
  %0 = moe.score softmax %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %1 = moe.add_bias %0, %bias : tensor<?x8xf32>, tensor<8xf32>
  %2 = moe.group_mask %1 groups 4 keep 2 by top2_sum : tensor<?x8xf32>
  %3 = moe.topk %2 k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %4 = moe.hash_select %tok, %table experts 8 : tensor<?xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  %5 = moe.forced_select %forced experts 8 : tensor<?x2xi64> -> tensor<?x2xi32>
  %6 = moe.gather %0[%3] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %7 = moe.normalize %6 epsilon 0.0 : tensor<?x2xf32>
  %8 = moe.scale %7 by 2.0 : tensor<?x2xf32>
  %9:4 = moe.dispatch %3 experts 8
      : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  %10 = moe.capture %3 into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x4x2xi16>
  return
}

//===----------------------------------------------------------------------===//
// Compositions
//===----------------------------------------------------------------------===//

// Softmax top-k (Mixtral / Qwen3 style).
func.func @softmax_topk_route(%logits: tensor<?x128xbf16>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %s = moe.score softmax %logits : tensor<?x128xbf16> -> tensor<?x128xf32>
  %ids = moe.topk %s k 8 : tensor<?x128xf32> -> tensor<?x8xi32>
  %w = moe.gather %s[%ids] : tensor<?x128xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  return %ids, %n : tensor<?x8xi32>, tensor<?x8xf32>
}

// DeepSeek-V3: sigmoid scores, selection bias, grouped top-k, weights from
// the unbiased scores, routed scaling factor, ids captured for replay.
func.func @deepseek_v3_route(%logits: tensor<?x256xf32>, %bias: tensor<256xf32>,
                             %cap: tensor<?x?x8xi16>, %layer: index)
    -> (tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x?x8xi16>) {
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
func.func @deepseek_v4_hash_route(%logits: tensor<?x256xbf16>, %tok: tensor<?xi64>,
                                  %table: tensor<?x6xi32>) -> (tensor<?x6xi32>, tensor<?x6xf32>) {
  %s = moe.score sqrtsoftplus %logits : tensor<?x256xbf16> -> tensor<?x256xf32>
  %ids = moe.hash_select %tok, %table experts 256 : tensor<?xi64>, tensor<?x6xi32> -> tensor<?x6xi32>
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x6xi32> -> tensor<?x6xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x6xf32>
  %ws = moe.scale %n by 1.5 : tensor<?x6xf32>
  return %ids, %ws : tensor<?x6xi32>, tensor<?x6xf32>
}

// Router replay: forced ids, weights from the live scores, ids captured
// into an i32 buffer.
func.func @replay(%logits: tensor<?x384xf16>, %forced: tensor<?x8xi64>,
                  %cap: tensor<?x61x8xi32>, %layer: index)
    -> (tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x61x8xi32>) {
  %s = moe.score sigmoid %logits : tensor<?x384xf16> -> tensor<?x384xf32>
  %ids = moe.forced_select %forced experts 384 : tensor<?x8xi64> -> tensor<?x8xi32>
  %w = moe.gather %s[%ids] : tensor<?x384xf32>, tensor<?x8xi32> -> tensor<?x8xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x8xf32>
  %ws = moe.scale %n by 2.827 : tensor<?x8xf32>
  %cap1 = moe.capture %ids into %cap[%layer] experts 384 : tensor<?x8xi32> into tensor<?x61x8xi32>
  return %ids, %ws, %cap1 : tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x61x8xi32>
}

// Route then dispatch, static tokens, in one function.
func.func @route_and_dispatch(%logits: tensor<16x64xf32>)
    -> (tensor<16x4xf32>, tensor<64xi32>, tensor<65xi32>, tensor<64xi32>, tensor<64xi32>) {
  %s = moe.score softmax %logits : tensor<16x64xf32> -> tensor<16x64xf32>
  %m = moe.group_mask %s groups 16 keep 2 by max : tensor<16x64xf32>
  %ids = moe.topk %m k 4 : tensor<16x64xf32> -> tensor<16x4xi32>
  %w = moe.gather %s[%ids] : tensor<16x64xf32>, tensor<16x4xi32> -> tensor<16x4xf32>
  %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 64
      : tensor<16x4xi32> -> tensor<64xi32>, tensor<65xi32>, tensor<64xi32>, tensor<64xi32>
  return %w, %counts, %offsets, %sorted, %positions
      : tensor<16x4xf32>, tensor<64xi32>, tensor<65xi32>, tensor<64xi32>, tensor<64xi32>
}
