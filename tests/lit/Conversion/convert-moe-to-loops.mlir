// RUN: moegen-opt %s -split-input-file -convert-moe-to-loops -canonicalize -verify-diagnostics | FileCheck %s

// The kernel ABI: inputs as memrefs, the capture buffer updated in place (no
// output for it), outputs for ids and weights, the error record, then the
// token range driving a single fused loop.
// CHECK-LABEL: func.func @route(
// CHECK-SAME: %[[LOGITS:arg[0-9]+]]: memref<?x64xf32> {{{[^}]*}}}, %[[BIAS:arg[0-9]+]]: memref<64xf32> {{{[^}]*}}}, %[[CAP:arg[0-9]+]]: memref<?x?x4xi16> {{{[^}]*}}}, %[[LAYER:arg[0-9]+]]: index {{{[^}]*}}},
// CHECK-SAME: %[[IDS:arg[0-9]+]]: memref<?x4xi32> {{{[^}]*}}}, %[[W:arg[0-9]+]]: memref<?x4xf32> {{{[^}]*}}}, %[[ERR:arg[0-9]+]]: memref<5xi64> {{{[^}]*}}}, %[[T0:arg[0-9]+]]: index {{{[^}]*}}}, %[[T1:arg[0-9]+]]: index {{{[^}]*}}})
// CHECK-SAME: llvm.emit_c_interface
// CHECK-SAME: moe.entry = "route"
// Rows of intermediate values live on the stack, allocated once.
// CHECK: memref.alloca() : memref<64xf32>
// CHECK: scf.for %[[T:.*]] = %[[T0]] to %[[T1]]
// Softmax: max, then exp and sum, then divide, 8 lanes at a time.
// CHECK: vector.load %[[LOGITS]][%[[T]], %{{.*}}] : memref<?x64xf32>, vector<8xf32>
// CHECK: arith.maximumf {{.*}} : vector<8xf32>
// CHECK: vector.reduction <maximumf>
// CHECK: math.exp {{.*}} : vector<8xf32>
// CHECK: vector.reduction <add>
// CHECK: arith.divf {{.*}} : vector<8xf32>
// Bias on the keys only.
// CHECK: vector.load %[[BIAS]]
// Group scores (top-2 sums), the kept groups, then -inf elsewhere.
// CHECK: arith.cmpf ogt
// CHECK: vector.reduction <minsi>
// CHECK: arith.select {{.*}}, %cst{{.*}} : f32
// Top-k: arg-max passes, ties to the lower id, an out-of-range pick -> 0.
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: arith.cmpi ult
// Capture: layer checked against the buffer, ids narrowed to i16.
// CHECK: memref.dim %[[CAP]], %c1
// CHECK: arith.cmpi ult, %[[LAYER]]
// CHECK: arith.trunci {{.*}} : i32 to i16
// CHECK: memref.store {{.*}}, %[[CAP]][%[[T]], %[[LAYER]], %{{.*}}]
// Results copied to the outputs' row t.
// CHECK: memref.store {{.*}}, %[[IDS]][%[[T]], %{{.*}}]
// CHECK: memref.store {{.*}}, %[[W]][%[[T]], %{{.*}}]
func.func @route(%logits: tensor<?x64xf32>, %bias: tensor<64xf32>, %cap: tensor<?x?x4xi16>, %layer: index) -> (tensor<?x4xi32>, tensor<?x4xf32>, tensor<?x?x4xi16>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x64xf32>, tensor<64xf32>
  %masked = moe.group_mask %keys groups 8 keep 2 by top2_sum : tensor<?x64xf32>
  %ids = moe.topk %masked k 4 : tensor<?x64xf32> -> tensor<?x4xi32>
  %w = moe.gather %s[%ids] : tensor<?x64xf32>, tensor<?x4xi32> -> tensor<?x4xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x4xf32>
  %sc = moe.scale %n by 2.5 : tensor<?x4xf32>
  %cap1 = moe.capture %ids into %cap[%layer] experts 64 : tensor<?x4xi32> into tensor<?x?x4xi16>
  return %ids, %sc, %cap1 : tensor<?x4xi32>, tensor<?x4xf32>, tensor<?x?x4xi16>
}

// -----

