// RUN: moegen-opt %s -split-input-file -convert-moe-to-loops -canonicalize -cse -convert-moe-loops-to-gpu -canonicalize | FileCheck %s

// Permute and combine on warp lanes: a warp per token (vector width 32),
// four tokens per block, no shared memory. Chunk loads and stores become
// one element per lane at e0 + lane (a coalesced warp-wide access), and the
// run-time tail's vector.create_mask becomes `lane < rest` (signed, as the
// mask's bound is).

// CHECK-LABEL: gpu.func @permute(
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 128, tokens_per_block = 4, dynamic_shared_memory_bytes = 0, lanes_per_token = 32>
// CHECK: %[[LANE:.*]] = gpu.lane_id
// CHECK: scf.for %[[E0:arg[0-9]+]] = %c0 to %{{.*}} step %c32 {
// CHECK-NEXT: %[[AT:.*]] = arith.addi %[[E0]], %[[LANE]] : index
// CHECK-NEXT: %[[X:.*]] = memref.load %{{.*}}[%{{.*}}, %[[AT]]] : memref<?x?xbf16>
// CHECK-NEXT: %[[TO:.*]] = arith.addi %[[E0]], %[[LANE]] : index
// CHECK-NEXT: memref.store %[[X]], %{{.*}}[%{{.*}}, %[[TO]]] : memref<?x?xbf16>
// CHECK: %[[REST:.*]] = arith.subi
// CHECK: scf.if
// CHECK: %[[MASK:.*]] = arith.cmpi slt, %[[LANE]], %[[REST]] : index
// CHECK-NOT: gpu.dynamic_shared_memory
// CHECK: gpu.return
func.func @permute(%hidden: tensor<?x?xbf16>, %slots: tensor<?xi32>) -> tensor<?x?xbf16> attributes {moe.entry = "permute", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 4, topk = argmax_passes>} {
  %p = moe.permute %hidden[%slots] k 1 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  return %p : tensor<?x?xbf16>
}

// -----

// CHECK-LABEL: gpu.func @combine(
// CHECK: scf.for %[[E0:arg[0-9]+]] = %c0 to %{{.*}} step %c32 {
// CHECK: %[[X0:.*]] = arith.extf %{{.*}} : bf16 to f32
// CHECK: %[[X1:.*]] = arith.extf %{{.*}} : bf16 to f32
// CHECK-NEXT: %[[S0:.*]] = math.fma %{{.*}}, %[[X0]], %{{.*}} : f32
// CHECK-NEXT: %[[S1:.*]] = math.fma %{{.*}}, %[[X1]], %[[S0]] : f32
// CHECK-NEXT: %[[R:.*]] = arith.truncf %[[S1]] : f32 to bf16
// CHECK: memref.store %[[R]]
// CHECK: gpu.return
func.func @combine(%w: tensor<?x2xf32>, %pos: tensor<?xi32>, %out: tensor<?x?xbf16>) -> tensor<?x?xbf16> attributes {moe.entry = "combine", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 4, topk = argmax_passes>} {
  %c = moe.combine %out[%pos] weights %w : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x?xbf16>
  return %c : tensor<?x?xbf16>
}

// -----

// Replay scores by need on warp lanes: the row of logits is only checked,
// and lane j of the token's segment loads the logit of pick j (lanes past
// k load the row's first logit and keep the pass-through 0) and scores it;
// the weights are one chunk store, lane j's element its own.
// CHECK-LABEL: gpu.func @replay(
// CHECK-NOT: math.exp
// CHECK: %[[PICK:.*]] = memref.load %{{.*}}[%[[LANE:.*]]] : memref<8xi32, #gpu.address_space<workgroup>>
// CHECK: %[[LIVE:.*]] = arith.cmpi ult, %[[LANE]], %c2 : index
// CHECK: %[[OFFSET:.*]] = arith.select %[[LIVE]], %{{.*}}, %c0 : index
// CHECK: %[[LOGIT:.*]] = memref.load %{{.*}}[%{{.*}}, %[[OFFSET]]] : memref<?x64xf32>
// CHECK: arith.select %[[LIVE]], %[[LOGIT]], %{{.*}} : f32
// CHECK: math.exp
// CHECK-NOT: math.exp
// CHECK: gpu.return
func.func @replay(%logits: tensor<?x64xf32>, %forced: tensor<?x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "replay", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 8, tokens_per_task = 4, topk = lane_lists>} {
  %s = moe.score sigmoid %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %ids = moe.forced_select %forced experts 64 : tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x64xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Tokens across the lanes on a warp (topk = token_lanes, up to 64
// experts): a segment of 32 lanes takes 32 consecutive tokens clipped to T,
// a token a thread. The block routes 128 tokens (lanes_per_token 1), asks
// ptxas for 8 blocks an SM, and keeps one set of stack rows per segment
// for the tokens it routes one by one. Each column is a load per lane from
// the flattened logits (lane i's token's element), each result slot a
// store per lane into its token's row.
// CHECK-LABEL: gpu.func @mixtral(
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 128, tokens_per_block = 128, dynamic_shared_memory_bytes = 1536, lanes_per_token = 1>
// CHECK-SAME: nvvm.minctasm = 8 : i32
// CHECK: %[[SEGMENT:.*]] = arith.divui %{{.*}}, %c32 : index
// CHECK: %[[SKIP:.*]] = arith.muli %[[SEGMENT]], %c32 : index
// CHECK: %[[BLOCK:.*]] = arith.muli %{{.*}}, %c128 : index
// CHECK: %[[FIRST:.*]] = arith.addi %[[BLOCK]], %[[SKIP]] : index
// CHECK: %[[BEGIN:.*]] = arith.minui %[[FIRST]], %[[T:.*]] : index
// CHECK: %[[LAST:.*]] = arith.addi %[[FIRST]], %c32 : index
// CHECK: %[[END:.*]] = arith.minui %[[LAST]], %[[T]] : index
// CHECK: scf.for %{{.*}} = %[[BEGIN]] to %{{.*}} step %c32 {
// CHECK: %[[FLAT:.*]] = memref.collapse_shape %{{.*}} {{\[\[}}0, 1]] : memref<?x8xbf16> into memref<?xbf16>
// CHECK-COUNT-8: memref.load %[[FLAT]][%{{.*}}] : memref<?xbf16>
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<?xi32>
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<?xi32>
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<?xf32>
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<?xf32>
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[END]] step %c1 {
// CHECK: gpu.return
func.func @mixtral(%logits: tensor<?x8xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 4, topk = token_lanes>} {
  %s = moe.score softmax %logits : tensor<?x8xbf16> -> tensor<?x8xf32>
  %ids = moe.topk %s k 2 : tensor<?x8xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
