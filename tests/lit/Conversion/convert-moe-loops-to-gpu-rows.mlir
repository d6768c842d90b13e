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