// 60 f16 experts with 8 lanes: 7 full chunks and a masked tail of 4 that
// never reads past the row. Forced ids are range-checked (unsigned compare)
// and replaced by 0 before the gather uses them.
// CHECK-LABEL: func.func @replay(
// CHECK-SAME: memref<?x60xf16> {{{[^}]*}}}, %[[FORCED:arg[0-9]+]]: memref<?x2xi64> {{{[^}]*}}}, %{{.*}}: memref<?x2xi32> {{{[^}]*}}}, %{{.*}}: memref<?x2xf32> {{{[^}]*}}}, %[[ERR:arg[0-9]+]]: memref<5xi64> {{{[^}]*}}}, %{{.*}}: index {{{[^}]*}}}, %{{.*}}: index {{{[^}]*}}})
// CHECK: scf.for
// CHECK: scf.for %{{.*}} = %c0 to %c56 step %c8
// CHECK: arith.extf {{.*}} : vector<8xf16> to vector<8xf32>
// CHECK: math.log1p
// CHECK: math.sqrt
// CHECK: vector.constant_mask [4] : vector<8xi1>
// CHECK: vector.maskedload
// CHECK: %[[ID:.*]] = memref.load %[[FORCED]]
// CHECK: %[[BAD:.*]] = arith.cmpi uge, %[[ID]], %c60_i64
// CHECK: scf.if %[[BAD]]
// CHECK: memref.store %c5_i64, %[[ERR]][%c0]
// Repeats: compared with the earlier ids of the token.
// CHECK: %[[EARLIER:.*]] = memref.load %[[FORCED]]
// CHECK: arith.cmpi eq, %[[EARLIER]], %[[ID]]
// CHECK: memref.store %c6_i64, %[[ERR]][%c0]
// CHECK: %[[OK:.*]] = arith.cmpi ult, %[[ID]], %c60_i64
// CHECK: arith.select %[[OK]], %[[ID]], %c0_i64
func.func @replay(%logits: tensor<?x60xf16>, %forced: tensor<?x2xi64>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "replay", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sqrtsoftplus %logits : tensor<?x60xf16> -> tensor<?x60xf32>
  %ids = moe.forced_select %forced experts 60 : tensor<?x2xi64> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x60xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// The token id is checked against the table's rows before the table is read.
// CHECK-LABEL: func.func @route_hash(
// CHECK-SAME: %[[TOK:arg[0-9]+]]: memref<?xi32> {{{[^}]*}}}, %[[TABLE:arg[0-9]+]]: memref<?x2xi32> {{{[^}]*}}}
// CHECK: scf.for %[[T:arg[0-9]+]] = %arg6 to %arg7
// CHECK: %[[TID:.*]] = memref.load %[[TOK]][%[[T]]]
// CHECK: %[[TID64:.*]] = arith.extsi %[[TID]]
// CHECK: %[[VOCAB:.*]] = memref.dim %[[TABLE]], %c0
// CHECK: %[[VOCAB64:.*]] = arith.index_cast %[[VOCAB]]
// CHECK: %[[KNOWN:.*]] = arith.cmpi ult, %[[TID64]], %[[VOCAB64]] : i64
// CHECK: scf.if %[[KNOWN]] {
// CHECK: memref.load %[[TABLE]]
// CHECK: } else {
// CHECK: memref.store %c2_i64
func.func @route_hash(%logits: tensor<?x8xf32>, %tok: tensor<?xi32>, %table: tensor<?x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route_hash", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.hash_select %tok, %table experts 8 : tensor<?xi32>, tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Dispatch spans tokens: no token range; a counting sort whose counts double
// as the buckets' fill levels (no scratch memory).
// CHECK-LABEL: func.func @dispatch(
// CHECK-SAME: %[[IDS:arg[0-9]+]]: memref<?x2xi32> {{{[^}]*}}}, %[[COUNTS:arg[0-9]+]]: memref<16xi32> {{{[^}]*}}}, %[[OFFSETS:arg[0-9]+]]: memref<17xi32> {{{[^}]*}}}, %[[SORTED:arg[0-9]+]]: memref<?xi32> {{{[^}]*}}}, %[[POS:arg[0-9]+]]: memref<?xi32> {{{[^}]*}}}, %[[ERR:arg[0-9]+]]: memref<5xi64> {{{[^}]*}}})
// CHECK-NOT: index)
// CHECK-NOT: memref.alloc
// CHECK: memref.store %{{.*}}, %[[SORTED]]
// CHECK: memref.store %{{.*}}, %[[POS]]
// CHECK-NOT: memref.dealloc
func.func @dispatch(%ids: tensor<?x2xi32>) -> (tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>) attributes {moe.entry = "dispatch", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %c, %o, %s, %p = moe.dispatch %ids experts 16 : tensor<?x2xi32> -> tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>
  return %c, %o, %s, %p : tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>
}

// -----

// A vector width of 1 is a scalar schedule.
// CHECK-LABEL: func.func @scalar(
// CHECK: vector.load {{.*}} : memref<?x3xf32>, vector<1xf32>
// CHECK-NOT: vector.constant_mask
func.func @scalar(%logits: tensor<?x3xf32>) -> (tensor<?x1xi32>, tensor<?x1xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 1, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x3xf32> -> tensor<?x3xf32>
  %ids = moe.topk %s k 1 : tensor<?x3xf32> -> tensor<?x1xi32>
  %w = moe.gather %s[%ids] : tensor<?x3xf32>, tensor<?x1xi32> -> tensor<?x1xf32>
  return %ids, %w : tensor<?x1xi32>, tensor<?x1xf32>
}

// -----

// topk = "insertion": the first k experts fill a sorted list, then a chunk
// is looked at lane by lane only when a key beats the k-th kept key.
// CHECK-LABEL: func.func @insertion_topk(
// CHECK: memref.alloca() : memref<8xf32>
// CHECK: memref.alloca() : memref<8xi32>
// CHECK: scf.for
// CHECK: %[[KTH:.*]] = memref.load %{{.*}}[%c1] : memref<8xf32>
// CHECK: scf.for {{.*}} iter_args(%[[THR:.*]] = %[[KTH]]) -> (f32)
// CHECK: %[[GT:.*]] = arith.cmpf ogt, %{{.*}}, %{{.*}} : vector<8xf32>
// CHECK: %[[ANY:.*]] = vector.reduction <or>
// CHECK: scf.if %[[ANY]] -> (f32)
// CHECK: memref.load %{{.*}}[%c1] : memref<8xf32>
// CHECK: scf.yield
// CHECK: } else {
// CHECK: scf.yield %[[THR]] : f32
func.func @insertion_topk(%logits: tensor<?x64xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = insertion>} {
  %s = moe.score softmax %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %ids = moe.topk %s k 2 : tensor<?x64xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x64xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// expected-error @+1 {{'func.func' op needs 'moe.kernel_config' to be lowered: run -moe-kernel-config first}}
func.func @unconfigured(%logits: tensor<?x8xf32>) -> tensor<?x2xi32> attributes {moe.entry = "route"} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  return %ids : tensor<?x2xi32>
}

// -----

func.func @dispatch_not_alone(%logits: tensor<?x8xf32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  // expected-error @+1 {{'moe.dispatch' op spans tokens and must be alone in its entry point, its results returned in order}}
  %c, %o, %so, %p = moe.dispatch %ids experts 8 : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return %c, %o, %so, %p : tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
}

// -----

// expected-error @+1 {{'func.func' op returns an argument unchanged; entry results must be computed by moe ops}}
func.func @passthrough(%ids: tensor<?x2xi32>) -> tensor<?x2xi32> attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  return %ids : tensor<?x2xi32>
}

// -----

// A bias of 12 experts with 8 lanes: its tail is a masked load like any
// argument row's, never a full vector read past the caller's buffer.
// CHECK-LABEL: func.func @bias_tail(
// CHECK-SAME: %{{.*}}: memref<?x12xf32> {{{[^}]*}}}, %[[BIAS:arg[0-9]+]]: memref<12xf32> {{{[^}]*}}}
// CHECK: vector.load %[[BIAS]][%c0] : memref<12xf32>, vector<8xf32>
// CHECK: vector.maskedload %[[BIAS]][%c8]
// CHECK-NOT: vector.load %[[BIAS]][%c8]
func.func @bias_tail(%logits: tensor<?x12xf32>, %bias: tensor<12xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x12xf32> -> tensor<?x12xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x12xf32>, tensor<12xf32>
  %ids = moe.topk %keys k 2 : tensor<?x12xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x12xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
