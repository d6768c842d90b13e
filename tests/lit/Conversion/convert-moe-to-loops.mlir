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
// Group scores (top-2 sums), the kept groups, then -inf elsewhere. 8 groups
// of one chunk each: lane-wise top-2 per group, then one transposed
// butterfly (xor lane permutations at 4, 2, 1 that also hand each lane its
// group), the best 2 groups by max and min-id reductions, and the mask as a
// chunk select.
// CHECK: arith.cmpf ogt, {{.*}} : vector<8xf32>
// CHECK: vector.shuffle {{.*}} [4, 5, 6, 7, 0, 1, 2, 3]
// CHECK: vector.shuffle {{.*}} [2, 3, 0, 1, 6, 7, 4, 5]
// CHECK: vector.shuffle {{.*}} [1, 0, 3, 2, 5, 4, 7, 6]
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: arith.select {{.*}} : vector<8xi1>, vector<8xf32>
// Top-k: arg-max passes, ties to the lower id, an out-of-range pick -> 0.
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: arith.cmpi ult
// Capture: layer checked against the buffer, ids narrowed to i16, a chunk
// at a time (the 4 ids of the token: a masked chunk of 8 lanes).
// CHECK: memref.dim %[[CAP]], %c1
// CHECK: arith.cmpi ult, %[[LAYER]]
// CHECK: arith.trunci {{.*}} : vector<8xi32> to vector<8xi16>
// CHECK: vector.maskedstore %[[CAP]][%[[T]], %[[LAYER]], %{{.*}}]
// Results copied to the outputs' row t, a chunk at a time.
// CHECK: vector.maskedstore %[[IDS]][%[[T]], %{{.*}}]
// CHECK: vector.maskedstore %[[W]][%[[T]], %{{.*}}]
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
// and replaced by 0 before the gather uses them. The scores are read by
// the gather alone, so the row is only checked for bad logits, and the
// gather loads the two picked logits into one chunk and scores it.
// CHECK-LABEL: func.func @replay(
// CHECK-SAME: %[[LOGITS:arg[0-9]+]]: memref<?x60xf16> {{{[^}]*}}}, %[[FORCED:arg[0-9]+]]: memref<?x2xi64> {{{[^}]*}}}, %{{.*}}: memref<?x2xi32> {{{[^}]*}}}, %{{.*}}: memref<?x2xf32> {{{[^}]*}}}, %[[ERR:arg[0-9]+]]: memref<5xi64> {{{[^}]*}}}, %{{.*}}: index {{{[^}]*}}}, %{{.*}}: index {{{[^}]*}}})
// CHECK: scf.for
// CHECK: scf.for %{{.*}} = %c0 to %c56 step %c8
// CHECK: arith.extf {{.*}} : vector<8xf16> to vector<8xf32>
// CHECK-NOT: math.log1p
// CHECK: vector.constant_mask [4] : vector<8xi1>
// CHECK: vector.maskedload
// CHECK-NOT: math.log1p
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
// CHECK: memref.load %[[LOGITS]]
// CHECK: vector.insert {{.*}} [0] : f32 into vector<8xf32>
// CHECK: memref.load %[[LOGITS]]
// CHECK: vector.insert {{.*}} [1] : f32 into vector<8xf32>
// CHECK: math.log1p {{.*}} : vector<8xf32>
// CHECK: math.sqrt {{.*}} : vector<8xf32>
// CHECK: vector.extract {{.*}}[0] : f32 from vector<8xf32>
// CHECK: vector.extract {{.*}}[1] : f32 from vector<8xf32>
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

// Top-p: after the top-k picks, one pass over the k slots sums their keys
// in f32 and, once the sum has passed p, stores -1 in every later slot;
// the gather gives an unused slot the weight 0.
// CHECK-LABEL: func.func @topp(
// CHECK: vector.reduction <maximumf>
// CHECK: scf.for %{{.*}} = %c0 to %c4 step %c1 iter_args(%[[SUM:.*]] = %cst{{.*}}, %[[CUT:.*]] = %false) -> (f32, i1)
// CHECK: scf.if %[[CUT]] {
// CHECK-NEXT: memref.store %c-1_i32
// CHECK: %[[NEXT:.*]] = arith.addf %[[SUM]]
// CHECK: arith.cmpf ogt, %[[NEXT]], %cst
// CHECK: arith.ori %[[CUT]]
// CHECK: arith.cmpi eq, %{{.*}}, %c-1_i32 : i32
// CHECK: arith.select
func.func @topp(%logits: tensor<?x64xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %ids = moe.topp %s k 4 p 0.6 : tensor<?x64xf32> -> tensor<?x4xi32>
  %w = moe.gather %s[%ids] : tensor<?x64xf32>, tensor<?x4xi32> -> tensor<?x4xf32>
  return %ids, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// A dispatch with unused_slots: an id of -1 is neither reported nor
// counted; its position is -1, and so is every sorted slot past
// offsets[E].
// CHECK-LABEL: func.func @dispatch_unused_slots(
// CHECK-SAME: %[[IDS:arg[0-9]+]]: memref<?x2xi32> {{{[^}]*}}}, %{{.*}}: memref<16xi32> {{{[^}]*}}}, %[[OFFSETS:arg[0-9]+]]: memref<17xi32> {{{[^}]*}}}, %[[SORTED:arg[0-9]+]]: memref<?xi32> {{{[^}]*}}}, %[[POS:arg[0-9]+]]: memref<?xi32>
// CHECK: arith.cmpi eq, %{{.*}}, %c-1_i32 : i32
// CHECK: memref.store %c-1_i32, %[[POS]]
// CHECK: %[[USED:.*]] = memref.load %[[OFFSETS]][%c16]
// CHECK: %[[FROM:.*]] = arith.index_cast %[[USED]]
// CHECK: scf.for %[[P:.*]] = %[[FROM]] to
// CHECK-NEXT: memref.store %c-1_i32, %[[SORTED]][%[[P]]]
func.func @dispatch_unused_slots(%ids: tensor<?x2xi32>) -> (tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>) attributes {moe.entry = "dispatch", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %c, %o, %s, %p = moe.dispatch %ids experts 16 unused_slots : tensor<?x2xi32> -> tensor<16xi32>, tensor<17xi32>, tensor<?xi32>, tensor<?xi32>
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

// -----

// Scoring, softmax on f32: max with -inf as the neutral value, exp(l - max)
// summed, then a divide by the sum, two full chunks. A row of only -inf
// shifts by 0 and scores all-zero logits (uniform), never exp(-inf + inf).
// CHECK-LABEL: func.func @score_softmax_f32(
// CHECK-SAME: %[[L:arg[0-9]+]]: memref<?x16xf32>
// CHECK-DAG: %[[NINF:.*]] = arith.constant dense<0xFF800000> : vector<8xf32>
// CHECK-DAG: %[[PINF:.*]] = arith.constant dense<0x7F800000> : vector<8xf32>
// CHECK-DAG: %[[ZERO:.*]] = arith.constant dense<0.000000e+00> : vector<8xf32>
// CHECK-DAG: %[[NINF_S:.*]] = arith.constant 0xFF800000 : f32
// CHECK-DAG: %[[ZERO_S:.*]] = arith.constant 0.000000e+00 : f32
// CHECK: %[[S:.*]] = memref.alloca() : memref<16xf32>
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: %[[MB:[0-9]+]]:2 = scf.for %[[E:arg[0-9]+]] = %c0 to %c16 step %c8 iter_args(%[[M:arg[0-9]+]] = %[[NINF]], %[[B:arg[0-9]+]] = %{{.*}})
// CHECK: %[[X:[0-9]+]] = vector.load %[[L]][%[[T]], %[[E]]] : memref<?x16xf32>, vector<8xf32>
// CHECK: arith.maximumf %[[M]], %[[X]] : vector<8xf32>
// CHECK: %[[BAD:[0-9]+]] = arith.cmpf uge, %[[X]], %[[PINF]] : vector<8xf32>
// CHECK: arith.ori %[[B]], %[[BAD]]
// CHECK: %[[ANY:[0-9]+]] = vector.reduction <or>, %[[MB]]#1
// CHECK: scf.if %[[ANY]] {
// CHECK: %[[MAX:[0-9]+]] = vector.reduction <maximumf>, %[[MB]]#0
// CHECK: %[[ALL:[0-9]+]] = arith.cmpf oeq, %[[MAX]], %[[NINF_S]] : f32
// CHECK: %[[SHIFT:[0-9]+]] = arith.select %[[ALL]], %[[ZERO_S]], %[[MAX]] : f32
// CHECK: %[[ALLV:[0-9]+]] = vector.splat %[[ALL]] : vector<8xi1>
// CHECK: %[[SUMV:[0-9]+]] = scf.for %[[E2:arg[0-9]+]] = %c0 to %c16 step %c8 iter_args(%[[ACC:arg[0-9]+]] = %[[ZERO]])
// CHECK: %[[X2:[0-9]+]] = vector.load %[[L]][%[[T]], %[[E2]]]
// CHECK: %[[XS:[0-9]+]] = arith.select %[[ALLV]], %[[ZERO]], %[[X2]]
// CHECK: %[[SHV:[0-9]+]] = vector.splat %[[SHIFT]] : vector<8xf32>
// CHECK: %[[D:[0-9]+]] = arith.subf %[[XS]], %[[SHV]]
// CHECK: %[[EX:[0-9]+]] = math.exp %[[D]]
// CHECK: vector.store %[[EX]], %[[S]][%[[E2]]]
// CHECK: arith.addf %[[ACC]], %[[EX]]
// CHECK: %[[SUM:[0-9]+]] = vector.reduction <add>, %[[SUMV]]
// CHECK: %[[SUMS:[0-9]+]] = vector.splat %[[SUM]] : vector<8xf32>
// CHECK: scf.for %[[E3:arg[0-9]+]] = %c0 to %c16 step %c8 {
// CHECK: %[[V:[0-9]+]] = vector.load %[[S]][%[[E3]]]
// CHECK: %[[Q:[0-9]+]] = arith.divf %[[V]], %[[SUMS]] : vector<8xf32>
// CHECK: vector.store %[[Q]], %[[S]][%[[E3]]]
func.func @score_softmax_f32(%logits: tensor<?x16xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x16xf32> -> tensor<?x16xf32>
  %ids = moe.topk %s k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// The non-finite logit check: `uge +inf` is true for NaN and +inf only, so
// -inf (a masked expert) passes. Once a chunk holds one, a scalar rescan
// finds the first and records code 1 with (t, t, e, f32 bits), replacing
// the record only when it is empty or holds a later category (codes are
// bucketed by the thresholds 1, 2, 5, 7, 8).
// CHECK-LABEL: func.func @score_nonfinite_logit(
// CHECK-SAME: %[[L:arg[0-9]+]]: memref<?x8xf32>
// CHECK-SAME: %[[ERR:arg[0-9]+]]: memref<5xi64>
// CHECK-DAG: %[[PINFV:.*]] = arith.constant dense<0x7F800000> : vector<8xf32>
// CHECK-DAG: %[[PINF:.*]] = arith.constant 0x7F800000 : f32
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: %[[X:[0-9]+]] = vector.load %[[L]][%[[T]], %c0]
// CHECK: %[[BADV:[0-9]+]] = arith.cmpf uge, %[[X]], %[[PINFV]] : vector<8xf32>
// CHECK: %[[ANY:[0-9]+]] = vector.reduction <or>, %[[BADV]]
// CHECK: scf.if %[[ANY]] {
// CHECK-NEXT: scf.for %[[E:arg[0-9]+]] = %c0 to %c8 step %c1 {
// CHECK-NEXT: %[[V:[0-9]+]] = memref.load %[[L]][%[[T]], %[[E]]] : memref<?x8xf32>
// CHECK-NEXT: %[[BAD:[0-9]+]] = arith.cmpf uge, %[[V]], %[[PINF]] : f32
// CHECK-NEXT: scf.if %[[BAD]] {
// CHECK-NEXT: %[[BITS32:[0-9]+]] = arith.bitcast %[[V]] : f32 to i32
// CHECK-NEXT: %[[BITS:[0-9]+]] = arith.extui %[[BITS32]] : i32 to i64
// CHECK-NEXT: %[[TOK:[0-9]+]] = arith.index_cast %[[T]] : index to i64
// CHECK-NEXT: %[[IDX0:[0-9]+]] = arith.index_cast %[[T]] : index to i64
// CHECK-NEXT: %[[IDX1:[0-9]+]] = arith.index_cast %[[E]] : index to i64
// CHECK-NEXT: %[[CUR:[0-9]+]] = memref.load %[[ERR]][%c0] : memref<5xi64>
// CHECK: arith.cmpi sge, %[[CUR]], %c1_i64
// CHECK: arith.cmpi sge, %[[CUR]], %c2_i64
// CHECK: arith.cmpi sge, %[[CUR]], %c5_i64
// CHECK: arith.cmpi sge, %[[CUR]], %c7_i64
// CHECK: arith.cmpi sge, %[[CUR]], %c8_i64
// CHECK: arith.cmpi sge, %[[CUR]], %c9_i64
// CHECK: %[[CAT:[0-9]+]] = arith.addi
// CHECK-NEXT: %[[LATER:[0-9]+]] = arith.cmpi sgt, %[[CAT]], %c1_i64 : i64
// CHECK-NEXT: %[[EMPTY:[0-9]+]] = arith.cmpi eq, %[[CUR]], %c0_i64 : i64
// CHECK-NEXT: %[[REPLACE:[0-9]+]] = arith.ori %[[EMPTY]], %[[LATER]] : i1
// CHECK-NEXT: scf.if %[[REPLACE]] {
// CHECK-NEXT: memref.store %c1_i64, %[[ERR]][%c0]
// CHECK-NEXT: memref.store %[[TOK]], %[[ERR]][%c1]
// CHECK-NEXT: memref.store %[[IDX0]], %[[ERR]][%c2]
// CHECK-NEXT: memref.store %[[IDX1]], %[[ERR]][%c3]
// CHECK-NEXT: memref.store %[[BITS]], %[[ERR]][%c4]
// CHECK-NOT: arith.cmpf ord
// CHECK-NOT: arith.cmpf one
func.func @score_nonfinite_logit(%logits: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Softmax on 12 bf16 logits, 8 lanes: the tail is a masked load padded
// with bf16 -inf (neutral for the max, exp gives 0), widened with extf;
// exp of the padding lanes is zeroed before the sum. The rescan widens each
// element too. Top-k's tail chunk only considers lanes < 12.
// CHECK-LABEL: func.func @score_softmax_bf16_tail(
// CHECK-SAME: %[[L:arg[0-9]+]]: memref<?x12xbf16>
// CHECK-DAG: %[[NINF16:.*]] = arith.constant dense<0xFF80> : vector<8xbf16>
// CHECK-DAG: %[[ZERO:.*]] = arith.constant dense<0.000000e+00> : vector<8xf32>
// CHECK-DAG: %[[LOW4:.*]] = arith.constant dense<[true, true, true, true, false, false, false, false]> : vector<8xi1>
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: %[[H0:[0-9]+]] = vector.load %[[L]][%[[T]], %c0] : memref<?x12xbf16>, vector<8xbf16>
// CHECK-NEXT: arith.extf %[[H0]] : vector<8xbf16> to vector<8xf32>
// CHECK: %[[M:[0-9]+]] = vector.constant_mask [4] : vector<8xi1>
// CHECK-NEXT: %[[H1:[0-9]+]] = vector.maskedload %[[L]][%[[T]], %c8], %[[M]], %[[NINF16]]
// CHECK-NEXT: arith.extf %[[H1]] : vector<8xbf16> to vector<8xf32>
// CHECK: memref.load %[[L]][%[[T]], %{{.*}}] : memref<?x12xbf16>
// CHECK-NEXT: arith.extf %{{.*}} : bf16 to f32
// CHECK: vector.maskedload %[[L]][%[[T]], %c8]
// CHECK: %[[EX:[0-9]+]] = math.exp
// CHECK-NEXT: %[[M2:[0-9]+]] = vector.constant_mask [4] : vector<8xi1>
// CHECK-NEXT: %[[KEPT:[0-9]+]] = arith.select %[[M2]], %[[EX]], %[[ZERO]]
// CHECK-NEXT: vector.store %[[KEPT]], %{{.*}}[%c8] : memref<16xf32>, vector<8xf32>
// CHECK: vector.reduction <add>
// CHECK: arith.andi %{{.*}}, %[[LOW4]] : vector<8xi1>
// CHECK: arith.cmpi ult, %{{.*}}, %c12_i32 : i32
// CHECK-NOT: vector.load %[[L]][%[[T]], %c8]
func.func @score_softmax_bf16_tail(%logits: tensor<?x12xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x12xbf16> -> tensor<?x12xf32>
  %ids = moe.topk %s k 2 : tensor<?x12xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x12xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Sigmoid on f16 logits, in the form whose exp never overflows:
// e = exp(-|x|), then 1 / (1 + e) for x >= 0 and e / (1 + e) below.
// CHECK-LABEL: func.func @score_sigmoid_f16(
// CHECK-SAME: %[[L:arg[0-9]+]]: memref<?x8xf16>
// CHECK-DAG: %[[ONE:.*]] = arith.constant dense<1.000000e+00> : vector<8xf32>
// CHECK-DAG: %[[ZERO:.*]] = arith.constant dense<0.000000e+00> : vector<8xf32>
// CHECK: %[[S:.*]] = memref.alloca() : memref<8xf32>
// CHECK: %[[H:[0-9]+]] = vector.load %[[L]][%{{.*}}, %c0] : memref<?x8xf16>, vector<8xf16>
// CHECK-NEXT: %[[X:[0-9]+]] = arith.extf %[[H]] : vector<8xf16> to vector<8xf32>
// CHECK-NEXT: %[[A:[0-9]+]] = math.absf %[[X]]
// CHECK-NEXT: %[[N:[0-9]+]] = arith.negf %[[A]]
// CHECK-NEXT: %[[E:[0-9]+]] = math.exp %[[N]]
// CHECK-NEXT: %[[DEN:[0-9]+]] = arith.addf %[[E]], %[[ONE]]
// CHECK-NEXT: %[[POS:[0-9]+]] = arith.divf %[[ONE]], %[[DEN]]
// CHECK-NEXT: %[[NEG:[0-9]+]] = arith.divf %[[E]], %[[DEN]]
// CHECK-NEXT: %[[GE0:[0-9]+]] = arith.cmpf oge, %[[X]], %[[ZERO]]
// CHECK-NEXT: %[[SIG:[0-9]+]] = arith.select %[[GE0]], %[[POS]], %[[NEG]]
// CHECK-NEXT: vector.store %[[SIG]], %[[S]][%c0]
func.func @score_sigmoid_f16(%logits: tensor<?x8xf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf16> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// sqrtsoftplus (DeepSeek-V4): sqrt(max(x, 0) + log1p(exp(-|x|))), and below
// x = -16 the tail form exp(x / 2), which stays a normal f32 where
// softplus underflows.
// CHECK-LABEL: func.func @score_sqrtsoftplus_f32(
// CHECK-SAME: %[[L:arg[0-9]+]]: memref<?x8xf32>
// CHECK-DAG: %[[ZERO:.*]] = arith.constant dense<0.000000e+00> : vector<8xf32>
// CHECK-DAG: %[[HALF:.*]] = arith.constant dense<5.000000e-01> : vector<8xf32>
// CHECK-DAG: %[[CUT:.*]] = arith.constant dense<-1.600000e+01> : vector<8xf32>
// CHECK: %[[S:.*]] = memref.alloca() : memref<8xf32>
// CHECK: %[[X:[0-9]+]] = vector.load %[[L]][%{{.*}}, %c0] : memref<?x8xf32>, vector<8xf32>
// CHECK-NEXT: %[[A:[0-9]+]] = math.absf %[[X]]
// CHECK-NEXT: %[[N:[0-9]+]] = arith.negf %[[A]]
// CHECK-NEXT: %[[E:[0-9]+]] = math.exp %[[N]]
// CHECK-NEXT: %[[LP:[0-9]+]] = math.log1p %[[E]]
// CHECK-NEXT: %[[LIN:[0-9]+]] = arith.maximumf %[[X]], %[[ZERO]]
// CHECK-NEXT: %[[SP:[0-9]+]] = arith.addf %[[LIN]], %[[LP]]
// CHECK-NEXT: %[[DIRECT:[0-9]+]] = math.sqrt %[[SP]]
// CHECK-NEXT: %[[HX:[0-9]+]] = arith.mulf %[[X]], %[[HALF]]
// CHECK-NEXT: %[[TAIL:[0-9]+]] = math.exp %[[HX]]
// CHECK-NEXT: %[[IN_TAIL:[0-9]+]] = arith.cmpf olt, %[[X]], %[[CUT]]
// CHECK-NEXT: %[[R:[0-9]+]] = arith.select %[[IN_TAIL]], %[[TAIL]], %[[DIRECT]]
// CHECK-NEXT: vector.store %[[R]], %[[S]][%c0]
func.func @score_sqrtsoftplus_f32(%logits: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sqrtsoftplus %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Top-k by arg-max passes under "larger key first, then lower id": pass j
// starts after (+inf, -1) and takes the best key strictly after the
// previous pick (smaller, or equal with a larger id); across lanes the
// maximum, then the lowest id holding it (`minsi`, so ties go to the lower
// id). The bias is added to the keys only: the gather reads the unbiased
// scores.
// CHECK-LABEL: func.func @topk_ties_bias(
// CHECK-SAME: %[[L:arg[0-9]+]]: memref<?x16xf32> {{{[^}]*}}}, %[[BIAS:arg[0-9]+]]: memref<16xf32>
// CHECK-DAG: %[[NOID:.*]] = arith.constant dense<2147483647> : vector<8xi32>
// CHECK-DAG: %[[NINF:.*]] = arith.constant dense<0xFF800000> : vector<8xf32>
// CHECK-DAG: %[[E16:.*]] = arith.constant dense<16> : vector<8xi32>
// CHECK-DAG: %[[LANES:.*]] = arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7]> : vector<8xi32>
// CHECK-DAG: %[[PINF_S:.*]] = arith.constant 0x7F800000 : f32
// CHECK-DAG: %[[MINUS1:.*]] = arith.constant -1 : i32
// CHECK: %[[S:.*]] = memref.alloca() : memref<16xf32>
// CHECK: %[[K:.*]] = memref.alloca() : memref<16xf32>
// CHECK: %[[IDS:.*]] = memref.alloca() : memref<8xi32>
// CHECK: scf.for %[[E:arg[0-9]+]] = %c0 to %c16 step %c8 {
// CHECK-NEXT: %[[SV:[0-9]+]] = vector.load %[[S]][%[[E]]]
// CHECK-NEXT: %[[BV:[0-9]+]] = vector.load %[[BIAS]][%[[E]]]
// CHECK-NEXT: %[[KV:[0-9]+]] = arith.addf %[[SV]], %[[BV]]
// CHECK-NEXT: vector.store %[[KV]], %[[K]][%[[E]]]
// CHECK: scf.for %[[J:arg[0-9]+]] = %c0 to %c3 step %c1 iter_args(%[[PV:arg[0-9]+]] = %[[PINF_S]], %[[PI:arg[0-9]+]] = %[[MINUS1]]) -> (f32, i32)
// CHECK-NEXT: %[[PVV:[0-9]+]] = vector.splat %[[PV]]
// CHECK-NEXT: %[[PIV:[0-9]+]] = vector.splat %[[PI]]
// CHECK-NEXT: %[[BEST:[0-9]+]]:2 = scf.for %[[C:arg[0-9]+]] = %c0 to %c16 step %c8 iter_args(%[[BVAL:arg[0-9]+]] = %[[NINF]], %[[BID:arg[0-9]+]] = %[[NOID]])
// CHECK-NEXT: %[[KEY:[0-9]+]] = vector.load %[[K]][%[[C]]]
// CHECK-NEXT: %[[BASE:[0-9]+]] = arith.index_cast %[[C]] : index to i32
// CHECK-NEXT: %[[BASEV:[0-9]+]] = vector.splat %[[BASE]]
// CHECK-NEXT: %[[ID:[0-9]+]] = arith.addi %[[BASEV]], %[[LANES]]
// CHECK-NEXT: %[[SMALLER:[0-9]+]] = arith.cmpf olt, %[[KEY]], %[[PVV]]
// CHECK-NEXT: %[[EQ:[0-9]+]] = arith.cmpf oeq, %[[KEY]], %[[PVV]]
// CHECK-NEXT: %[[LATER:[0-9]+]] = arith.cmpi sgt, %[[ID]], %[[PIV]]
// CHECK-NEXT: %[[EQL:[0-9]+]] = arith.andi %[[EQ]], %[[LATER]]
// CHECK-NEXT: %[[AFTER:[0-9]+]] = arith.ori %[[SMALLER]], %[[EQL]]
// CHECK-NEXT: %[[INROW:[0-9]+]] = arith.cmpi slt, %[[ID]], %[[E16]]
// CHECK-NEXT: %[[ELIG:[0-9]+]] = arith.andi %[[INROW]], %[[AFTER]]
// CHECK-NEXT: %[[LARGER:[0-9]+]] = arith.cmpf ogt, %[[KEY]], %[[BVAL]]
// CHECK-NEXT: %[[EQB:[0-9]+]] = arith.cmpf oeq, %[[KEY]], %[[BVAL]]
// CHECK-NEXT: %[[LOWER:[0-9]+]] = arith.cmpi slt, %[[ID]], %[[BID]]
// CHECK-NEXT: %[[EQLOW:[0-9]+]] = arith.andi %[[EQB]], %[[LOWER]]
// CHECK-NEXT: %[[BEFORE:[0-9]+]] = arith.ori %[[LARGER]], %[[EQLOW]]
// CHECK-NEXT: %[[BETTER:[0-9]+]] = arith.andi %[[ELIG]], %[[BEFORE]]
// CHECK-NEXT: %[[NV:[0-9]+]] = arith.select %[[BETTER]], %[[KEY]], %[[BVAL]]
// CHECK-NEXT: %[[NI:[0-9]+]] = arith.select %[[BETTER]], %[[ID]], %[[BID]]
// CHECK-NEXT: scf.yield %[[NV]], %[[NI]]
// CHECK: %[[MAX:[0-9]+]] = vector.reduction <maximumf>, %[[BEST]]#0
// CHECK-NEXT: %[[MAXV:[0-9]+]] = vector.splat %[[MAX]]
// CHECK-NEXT: %[[HOLD:[0-9]+]] = arith.cmpf oeq, %[[BEST]]#0, %[[MAXV]]
// CHECK-NEXT: %[[CAND:[0-9]+]] = arith.select %[[HOLD]], %[[BEST]]#1, %[[NOID]]
// CHECK-NEXT: %[[PICK:[0-9]+]] = vector.reduction <minsi>, %[[CAND]]
// CHECK-NEXT: %[[OK:[0-9]+]] = arith.cmpi ult, %[[PICK]], %c16_i32 : i32
// CHECK-NEXT: %[[SAFE:[0-9]+]] = arith.select %[[OK]], %[[PICK]], %c0_i32 : i32
// CHECK-NEXT: memref.store %[[SAFE]], %[[IDS]][%[[J]]]
// CHECK-NEXT: scf.yield %[[MAX]], %[[PICK]] : f32, i32
// Gather: ids re-checked, weights read from the unbiased scores.
// CHECK: %[[GID:[0-9]+]] = memref.load %[[IDS]]
// CHECK-NEXT: %[[GOK:[0-9]+]] = arith.cmpi ult, %[[GID]], %c16_i32
// CHECK-NEXT: %[[GSAFE:[0-9]+]] = arith.select %[[GOK]], %[[GID]], %c0_i32
// CHECK-NEXT: %[[GE:[0-9]+]] = arith.index_cast %[[GSAFE]] : i32 to index
// CHECK-NEXT: memref.load %[[S]][%[[GE]]] : memref<16xf32>
func.func @topk_ties_bias(%logits: tensor<?x16xf32>, %bias: tensor<16xf32>) -> (tensor<?x3xi32>, tensor<?x3xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x16xf32> -> tensor<?x16xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x16xf32>, tensor<16xf32>
  %ids = moe.topk %keys k 3 : tensor<?x16xf32> -> tensor<?x3xi32>
  %w = moe.gather %s[%ids] : tensor<?x16xf32>, tensor<?x3xi32> -> tensor<?x3xf32>
  return %ids, %w : tensor<?x3xi32>, tensor<?x3xf32>
}

// -----

// group_mask by max: each group of 4 scored by its largest key (no sum),
// the best 2 groups kept by the same arg-max passes over a padded row of
// 4 group scores (lanes >= 4 never eligible), the others' keys set to -inf.
// CHECK-LABEL: func.func @group_mask_max(
// CHECK-DAG: %[[LOW4:.*]] = arith.constant dense<[true, true, true, true, false, false, false, false]> : vector<8xi1>
// CHECK-DAG: %[[NINF_S:.*]] = arith.constant 0xFF800000 : f32
// CHECK-DAG: %[[TRUE:.*]] = arith.constant true
// CHECK-DAG: %[[FALSE:.*]] = arith.constant false
// CHECK: %[[S:.*]] = memref.alloca() : memref<16xf32>
// CHECK: %[[MASKED:.*]] = memref.alloca() : memref<16xf32>
// CHECK: %[[KEPT:.*]] = memref.alloca() : memref<4xi1>
// CHECK: %[[GS:.*]] = memref.alloca() : memref<8xf32>
// CHECK: scf.for %[[G:arg[0-9]+]] = %c0 to %c4 step %c1 {
// CHECK-NEXT: %[[FIRST:[0-9]+]] = arith.muli %[[G]], %c4
// CHECK-NEXT: %[[TOP:[0-9]+]]:2 = scf.for %{{.*}} = %c0 to %c4 step %c1 iter_args(%[[B0:arg[0-9]+]] = %[[NINF_S]], %[[B1:arg[0-9]+]] = %[[NINF_S]])
// CHECK: %[[KEY:[0-9]+]] = memref.load %[[S]]
// CHECK-NEXT: %[[NEW:[0-9]+]] = arith.cmpf ogt, %[[KEY]], %[[B0]] : f32
// CHECK-NEXT: %[[M:[0-9]+]] = arith.maximumf %[[B1]], %[[KEY]] : f32
// CHECK-NEXT: %[[SECOND:[0-9]+]] = arith.select %[[NEW]], %[[B0]], %[[M]]
// CHECK-NEXT: %[[LARGEST:[0-9]+]] = arith.select %[[NEW]], %[[KEY]], %[[B0]]
// CHECK-NEXT: scf.yield %[[LARGEST]], %[[SECOND]]
// CHECK-NEXT: }
// CHECK-NEXT: memref.store %[[TOP]]#0, %[[GS]][%[[G]]]
// CHECK-NEXT: memref.store %[[FALSE]], %[[KEPT]][%[[G]]]
// CHECK: vector.load %[[GS]][%c0] : memref<8xf32>, vector<8xf32>
// CHECK: arith.andi %{{.*}}, %[[LOW4]] : vector<8xi1>
// CHECK: %[[GPICK:[0-9]+]] = vector.reduction <minsi>
// CHECK-NEXT: %[[GOK:[0-9]+]] = arith.cmpi ult, %[[GPICK]], %c4_i32
// CHECK-NEXT: %[[GSAFE:[0-9]+]] = arith.select %[[GOK]], %[[GPICK]], %c0_i32
// CHECK-NEXT: %[[GIDX:[0-9]+]] = arith.index_cast %[[GSAFE]] : i32 to index
// CHECK-NEXT: memref.store %[[TRUE]], %[[KEPT]][%[[GIDX]]]
// CHECK: scf.for %[[G2:arg[0-9]+]] = %c0 to %c4 step %c1 {
// CHECK-NEXT: %[[ISKEPT:[0-9]+]] = memref.load %[[KEPT]][%[[G2]]]
// CHECK: %[[K2:[0-9]+]] = memref.load %[[S]][%[[EI:[0-9]+]]]
// CHECK-NEXT: %[[SEL:[0-9]+]] = arith.select %[[ISKEPT]], %[[K2]], %[[NINF_S]] : f32
// CHECK-NEXT: memref.store %[[SEL]], %[[MASKED]][%[[EI]]]
// The final top-k ranks the masked keys.
// CHECK: vector.load %[[MASKED]]
func.func @group_mask_max(%logits: tensor<?x16xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x16xf32> -> tensor<?x16xf32>
  %m = moe.group_mask %s groups 4 keep 2 by max : tensor<?x16xf32>
  %ids = moe.topk %m k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// group_mask by top2_sum: the group score is the largest plus the second
// largest key (an equal key counts as the second).
// CHECK-LABEL: func.func @group_mask_top2_sum(
// CHECK: %[[TOP:[0-9]+]]:2 = scf.for %{{.*}} = %c0 to %c4 step %c1 iter_args
// CHECK: %[[SUM:[0-9]+]] = arith.addf %[[TOP]]#0, %[[TOP]]#1 : f32
// CHECK-NEXT: memref.store %[[SUM]], %{{.*}}[%{{.*}}] : memref<8xf32>
func.func @group_mask_top2_sum(%logits: tensor<?x16xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x16xf32> -> tensor<?x16xf32>
  %m = moe.group_mask %s groups 4 keep 2 by top2_sum : tensor<?x16xf32>
  %ids = moe.topk %m k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// E = 3 with 4 lanes: no full chunk, a single masked chunk of 3 (padded
// with -inf for softmax's max); the logits row is never read by a plain
// vector load, and top-k only considers lanes < 3.
// CHECK-LABEL: func.func @tail_only_chunk(
// CHECK-SAME: %[[L:arg[0-9]+]]: memref<?x3xf32>
// CHECK-DAG: %[[NINF:.*]] = arith.constant dense<0xFF800000> : vector<4xf32>
// CHECK-DAG: %[[LOW3:.*]] = arith.constant dense<[true, true, true, false]> : vector<4xi1>
// CHECK: %[[M:[0-9]+]] = vector.constant_mask [3] : vector<4xi1>
// CHECK-NEXT: vector.maskedload %[[L]][%{{.*}}, %c0], %[[M]], %[[NINF]] : memref<?x3xf32>, vector<4xi1>, vector<4xf32> into vector<4xf32>
// CHECK-NOT: vector.load %[[L]]
// CHECK: arith.andi %{{.*}}, %[[LOW3]] : vector<4xi1>
// CHECK: vector.reduction <minsi>, %{{.*}} : vector<4xi32> into i32
// CHECK: arith.cmpi ult, %{{.*}}, %c3_i32
func.func @tail_only_chunk(%logits: tensor<?x3xf32>) -> (tensor<?x1xi32>, tensor<?x1xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 4, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x3xf32> -> tensor<?x3xf32>
  %ids = moe.topk %s k 1 : tensor<?x3xf32> -> tensor<?x1xi32>
  %w = moe.gather %s[%ids] : tensor<?x3xf32>, tensor<?x1xi32> -> tensor<?x1xf32>
  return %ids, %w : tensor<?x1xi32>, tensor<?x1xf32>
}

// -----

// Insertion top-k with a masked tail (E = 12, k = 2): the lane-by-lane scan
// only inserts lanes with k <= e < E, and clamps e to E - 1 before loading,
// so a lane past the row never addresses it. The list insert puts a key
// after every kept key >= it (ties to the lower id).
// CHECK-LABEL: func.func @insertion_topk_tail(
// CHECK: %[[LV:.*]] = memref.alloca() : memref<8xf32>
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: arith.cmpf oge, %{{.*}}, %{{.*}} : f32
// CHECK: %[[E:[0-9]+]] = arith.addi %{{arg[0-9]+}}, %c8 : index
// CHECK-NEXT: %[[LTN:[0-9]+]] = arith.cmpi ult, %[[E]], %c12 : index
// CHECK-NEXT: %[[GEK:[0-9]+]] = arith.cmpi uge, %[[E]], %c2 : index
// CHECK-NEXT: %[[INROW:[0-9]+]] = arith.andi %[[GEK]], %[[LTN]]
// CHECK-NEXT: %[[CL:[0-9]+]] = arith.minui %[[E]], %c11 : index
// CHECK-NEXT: %[[KEY:[0-9]+]] = memref.load %{{.*}}[%[[CL]]] : memref<16xf32>
// CHECK-NEXT: %[[GT:[0-9]+]] = arith.cmpf ogt, %[[KEY]], %{{.*}} : f32
// CHECK-NEXT: %[[ENTERS:[0-9]+]] = arith.andi %[[INROW]], %[[GT]]
// CHECK-NEXT: scf.if %[[ENTERS]] {
// Final ids are re-checked against E.
// CHECK: arith.cmpi ult, %{{.*}}, %c12_i32 : i32
func.func @insertion_topk_tail(%logits: tensor<?x12xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = insertion>} {
  %s = moe.score sigmoid %logits : tensor<?x12xf32> -> tensor<?x12xf32>
  %ids = moe.topk %s k 2 : tensor<?x12xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x12xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// hash_select with i64 token ids: a token id outside the table (unsigned
// compare, so negative ids too) records code 2 (t, vocabulary, token id)
// and gives expert 0 for every slot, without reading the table; inside,
// each entry outside [0, 8) records code 3 and a repeat of an earlier
// entry of the row code 4, both as (table row, j, entry), and the id kept
// is the entry when in range, else 0.
// CHECK-LABEL: func.func @hash_select_checks(
// CHECK-SAME: %[[TOK:arg[0-9]+]]: memref<?xi64> {{{[^}]*}}}, %[[TABLE:arg[0-9]+]]: memref<?x3xi32>
// CHECK-SAME: %[[ERR:arg[0-9]+]]: memref<5xi64>
// CHECK: %[[IDS:.*]] = memref.alloca() : memref<8xi32>
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: %[[TID:[0-9]+]] = memref.load %[[TOK]][%[[T]]] : memref<?xi64>
// CHECK-NEXT: %[[V:.*]] = memref.dim %[[TABLE]], %c0
// CHECK-NEXT: %[[V64:[0-9]+]] = arith.index_cast %[[V]] : index to i64
// CHECK-NEXT: %[[KNOWN:[0-9]+]] = arith.cmpi ult, %[[TID]], %[[V64]] : i64
// CHECK-NEXT: scf.if %[[KNOWN]] {
// CHECK-NEXT: %[[ROW:[0-9]+]] = arith.index_cast %[[TID]] : i64 to index
// CHECK-NEXT: scf.for %[[J:arg[0-9]+]] = %c0 to %c3 step %c1 {
// CHECK-NEXT: %[[ENTRY:[0-9]+]] = memref.load %[[TABLE]][%[[ROW]], %[[J]]]
// CHECK-NEXT: %[[ID:[0-9]+]] = arith.extsi %[[ENTRY]] : i32 to i64
// CHECK-NEXT: %[[OUT:[0-9]+]] = arith.cmpi uge, %[[ID]], %c8_i64 : i64
// CHECK-NEXT: scf.if %[[OUT]] {
// CHECK: memref.store %c3_i64, %[[ERR]][%c0]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c1]
// CHECK-NEXT: memref.store %[[TID]], %[[ERR]][%c2]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c3]
// CHECK-NEXT: memref.store %[[ID]], %[[ERR]][%c4]
// CHECK: scf.for %[[I:arg[0-9]+]] = %c0 to %[[J]] step %c1 {
// CHECK-NEXT: %[[EARLIER:[0-9]+]] = memref.load %[[TABLE]][%[[ROW]], %[[I]]]
// CHECK-NEXT: %[[REP:[0-9]+]] = arith.cmpi eq, %[[EARLIER]], %[[ENTRY]] : i32
// CHECK-NEXT: scf.if %[[REP]] {
// CHECK: memref.store %c4_i64, %[[ERR]][%c0]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c1]
// CHECK-NEXT: memref.store %[[TID]], %[[ERR]][%c2]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c3]
// CHECK-NEXT: memref.store %[[ID]], %[[ERR]][%c4]
// CHECK: %[[OK:[0-9]+]] = arith.cmpi ult, %[[ID]], %c8_i64 : i64
// CHECK-NEXT: %[[SAFE:[0-9]+]] = arith.select %[[OK]], %[[ID]], %c0_i64 : i64
// CHECK-NEXT: %[[SAFE32:[0-9]+]] = arith.trunci %[[SAFE]] : i64 to i32
// CHECK-NEXT: memref.store %[[SAFE32]], %[[IDS]][%[[J]]]
// CHECK: } else {
// CHECK-NOT: memref.load %[[TABLE]]
// CHECK: memref.store %c2_i64, %[[ERR]][%c0]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c1]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c2]
// CHECK-NEXT: memref.store %[[V64]], %[[ERR]][%c3]
// CHECK-NEXT: memref.store %[[TID]], %[[ERR]][%c4]
// CHECK: scf.for %[[J2:arg[0-9]+]] = %c0 to %c3 step %c1 {
// CHECK-NEXT: memref.store %c0_i32, %[[IDS]][%[[J2]]]
func.func @hash_select_checks(%logits: tensor<?x8xf32>, %tok: tensor<?xi64>, %table: tensor<?x3xi32>) -> (tensor<?x3xi32>, tensor<?x3xf32>) attributes {moe.entry = "route_hash", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.hash_select %tok, %table experts 8 : tensor<?xi64>, tensor<?x3xi32> -> tensor<?x3xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x3xi32> -> tensor<?x3xf32>
  return %ids, %w : tensor<?x3xi32>, tensor<?x3xf32>
}

// -----

// forced_select with i32 ids: sign-extended, so a negative id fails the
// unsigned range check; code 5 out of range and code 6 repeated, both as
// (t, j, id), the record replaced only when empty or of a later category
// (> 3); the id kept is the forced one when in range, else 0.
// CHECK-LABEL: func.func @forced_select_i32(
// CHECK-SAME: %[[FORCED:arg[0-9]+]]: memref<?x2xi32>
// CHECK-SAME: %[[ERR:arg[0-9]+]]: memref<5xi64>
// CHECK: %[[IDS:.*]] = memref.alloca() : memref<8xi32>
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: scf.for %[[J:arg[0-9]+]] = %c0 to %c2 step %c1 {
// CHECK-NEXT: %[[RAW:[0-9]+]] = memref.load %[[FORCED]][%[[T]], %[[J]]] : memref<?x2xi32>
// CHECK-NEXT: %[[ID:[0-9]+]] = arith.extsi %[[RAW]] : i32 to i64
// CHECK-NEXT: %[[OUT:[0-9]+]] = arith.cmpi uge, %[[ID]], %c8_i64 : i64
// CHECK-NEXT: scf.if %[[OUT]] {
// CHECK: arith.cmpi sgt, %{{.*}}, %c3_i64 : i64
// CHECK: memref.store %c5_i64, %[[ERR]][%c0]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c1]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c2]
// CHECK-NEXT: memref.store %{{.*}}, %[[ERR]][%c3]
// CHECK-NEXT: memref.store %[[ID]], %[[ERR]][%c4]
// CHECK: scf.for %[[I:arg[0-9]+]] = %c0 to %[[J]] step %c1 {
// CHECK-NEXT: %[[EARLIER:[0-9]+]] = memref.load %[[FORCED]][%[[T]], %[[I]]]
// CHECK-NEXT: %[[REP:[0-9]+]] = arith.cmpi eq, %[[EARLIER]], %[[RAW]] : i32
// CHECK-NEXT: scf.if %[[REP]] {
// CHECK: memref.store %c6_i64, %[[ERR]][%c0]
// CHECK: memref.store %[[ID]], %[[ERR]][%c4]
// CHECK: %[[OK:[0-9]+]] = arith.cmpi ult, %[[ID]], %c8_i64 : i64
// CHECK-NEXT: %[[SAFE:[0-9]+]] = arith.select %[[OK]], %[[ID]], %c0_i64 : i64
// CHECK-NEXT: %[[SAFE32:[0-9]+]] = arith.trunci %[[SAFE]] : i64 to i32
// CHECK-NEXT: memref.store %[[SAFE32]], %[[IDS]][%[[J]]]
func.func @forced_select_i32(%logits: tensor<?x8xf32>, %forced: tensor<?x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "replay", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.forced_select %forced experts 8 : tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Weights: normalize sums the k weights, adds epsilon (kept even when 0:
// x + 0.0 is not the identity for -0.0) and divides; a scale by exactly 1.0
// leaves a plain copy, no multiply.
// CHECK-LABEL: func.func @weights_normalize_unit_scale(
// CHECK-DAG: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK: memref.alloca() : memref<8xi32>
// CHECK: %[[W:.*]] = memref.alloca() : memref<8xf32>
// CHECK: %[[N:.*]] = memref.alloca() : memref<8xf32>
// CHECK: %[[SC:.*]] = memref.alloca() : memref<8xf32>
// CHECK: %[[SUM:[0-9]+]] = scf.for %{{.*}} = %c0 to %c2 step %c1 iter_args(%[[ACC:arg[0-9]+]] = %[[ZERO]]) -> (f32) {
// CHECK-NEXT: %[[X:[0-9]+]] = memref.load %[[W]]
// CHECK-NEXT: %[[NEXT:[0-9]+]] = arith.addf %[[ACC]], %[[X]] : f32
// CHECK-NEXT: scf.yield %[[NEXT]]
// CHECK: %[[DEN:[0-9]+]] = arith.addf %[[SUM]], %[[ZERO]] : f32
// CHECK: scf.for %[[J:arg[0-9]+]] = %c0 to %c2 step %c1 {
// CHECK-NEXT: %[[Y:[0-9]+]] = memref.load %[[W]][%[[J]]]
// CHECK-NEXT: %[[Q:[0-9]+]] = arith.divf %[[Y]], %[[DEN]] : f32
// CHECK-NEXT: memref.store %[[Q]], %[[N]][%[[J]]]
// CHECK: scf.for %[[J2:arg[0-9]+]] = %c0 to %c2 step %c1 {
// CHECK-NEXT: %[[Z:[0-9]+]] = memref.load %[[N]][%[[J2]]]
// CHECK-NEXT: memref.store %[[Z]], %[[SC]][%[[J2]]]
// CHECK-NOT: arith.mulf
// CHECK: return
func.func @weights_normalize_unit_scale(%logits: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %n = moe.normalize %w epsilon 0.0 : tensor<?x2xf32>
  %sc = moe.scale %n by 1.0 : tensor<?x2xf32>
  return %ids, %sc : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Weights: epsilon and factor as given, one multiply per weight.
// CHECK-LABEL: func.func @weights_epsilon_scale(
// CHECK-DAG: %[[EPS:.*]] = arith.constant 9.99999968E-21 : f32
// CHECK-DAG: %[[FACTOR:.*]] = arith.constant 2.500000e+00 : f32
// CHECK: %[[DEN:[0-9]+]] = arith.addf %{{.*}}, %[[EPS]] : f32
// CHECK: arith.divf %{{.*}}, %[[DEN]] : f32
// CHECK: arith.mulf %{{.*}}, %[[FACTOR]] : f32
func.func @weights_epsilon_scale(%logits: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x2xf32>
  %sc = moe.scale %n by 2.5 : tensor<?x2xf32>
  return %ids, %sc : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Capture with 40000 experts: an i32 buffer, ids stored without narrowing.
// A layer outside [0, L) records code 7 (t, L, layer) and nothing is
// written; the store happens only under the in-range test.
// CHECK-LABEL: func.func @capture_i32(
// CHECK-SAME: %[[CAP:arg[0-9]+]]: memref<?x?x1xi32> {moe.kernel_arg = #moe.kernel_arg<name = "capture", role = tensor, dtype = i32, shape = ["T", "L", 1], access = readwrite>}
// CHECK-SAME: %[[LAYER:arg[0-9]+]]: index
// CHECK-SAME: %[[ERR:arg[0-9]+]]: memref<5xi64>
// CHECK: %[[IDS:.*]] = memref.alloca() : memref<8xi32>
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: %[[L:.*]] = memref.dim %[[CAP]], %c1 : memref<?x?x1xi32>
// CHECK-NEXT: %[[VALID:[0-9]+]] = arith.cmpi ult, %[[LAYER]], %[[L]] : index
// CHECK-NEXT: %[[INVALID:[0-9]+]] = arith.cmpi uge, %[[LAYER]], %[[L]] : index
// CHECK-NEXT: scf.if %[[INVALID]] {
// CHECK-NEXT: %[[TOK:[0-9]+]] = arith.index_cast %[[T]] : index to i64
// CHECK-NEXT: %[[IDX0:[0-9]+]] = arith.index_cast %[[T]] : index to i64
// CHECK-NEXT: %[[L64:[0-9]+]] = arith.index_cast %[[L]] : index to i64
// CHECK-NEXT: %[[LAYER64:[0-9]+]] = arith.index_cast %[[LAYER]] : index to i64
// CHECK: memref.store %c7_i64, %[[ERR]][%c0]
// CHECK-NEXT: memref.store %[[TOK]], %[[ERR]][%c1]
// CHECK-NEXT: memref.store %[[IDX0]], %[[ERR]][%c2]
// CHECK-NEXT: memref.store %[[L64]], %[[ERR]][%c3]
// CHECK-NEXT: memref.store %[[LAYER64]], %[[ERR]][%c4]
// CHECK: scf.if %[[VALID]] {
// CHECK-NEXT: %[[ID:[0-9]+]] = vector.load %[[IDS]][%c0] : memref<8xi32>, vector<8xi32>
// CHECK-NEXT: %[[ONE:[0-9]+]] = vector.constant_mask [1] : vector<8xi1>
// CHECK-NEXT: vector.maskedstore %[[CAP]][%[[T]], %[[LAYER]], %c0], %[[ONE]], %[[ID]] : memref<?x?x1xi32>, vector<8xi1>, vector<8xi32>
// CHECK-NOT: arith.trunci
// CHECK: return
func.func @capture_i32(%logits: tensor<?x40000xf32>, %cap: tensor<?x?x1xi32>, %layer: index) -> (tensor<?x1xi32>, tensor<?x1xf32>, tensor<?x?x1xi32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x40000xf32> -> tensor<?x40000xf32>
  %ids = moe.topk %s k 1 : tensor<?x40000xf32> -> tensor<?x1xi32>
  %w = moe.gather %s[%ids] : tensor<?x40000xf32>, tensor<?x1xi32> -> tensor<?x1xf32>
  %c = moe.capture %ids into %cap[%layer] experts 40000 : tensor<?x1xi32> into tensor<?x?x1xi32>
  return %ids, %w, %c : tensor<?x1xi32>, tensor<?x1xf32>, tensor<?x?x1xi32>
}

// -----

// Dispatch as a counting sort over all T tokens of ids [T, 3], E = 4:
// counts zeroed, then counted; offsets[0] = 0 and offsets[e + 1] =
// offsets[e] + counts[e] (E + 1 entries); counts zeroed again and reused as
// fill levels while slots t*3+j are placed in increasing order (stable).
// An id outside [0, 4) records code 8 (t, j, id) and is skipped by both
// passes, so it never indexes counts or offsets.
// CHECK-LABEL: func.func @dispatch_counting_sort(
// CHECK-SAME: %[[IDS:arg[0-9]+]]: memref<?x3xi32> {{{[^}]*}}}, %[[COUNTS:arg[0-9]+]]: memref<4xi32> {{{[^}]*}}}, %[[OFFSETS:arg[0-9]+]]: memref<5xi32> {{{[^}]*}}}, %[[SORTED:arg[0-9]+]]: memref<?xi32> {{{[^}]*}}}, %[[POS:arg[0-9]+]]: memref<?xi32> {{{[^}]*}}}, %[[ERR:arg[0-9]+]]: memref<5xi64> {{{[^}]*}}})
// CHECK: %[[T_N:.*]] = memref.dim %[[IDS]], %c0
// CHECK-NEXT: scf.for %[[E:arg[0-9]+]] = %c0 to %c4 step %c1 {
// CHECK-NEXT: memref.store %c0_i32, %[[COUNTS]][%[[E]]]
// CHECK: scf.for %[[T:arg[0-9]+]] = %c0 to %[[T_N]] step %c1 {
// CHECK-NEXT: scf.for %[[J:arg[0-9]+]] = %c0 to %c3 step %c1 {
// CHECK-NEXT: %[[ID:[0-9]+]] = memref.load %[[IDS]][%[[T]], %[[J]]]
// CHECK-NEXT: %[[OK:[0-9]+]] = arith.cmpi ult, %[[ID]], %c4_i32 : i32
// CHECK-NEXT: %[[BAD:[0-9]+]] = arith.cmpi uge, %[[ID]], %c4_i32 : i32
// CHECK-NEXT: scf.if %[[BAD]] {
// CHECK-NEXT: %[[TOK:[0-9]+]] = arith.index_cast %[[T]] : index to i64
// CHECK-NEXT: %[[IDX0:[0-9]+]] = arith.index_cast %[[T]] : index to i64
// CHECK-NEXT: %[[IDX1:[0-9]+]] = arith.index_cast %[[J]] : index to i64
// CHECK-NEXT: %[[ID64:[0-9]+]] = arith.extsi %[[ID]] : i32 to i64
// CHECK: memref.store %c8_i64, %[[ERR]][%c0]
// CHECK-NEXT: memref.store %[[TOK]], %[[ERR]][%c1]
// CHECK-NEXT: memref.store %[[IDX0]], %[[ERR]][%c2]
// CHECK-NEXT: memref.store %[[IDX1]], %[[ERR]][%c3]
// CHECK-NEXT: memref.store %[[ID64]], %[[ERR]][%c4]
// CHECK: scf.if %[[OK]] {
// CHECK-NEXT: %[[EI:[0-9]+]] = arith.index_cast %[[ID]] : i32 to index
// CHECK-NEXT: %[[C:[0-9]+]] = memref.load %[[COUNTS]][%[[EI]]]
// CHECK-NEXT: %[[C1:[0-9]+]] = arith.addi %[[C]], %c1_i32
// CHECK-NEXT: memref.store %[[C1]], %[[COUNTS]][%[[EI]]]
// CHECK: memref.store %c0_i32, %[[OFFSETS]][%c0]
// CHECK-NEXT: scf.for %[[E2:arg[0-9]+]] = %c0 to %c4 step %c1 iter_args(%[[TOTAL:arg[0-9]+]] = %c0_i32) -> (i32) {
// CHECK-NEXT: %[[CNT:[0-9]+]] = memref.load %[[COUNTS]][%[[E2]]]
// CHECK-NEXT: %[[NEXT:[0-9]+]] = arith.addi %[[TOTAL]], %[[CNT]] : i32
// CHECK-NEXT: %[[E2P1:[0-9]+]] = arith.addi %[[E2]], %c1 : index
// CHECK-NEXT: memref.store %[[NEXT]], %[[OFFSETS]][%[[E2P1]]]
// CHECK-NEXT: scf.yield %[[NEXT]]
// CHECK: scf.for %[[E3:arg[0-9]+]] = %c0 to %c4 step %c1 {
// CHECK-NEXT: memref.store %c0_i32, %[[COUNTS]][%[[E3]]]
// CHECK: scf.for %[[T2:arg[0-9]+]] = %c0 to %[[T_N]] step %c1 {
// CHECK-NEXT: scf.for %[[J2:arg[0-9]+]] = %c0 to %c3 step %c1 {
// CHECK-NEXT: %[[ID2:[0-9]+]] = memref.load %[[IDS]][%[[T2]], %[[J2]]]
// CHECK-NEXT: %[[OK2:[0-9]+]] = arith.cmpi ult, %[[ID2]], %c4_i32 : i32
// CHECK: memref.store %c8_i64, %[[ERR]][%c0]
// CHECK: scf.if %[[OK2]] {
// CHECK-NEXT: %[[TK:[0-9]+]] = arith.muli %[[T2]], %c3 : index
// CHECK-NEXT: %[[SLOT:[0-9]+]] = arith.addi %[[TK]], %[[J2]] : index
// CHECK-NEXT: %[[EI2:[0-9]+]] = arith.index_cast %[[ID2]] : i32 to index
// CHECK-NEXT: %[[FILLED:[0-9]+]] = memref.load %[[COUNTS]][%[[EI2]]]
// CHECK-NEXT: %[[FILLED1:[0-9]+]] = arith.addi %[[FILLED]], %c1_i32
// CHECK-NEXT: memref.store %[[FILLED1]], %[[COUNTS]][%[[EI2]]]
// CHECK-NEXT: %[[BASE:[0-9]+]] = memref.load %[[OFFSETS]][%[[EI2]]]
// CHECK-NEXT: %[[P:[0-9]+]] = arith.addi %[[BASE]], %[[FILLED]] : i32
// CHECK-NEXT: %[[PI:[0-9]+]] = arith.index_cast %[[P]] : i32 to index
// CHECK-NEXT: %[[SLOT32:[0-9]+]] = arith.index_cast %[[SLOT]] : index to i32
// CHECK-NEXT: memref.store %[[SLOT32]], %[[SORTED]][%[[PI]]]
// CHECK-NEXT: memref.store %[[P]], %[[POS]][%[[SLOT]]]
func.func @dispatch_counting_sort(%ids: tensor<?x3xi32>) -> (tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xi32>) attributes {moe.entry = "dispatch", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %c, %o, %s, %p = moe.dispatch %ids experts 4 : tensor<?x3xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xi32>
  return %c, %o, %s, %p : tensor<4xi32>, tensor<5xi32>, tensor<?xi32>, tensor<?xi32>
}

// -----

// Kernel ABI, route with bias and capture: every argument stamped with its
// name, role, dtype, symbolic shape and access; capture is updated in place
// (readwrite, no output), layer is an i64 scalar, then the outputs, the
// five-word error record and the token range.
// CHECK-LABEL: func.func @abi_route(
// CHECK-SAME: %arg0: memref<?x16xbf16> {moe.kernel_arg = #moe.kernel_arg<name = "logits", role = tensor, dtype = bf16, shape = ["T", 16], access = read>},
// CHECK-SAME: %arg1: memref<16xf32> {moe.kernel_arg = #moe.kernel_arg<name = "bias", role = tensor, dtype = f32, shape = [16], access = read>},
// CHECK-SAME: %arg2: memref<?x?x2xi16> {moe.kernel_arg = #moe.kernel_arg<name = "capture", role = tensor, dtype = i16, shape = ["T", "L", 2], access = readwrite>},
// CHECK-SAME: %arg3: index {moe.kernel_arg = #moe.kernel_arg<name = "layer", role = scalar, dtype = i64, shape = [], access = read>},
// CHECK-SAME: %arg4: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 2], access = write>},
// CHECK-SAME: %arg5: memref<?x2xf32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", role = tensor, dtype = f32, shape = ["T", 2], access = write>},
// CHECK-SAME: %arg6: memref<5xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [5], access = readwrite>},
// CHECK-SAME: %arg7: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>},
// CHECK-SAME: %arg8: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>})
// CHECK-SAME: attributes {llvm.emit_c_interface, moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
// CHECK: arith.trunci %{{.*}} : vector<8xi32> to vector<8xi16>
func.func @abi_route(%logits: tensor<?x16xbf16>, %bias: tensor<16xf32>, %cap: tensor<?x?x2xi16>, %layer: index) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x?x2xi16>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x16xbf16> -> tensor<?x16xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x16xf32>, tensor<16xf32>
  %ids = moe.topk %keys k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %c = moe.capture %ids into %cap[%layer] experts 16 : tensor<?x2xi32> into tensor<?x?x2xi16>
  return %ids, %w, %c : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x?x2xi16>
}

// -----

// Kernel ABI, route_hash: token ids [T] (i64 stamped as given) and the
// table [V, k] with its rows a run-time symbol.
// CHECK-LABEL: func.func @abi_route_hash(
// CHECK-SAME: %arg0: memref<?x8xf16> {moe.kernel_arg = #moe.kernel_arg<name = "logits", role = tensor, dtype = f16, shape = ["T", 8], access = read>},
// CHECK-SAME: %arg1: memref<?xi64> {moe.kernel_arg = #moe.kernel_arg<name = "token_ids", role = tensor, dtype = i64, shape = ["T"], access = read>},
// CHECK-SAME: %arg2: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "hash_table", role = tensor, dtype = i32, shape = ["V", 2], access = read>},
// CHECK-SAME: %arg3: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 2], access = write>},
// CHECK-SAME: %arg4: memref<?x2xf32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", role = tensor, dtype = f32, shape = ["T", 2], access = write>},
// CHECK-SAME: %arg5: memref<5xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [5], access = readwrite>},
// CHECK-SAME: %arg6: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>},
// CHECK-SAME: %arg7: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>})
// CHECK-SAME: moe.entry = "route_hash"
func.func @abi_route_hash(%logits: tensor<?x8xf16>, %tok: tensor<?xi64>, %table: tensor<?x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route_hash", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x8xf16> -> tensor<?x8xf32>
  %ids = moe.hash_select %tok, %table experts 8 : tensor<?xi64>, tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Kernel ABI, replay: forced ids stamped with the element type the IR has
// (i64 here), so a backend binding i32 buffers refuses it by the stamp.
// CHECK-LABEL: func.func @abi_replay(
// CHECK-SAME: %arg0: memref<?x8xf32> {moe.kernel_arg = #moe.kernel_arg<name = "logits", role = tensor, dtype = f32, shape = ["T", 8], access = read>},
// CHECK-SAME: %arg1: memref<?x3xi64> {moe.kernel_arg = #moe.kernel_arg<name = "forced_ids", role = tensor, dtype = i64, shape = ["T", 3], access = read>},
// CHECK-SAME: %arg2: memref<?x3xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 3], access = write>},
// CHECK-SAME: %arg3: memref<?x3xf32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", role = tensor, dtype = f32, shape = ["T", 3], access = write>},
// CHECK-SAME: %arg4: memref<5xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [5], access = readwrite>},
// CHECK-SAME: %arg5: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>},
// CHECK-SAME: %arg6: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>})
// CHECK-SAME: moe.entry = "replay"
func.func @abi_replay(%logits: tensor<?x8xf32>, %forced: tensor<?x3xi64>) -> (tensor<?x3xi32>, tensor<?x3xf32>) attributes {moe.entry = "replay", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.forced_select %forced experts 8 : tensor<?x3xi64> -> tensor<?x3xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x3xi32> -> tensor<?x3xf32>
  %n = moe.normalize %w epsilon 1.0e-20 : tensor<?x3xf32>
  return %ids, %n : tensor<?x3xi32>, tensor<?x3xf32>
}

// -----

// Kernel ABI, dispatch: counts [E], offsets [E+1], slots as ["T*k"]; the
// error record, and no token range (it spans all tokens).
// CHECK-LABEL: func.func @abi_dispatch(
// CHECK-SAME: %arg0: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 2], access = read>},
// CHECK-SAME: %arg1: memref<8xi32> {moe.kernel_arg = #moe.kernel_arg<name = "expert_counts", role = tensor, dtype = i32, shape = [8], access = write>},
// CHECK-SAME: %arg2: memref<9xi32> {moe.kernel_arg = #moe.kernel_arg<name = "expert_offsets", role = tensor, dtype = i32, shape = [9], access = write>},
// CHECK-SAME: %arg3: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "sorted_slots", role = tensor, dtype = i32, shape = ["T*k"], access = write>},
// CHECK-SAME: %arg4: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "slot_positions", role = tensor, dtype = i32, shape = ["T*k"], access = write>},
// CHECK-SAME: %arg5: memref<5xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [5], access = readwrite>})
// CHECK-SAME: attributes {llvm.emit_c_interface, moe.entry = "dispatch"
func.func @abi_dispatch(%ids: tensor<?x2xi32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>) attributes {moe.entry = "dispatch", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return %c, %o, %s, %p : tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
}

// -----

// An argument nothing reads through a moe op has no ABI name, so no
// backend could bind it.
// expected-error @+1 {{'func.func' op argument #1 is read by no moe op that gives it a kernel ABI name}}
func.func @unnamed_argument(%logits: tensor<?x8xf32>, %extra: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// A result with no ABI name (the scores) cannot become an output.
// expected-error @+1 {{'func.func' op result computed by moe.score has no kernel ABI name}}
func.func @unnamed_result(%logits: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x8xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  return %ids, %s : tensor<?x2xi32>, tensor<?x8xf32>
}

// -----

// The catalogue of abi/KernelAbi.h decides which arguments an entry kind
// takes: a replay kernel has no bias.
// expected-error @+1 {{'func.func' op kernel argument 'bias' of type 'memref<8xf32>' is not an argument of a replay kernel (abi/KernelAbi.h)}}
func.func @bias_in_replay(%logits: tensor<?x8xf32>, %bias: tensor<8xf32>, %forced: tensor<?x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "replay", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %keys = moe.add_bias %s, %bias : tensor<?x8xf32>, tensor<8xf32>
  %ids = moe.forced_select %forced experts 8 : tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %keys[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// The table's rows (V) are a run-time size in the ABI, never static.
// expected-error @+1 {{'func.func' op kernel argument 'hash_table' of type 'memref<100x2xi32>' must have a dynamic dimension 0 (V)}}
func.func @static_hash_rows(%logits: tensor<?x8xf32>, %tok: tensor<?xi32>, %table: tensor<100x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route_hash", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.hash_select %tok, %table experts 8 : tensor<?xi32>, tensor<100x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// A required argument of the entry kind is missing: route must return
// weights.
// expected-error @+1 {{'func.func' op a route kernel needs 'topk_weights' (abi/KernelAbi.h)}}
func.func @missing_weights(%logits: tensor<?x8xf32>) -> tensor<?x2xi32> attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  return %ids : tensor<?x2xi32>
}

// -----

// lane_lists: each lane's elements of the row (2 chunks of 8) are loaded
// once, ineligible ones (NaN) become (-inf, INT32_MAX), a compare-exchange
// network sorts them lane by lane, then k = 3 rounds take the largest head
// (ties to the lowest id) and pop it from its lane; the last round pops
// nothing.
// CHECK-LABEL: func.func @lane_lists(
// CHECK: scf.for %[[T:.*]] = %{{.*}} to
// CHECK: vector.load %[[SCORES:.*]][%c0] : memref<16xf32>, vector<8xf32>
// CHECK-NEXT: arith.cmpf ord
// CHECK: vector.load %[[SCORES]][%c8] : memref<16xf32>, vector<8xf32>
// CHECK-NEXT: arith.cmpf ord
// CHECK: arith.cmpf ogt, {{.*}} : vector<8xf32>
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: memref.store {{.*}}[%c0]
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: memref.store {{.*}}[%c1]
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK-NOT: vector.reduction
// CHECK: memref.store {{.*}}[%c2]
func.func @lane_lists(%logits: tensor<?x16xf32>) -> (tensor<?x3xi32>, tensor<?x3xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = lane_lists>} {
  %s = moe.score sigmoid %logits : tensor<?x16xf32> -> tensor<?x16xf32>
  %ids = moe.topk %s k 3 : tensor<?x16xf32> -> tensor<?x3xi32>
  %w = moe.gather %s[%ids] : tensor<?x16xf32>, tensor<?x3xi32> -> tensor<?x3xf32>
  return %ids, %w : tensor<?x3xi32>, tensor<?x3xf32>
}

// -----

// The shared expert's gate: its [T, 1] logits (bf16 here) are an input row
// of one element, scored by the sigmoid in a masked chunk, checked with
// error code 11, and stored to the [T, 1] shared_gate output.
// CHECK-LABEL: func.func @shared_gate(
// CHECK-SAME: %[[X:arg[0-9]+]]: memref<?x1xbf16> {moe.kernel_arg = #moe.kernel_arg<name = "shared_gate_logits", role = tensor, dtype = bf16, shape = ["T", 1], access = read>}
// CHECK-SAME: %[[G:arg[0-9]+]]: memref<?x1xf32> {moe.kernel_arg = #moe.kernel_arg<name = "shared_gate", role = tensor, dtype = f32, shape = ["T", 1], access = write>}
// CHECK: %[[C11:.*]] = arith.constant 11 : i64
// CHECK: vector.maskedload %[[X]][%{{.*}}, %c0]
// CHECK: arith.extf %{{.*}} : vector<8xbf16> to vector<8xf32>
// CHECK: math.exp
// CHECK: memref.store %[[C11]]
// CHECK: vector.maskedstore %[[G]][%{{.*}}, %c0]
func.func @shared_gate(%logits: tensor<?x8xf32>, %x: tensor<?x1xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x1xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %g = moe.shared_gate %x : tensor<?x1xbf16> -> tensor<?x1xf32>
  return %ids, %w, %g : tensor<?x2xi32>, tensor<?x2xf32>, tensor<?x1xf32>
}

// -----

// The nvptx dispatch (a counting sort over a cooperative grid): a lane's
// rank among the lanes of its round holding the same expert, and their
// number, come from one match.any.sync and two population counts (in the
// count phase and again in the place phase), not from 31 shuffles. A grid
// of one block runs its own copy of the phases, with block barriers alone
// between them (no fence, no atomics) and its counters in shared memory
// (8 + 8 * 8 + 8 + 1 = 81 words); larger grids meet at grid barriers and
// count in the scratch buffer.
// CHECK-LABEL: func.func @parallel_dispatch(
// CHECK-SAME: %{{.*}}: memref<18444xi32> {moe.kernel_arg = #moe.kernel_arg<name = "scratch", role = scratch
// CHECK: %[[GRID:.*]] = gpu.grid_dim x
// CHECK: %[[ONE:.*]] = arith.cmpi eq, %[[GRID]], %c1 : index
// CHECK: scf.if %[[ONE]] {
// CHECK: %[[SHARED:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK: memref.view %[[SHARED]][%{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<81xi32, #gpu.address_space<workgroup>>
// CHECK-NOT: gpu.block_id
// CHECK-NOT: llvm.nvvm.membar.gl
// CHECK: %[[SAME:.*]] = llvm.call_intrinsic "llvm.nvvm.match.any.sync.i32"(%c-1_i32, %{{.*}}) : (i32, i32) -> i32
// CHECK: %[[BIT:.*]] = arith.shli %c1_i32, %{{.*}} : i32
// CHECK: %[[BELOW:.*]] = arith.subi %[[BIT]], %c1_i32 : i32
// CHECK: %[[EARLIER:.*]] = arith.andi %[[SAME]], %[[BELOW]] : i32
// CHECK: llvm.intr.ctpop(%[[EARLIER]])
// CHECK: llvm.intr.ctpop(%[[SAME]])
// CHECK-NOT: llvm.nvvm.membar.gl
// CHECK: gpu.barrier
// CHECK-NOT: llvm.nvvm.membar.gl
// CHECK: llvm.call_intrinsic "llvm.nvvm.match.any.sync.i32"
// CHECK-NOT: llvm.nvvm.membar.gl
// CHECK: } else {
// CHECK: gpu.block_id x
// CHECK: llvm.call_intrinsic "llvm.nvvm.match.any.sync.i32"
// CHECK: llvm.call_intrinsic "llvm.nvvm.membar.gl"
// CHECK: memref.atomic_rmw addi
// CHECK: llvm.call_intrinsic "llvm.nvvm.match.any.sync.i32"
// CHECK-NOT: llvm.call_intrinsic "llvm.nvvm.match.any.sync.i32"
func.func @parallel_dispatch(%ids: tensor<?x2xi32>) -> (tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>) attributes {moe.entry = "dispatch", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 4, topk = argmax_passes>} {
  %c, %o, %s, %p = moe.dispatch %ids experts 8 : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
  return %c, %o, %s, %p : tensor<8xi32>, tensor<9xi32>, tensor<?xi32>, tensor<?xi32>
}

// -----

// lane_lists on a row of more than 16 chunks a lane (22 chunks of 4): a
// first pass takes each lane's largest key; the k-th largest of those
// (k - 1 = 1 round drops the largest) bounds the picks. With no bound
// (-inf) the arg-max passes run; otherwise a second pass, 4 chunks a trip
// and the 2 chunks left after, inserts a chunk's keys at or above the
// bound into each lane's list of k only when some lane has one, and the
// lists are merged as the sorted ones are.
// CHECK-LABEL: func.func @wide_lane_lists(
// CHECK: %[[MAX:.*]] = scf.for %{{.*}} = %c0 to %c88 step %c4 iter_args(%{{.*}} = %{{.*}}) -> (vector<4xf32>) {
// CHECK: arith.cmpf ogt
// CHECK: vector.reduction <maximumf>, %[[MAX]]
// CHECK: vector.reduction <minsi>
// CHECK: %[[BOUND:.*]] = vector.reduction <maximumf>
// CHECK: %[[UNBOUNDED:.*]] = arith.cmpf oeq, %[[BOUND]], %{{.*}} : f32
// CHECK: scf.if %[[UNBOUNDED]] {
// CHECK: scf.for %{{.*}} = %c0 to %c2 step %c1
// CHECK: } else {
// CHECK: %[[SPLAT:.*]] = vector.splat %[[BOUND]] : vector<4xf32>
// CHECK: scf.for %[[E0:.*]] = %c0 to %c80 step %c16 iter_args({{.*}}) -> (vector<4xf32>, vector<4xf32>, vector<4xi32>, vector<4xi32>) {
// CHECK: %[[KEYS:.*]] = vector.load %{{.*}}[%[[E0]]] : memref<88xf32>, vector<4xf32>
// CHECK: %[[CANDIDATE:.*]] = arith.cmpf oge, %[[KEYS]], %[[SPLAT]] : vector<4xf32>
// CHECK: %[[ANY:.*]] = vector.reduction <or>, %[[CANDIDATE]]
// CHECK: scf.if %[[ANY]] -> (vector<4xf32>, vector<4xf32>, vector<4xi32>, vector<4xi32>) {
// CHECK: arith.select %[[CANDIDATE]]
// CHECK-COUNT-2: arith.cmpf ogt
// CHECK: } else {
// CHECK-COUNT-3: vector.reduction <or>
// CHECK: vector.load %{{.*}}[%c80]
// CHECK: vector.load %{{.*}}[%c84]
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: memref.store {{.*}}[%c0]
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <minsi>
// CHECK: memref.store {{.*}}[%c1]
func.func @wide_lane_lists(%logits: tensor<?x88xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 4, tokens_per_task = 64, topk = lane_lists>} {
  %s = moe.score sigmoid %logits : tensor<?x88xf32> -> tensor<?x88xf32>
  %ids = moe.topk %s k 2 : tensor<?x88xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x88xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Permute: one token fills the k permuted rows t*k .. t*k+k-1; each row's
// slot is loaded and validated once (code 9), then (on the host) each row
// is copied in turn, in whole chunks and one masked tail.
// CHECK-LABEL: func.func @permute(
// CHECK-SAME: %[[H:arg[0-9]+]]: memref<?x?xbf16> {moe.kernel_arg = #moe.kernel_arg<name = "hidden", role = tensor, dtype = bf16, shape = ["T", "H"], access = read>}, %[[S:arg[0-9]+]]: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "sorted_slots", {{[^}]*}}}, %[[P:arg[0-9]+]]: memref<?x?xbf16> {moe.kernel_arg = #moe.kernel_arg<name = "permuted", role = tensor, dtype = bf16, shape = ["T*k", "H"], access = write>}, %[[ERR:arg[0-9]+]]: memref<5xi64> {{{[^}]*}}}, %{{.*}}: index {{{[^}]*}}}, %{{.*}}: index {{{[^}]*}}})
// CHECK: scf.for %[[T:arg[0-9]+]] =
// CHECK: %[[SLOT0:.*]] = memref.load %[[S]][%{{.*}}] : memref<?xi32>
// CHECK: memref.store %c9_i64, %[[ERR]][%c0]
// CHECK: %[[SLOT1:.*]] = memref.load %[[S]][%{{.*}}] : memref<?xi32>
// CHECK: memref.store %c9_i64, %[[ERR]][%c0]
// CHECK: scf.for %[[E0:arg[0-9]+]] = %c0 to %{{.*}} step %c16 {
// CHECK-NEXT: %[[A:.*]] = vector.load %[[H]][%{{.*}}, %[[E0]]] : memref<?x?xbf16>, vector<16xbf16>
// CHECK-NEXT: vector.store %[[A]], %[[P]]
// CHECK-NEXT: }
// CHECK: vector.create_mask %{{.*}} : vector<16xi1>
// CHECK: vector.maskedload %[[H]]
// CHECK: vector.maskedstore %[[P]]
// CHECK: scf.for %[[E1:arg[0-9]+]] = %c0 to %{{.*}} step %c16 {
// CHECK-NEXT: %[[B:.*]] = vector.load %[[H]][%{{.*}}, %[[E1]]] : memref<?x?xbf16>, vector<16xbf16>
// CHECK-NEXT: vector.store %[[B]], %[[P]]
// CHECK-NEXT: }
func.func @permute(%hidden: tensor<?x?xbf16>, %slots: tensor<?xi32>) -> tensor<?x?xbf16> attributes {moe.entry = "permute", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 16, tokens_per_task = 64, topk = argmax_passes>} {
  %p = moe.permute %hidden[%slots] k 2 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  return %p : tensor<?x?xbf16>
}

// -----

// Combine: the weights first (dim 0 is T), positions validated once (code
// 10), then per chunk an f32 fused multiply-add chain in slot order,
// rounded once to the row type.
// CHECK-LABEL: func.func @combine(
// CHECK-SAME: %[[W:arg[0-9]+]]: memref<?x2xf32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", {{[^}]*}}}, %[[POS:arg[0-9]+]]: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "slot_positions", {{[^}]*}}}, %[[O:arg[0-9]+]]: memref<?x?xf16> {moe.kernel_arg = #moe.kernel_arg<name = "expert_output", role = tensor, dtype = f16, shape = ["T*k", "H"], access = read>}, %[[C:arg[0-9]+]]: memref<?x?xf16> {moe.kernel_arg = #moe.kernel_arg<name = "combined", role = tensor, dtype = f16, shape = ["T", "H"], access = write>}
// CHECK: memref.store %c10_i64
// CHECK: memref.store %c10_i64
// CHECK: %[[W0:.*]] = memref.load %[[W]][%[[T:.*]], %c0] : memref<?x2xf32>
// CHECK: scf.for %[[E0:arg[0-9]+]] = %c0 to %{{.*}} step %c8 {
// CHECK: %[[X0:.*]] = arith.extf %{{.*}} : vector<8xf16> to vector<8xf32>
// CHECK: %[[X1:.*]] = arith.extf %{{.*}} : vector<8xf16> to vector<8xf32>
// CHECK-NEXT: %[[S0:.*]] = math.fma %{{.*}}, %[[X0]], %cst{{.*}} : vector<8xf32>
// CHECK-NEXT: %[[S1:.*]] = math.fma %{{.*}}, %[[X1]], %[[S0]] : vector<8xf32>
// CHECK-NEXT: %[[R:.*]] = arith.truncf %[[S1]] : vector<8xf32> to vector<8xf16>
// CHECK-NEXT: vector.store %[[R]], %[[C]][%{{.*}}, %[[E0]]]
// CHECK: vector.maskedstore %[[C]]
func.func @combine(%w: tensor<?x2xf32>, %pos: tensor<?xi32>, %out: tensor<?x?xf16>) -> tensor<?x?xf16> attributes {moe.entry = "combine", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = argmax_passes>} {
  %c = moe.combine %out[%pos] weights %w : tensor<?x?xf16>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x?xf16>
  return %c : tensor<?x?xf16>
}

// -----

func.func @permute_not_alone(%hidden: tensor<?x?xbf16>, %slots: tensor<?xi32>) -> (tensor<?x?xbf16>, tensor<?x?xbf16>) attributes {moe.entry = "permute", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 16, tokens_per_task = 64, topk = argmax_passes>} {
  // expected-error @+1 {{'moe.permute' op moves whole rows of a run-time size and must be alone in its entry point, its result returned}}
  %p = moe.permute %hidden[%slots] k 2 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  %q = moe.permute %hidden[%slots] k 2 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  return %p, %q : tensor<?x?xbf16>, tensor<?x?xbf16>
}
