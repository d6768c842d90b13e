// RUN: moegen-opt %s -split-input-file -convert-moe-loops-to-gpu -verify-diagnostics | FileCheck %s

// A row kernel from convert-moe-to-loops (vector width 32): the bare-pointer
// ABI (pointer + dynamic sizes per memref, i64 per index), one token per
// warp, lanes from vector lanes, a stack row in this warp's slice of dynamic
// shared memory.
// CHECK: module attributes {gpu.container_module}
// CHECK: gpu.module @moe_kernels
// CHECK-LABEL: gpu.func @route(
// Each parameter carries the ABI stamp of its memref, or names the size it
// gives; the token range is gone.
// CHECK-SAME: %[[LOGITS:arg[0-9]+]]: !llvm.ptr {moe.kernel_arg = #moe.kernel_arg<name = "logits", role = tensor, dtype = f32, shape = ["T", 40], access = read>},
// CHECK-SAME: %[[T:arg[0-9]+]]: i64 {moe.kernel_size = #moe.kernel_size<of = "logits", dim = 0>},
// CHECK-SAME: %{{.*}}: !llvm.ptr {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", {{.*}}>}, %{{.*}}: i64 {moe.kernel_size = #moe.kernel_size<of = "topk_weights", dim = 0>},
// CHECK-SAME: %[[ERR:arg[0-9]+]]: !llvm.ptr {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}) kernel
// CHECK-SAME: known_block_size = array<i32: 64, 1, 1>
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 64, tokens_per_block = 2, dynamic_shared_memory_bytes = 256, lanes_per_token = 32>
// The descriptor of logits rebuilt from the pointer and T.
// CHECK: llvm.insertvalue %[[LOGITS]]
// CHECK: llvm.insertvalue %[[T]], %{{.*}}[3, 0]
// CHECK: builtin.unrealized_conversion_cast %{{.*}} : !llvm.struct<(ptr, ptr, i64, array<2 x i64>, array<2 x i64>)> to memref<?x40xf32>
// CHECK: %[[LANE:.*]] = gpu.lane_id
// CHECK: %[[TID:.*]] = gpu.thread_id x
// CHECK: %[[WARP:.*]] = arith.divui %[[TID]], %c32
// CHECK: %[[BLOCK:.*]] = gpu.block_id x
// CHECK: %[[BASE:.*]] = arith.muli %[[BLOCK]], %c2
// CHECK: %[[ANY:.*]] = arith.addi %[[BASE]], %[[WARP]]
// A warp past the last token routes the last token again: the token loop
// always has one trip.
// CHECK: %[[LASTTOKEN:.*]] = arith.subi %{{.*}}, %c1
// CHECK: %[[TOKEN:.*]] = arith.minui %[[ANY]], %[[LASTTOKEN]]
// CHECK: %[[END:.*]] = arith.addi %[[TOKEN]], %c1
// CHECK: %[[SHARED:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK: %[[SLICE:.*]] = arith.muli %[[WARP]], %c128
// CHECK: memref.view %[[SHARED]][%{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32xf32, #gpu.address_space<workgroup>>
// CHECK: scf.for %[[TOK:.*]] = %[[TOKEN]] to %[[END]]
// A full chunk: lane l loads element e0 + l.
// CHECK: scf.for %[[E0:.*]] = %{{.*}} to %{{.*}} step
// CHECK: %[[E:.*]] = arith.addi %[[E0]], %[[LANE]]
// CHECK: memref.load %{{.*}}[%[[TOK]], %[[E]]] : memref<?x40xf32>
// The masked tail (8 lanes) reads in bounds and keeps the pass-through.
// CHECK: %[[VALID:.*]] = arith.cmpi ult, %[[LANE]], %c8
// CHECK: arith.select %[[VALID]]
// CHECK: memref.load
// CHECK: arith.select %[[VALID]]
// Each lane stores and reads back its own element of the shared row: no
// fence.
// CHECK-NOT: nvvm.bar.warp.sync
// CHECK: %[[AT:.*]] = arith.addi %{{.*}}, %[[LANE]]
// CHECK-NEXT: memref.store %{{.*}}, %{{.*}}[%[[AT]]] : memref<32xf32, #gpu.address_space<workgroup>>
// CHECK-NOT: nvvm.bar.warp.sync
// The reduction is a butterfly of five shuffles over the whole warp.
// CHECK-COUNT-5: nvvm.shfl.sync  bfly %c-1_i32, %{{.*}}, %{{.*}}, %c31_i32{{.*}} : f32 -> f32
// CHECK: gpu.return
func.func @route(%logits: memref<?x40xf32> {moe.kernel_arg = #moe.kernel_arg<name = "logits", role = tensor, dtype = f32, shape = ["T", 40], access = read>}, %out: memref<?x1xf32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", role = tensor, dtype = f32, shape = ["T", 1], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 2, topk = argmax_passes>} {
  %row = memref.alloca() : memref<32xf32>
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c32 = arith.constant 32 : index
  %ninf = arith.constant dense<0xFF800000> : vector<32xf32>
  scf.for %t = %t0 to %t1 step %c1 {
    %m = scf.for %e0 = %c0 to %c32 step %c32 iter_args(%acc = %ninf) -> (vector<32xf32>) {
      %x = vector.load %logits[%t, %e0] : memref<?x40xf32>, vector<32xf32>
      %y = arith.maximumf %acc, %x : vector<32xf32>
      scf.yield %y : vector<32xf32>
    }
    %mask = vector.constant_mask [8] : vector<32xi1>
    %tail = vector.maskedload %logits[%t, %c32], %mask, %ninf : memref<?x40xf32>, vector<32xi1>, vector<32xf32> into vector<32xf32>
    %both = arith.maximumf %m, %tail : vector<32xf32>
    vector.store %both, %row[%c0] : memref<32xf32>, vector<32xf32>
    %back = vector.load %row[%c0] : memref<32xf32>, vector<32xf32>
    %max = vector.reduction <maximumf>, %back : vector<32xf32> into f32
    memref.store %max, %out[%t, %c0] : memref<?x1xf32>
  }
  return
}

// -----

// Lane-id vectors (e0 + [0, 1, ..., 31]) become e0 + lane; an i1 OR
// reduction is one ballot, its segment's bits (here the whole warp) tested
// against zero: no widening, no shuffles.
// CHECK-LABEL: gpu.func @lanes(
// CHECK: %[[LANE:.*]] = gpu.lane_id
// CHECK: arith.index_cast %[[LANE]] : index to i32
// CHECK-NOT: gpu.shuffle
// CHECK-NOT: nvvm.redux.sync
// CHECK: %[[BALLOT:.*]] = nvvm.vote.ballot.sync %c-1_i32, %{{.*}} : i32
// CHECK: %[[MINE:.*]] = arith.andi %[[BALLOT]], %c-1_i32 : i32
// CHECK: arith.cmpi ne, %[[MINE]], %{{.*}} : i32
func.func @lanes(%ids: memref<?x1xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 1], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 1, topk = argmax_passes>} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %steps = arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]> : vector<32xi32>
  %five = arith.constant dense<5> : vector<32xi32>
  scf.for %t = %t0 to %t1 step %c1 {
    %is = arith.cmpi eq, %steps, %five : vector<32xi32>
    %any = vector.reduction <or>, %is : vector<32xi1> into i1
    %v = arith.extui %any : i1 to i32
    memref.store %v, %ids[%t, %c0] : memref<?x1xi32>
  }
  return
}

// -----

// A segment of 8 lanes: the ballot names the whole warp (converged code)
// and an AND tests the segment's own bits, ((1 << 8) - 1) << (lane & -8).
// CHECK-LABEL: gpu.func @segment_vote(
// CHECK: %[[SHIFT:.*]] = arith.andi %{{.*}}, %c-8_i32 : i32
// CHECK: %[[MEMBERS:.*]] = arith.shli %c255_i32, %[[SHIFT]] : i32
// CHECK: %[[BALLOT:.*]] = nvvm.vote.ballot.sync %c-1_i32, %{{.*}} : i32
// CHECK: %[[MINE:.*]] = arith.andi %[[BALLOT]], %[[MEMBERS]] : i32
// CHECK: arith.cmpi eq, %[[MINE]], %[[MEMBERS]] : i32
func.func @segment_vote(%ids: memref<?x1xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 1], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 8, tokens_per_task = 4, topk = argmax_passes>} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %steps = arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7]> : vector<8xi32>
  %five = arith.constant dense<5> : vector<8xi32>
  scf.for %t = %t0 to %t1 step %c1 {
    %is = arith.cmpi eq, %steps, %five : vector<8xi32>
    %all = vector.reduction <and>, %is : vector<8xi1> into i1
    %v = arith.extui %all : i1 to i32
    memref.store %v, %ids[%t, %c0] : memref<?x1xi32>
  }
  return
}

// -----

// Host kernels are left alone, and no gpu.module appears.
// CHECK: module {
// CHECK-NEXT: func.func @host(
func.func @host(%ids: memref<?x1xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 1], access = write>}, %err: memref<5xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [5], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 1, topk = argmax_passes>} {
  return
}

// -----

// The schedule's own verifier: a block is whole warps.
// expected-error @+1 {{#moe.kernel_config: nvptx blocks are whole warps of at most 1024 threads: tokens_per_task * vector_width = 1 * 8 = 8}}
func.func @narrow(%ids: memref<?x1xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 1], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 8, tokens_per_task = 1, topk = argmax_passes>} {
  return
}

// -----

func.func @shuffle_of_vectors(%ids: memref<?x32xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 32], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 1, topk = argmax_passes>} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.for %t = %t0 to %t1 step %c1 {
    %v = vector.load %ids[%t, %c0] : memref<?x32xi32>, vector<32xi32>
    // Only xor permutations of one vector are warp shuffles.
    // expected-error @+1 {{'vector.shuffle' op only an xor permutation of one vector of f32 or i32 lanes has a warp-shuffle lowering}}
    %s = vector.shuffle %v, %v [1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] : vector<32xi32>, vector<32xi32>
    vector.store %s, %ids[%t, %c0] : memref<?x32xi32>, vector<32xi32>
  }
  return
}

// -----

// The dispatch kernel spans the grid of a cooperative launch: no token
// range, blocks of 256 threads, at most dispatchMaxBlocks(4) = 256 of them,
// and dispatchSharedBytes(4) = 4 * (8 + 8 * 4 + 4 + 1) = 180 bytes of
// shared memory for a one-block grid's counters.
// CHECK-LABEL: gpu.func @dispatch(
// CHECK-SAME: %arg9: !llvm.ptr {moe.kernel_arg = #moe.kernel_arg<name = "scratch", role = scratch
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 256, tokens_per_block = 0, dynamic_shared_memory_bytes = 180, max_blocks = 256, slots_per_block = 2048>
func.func @dispatch(%ids: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 2], access = read>}, %counts: memref<4xi32> {moe.kernel_arg = #moe.kernel_arg<name = "expert_counts", role = tensor, dtype = i32, shape = [4], access = write>}, %offsets: memref<5xi32> {moe.kernel_arg = #moe.kernel_arg<name = "expert_offsets", role = tensor, dtype = i32, shape = [5], access = write>}, %sorted: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "sorted_slots", role = tensor, dtype = i32, shape = ["T*k"], access = write>}, %positions: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "slot_positions", role = tensor, dtype = i32, shape = ["T*k"], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %scratch: memref<10242xi32> {moe.kernel_arg = #moe.kernel_arg<name = "scratch", role = scratch, dtype = i32, shape = [10242], access = readwrite>}) attributes {moe.entry = "dispatch", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 4, topk = argmax_passes>} {
  return
}

// -----

// Kernels come from convert-moe-to-loops: every argument has its ABI stamp.
// expected-error @+1 {{'func.func' op argument #1 has no 'moe.kernel_arg': kernels come from convert-moe-to-loops}}
func.func @unstamped(%ids: memref<?x1xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 1], access = write>}, %err: memref<6xi64>, %t0: index, %t1: index) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 1, topk = argmax_passes>} {
  return
}

// -----

// An xor permutation of one vector's lanes is a warp xor shuffle; a lane
// constant that sums over the lane's bits (lane & 8 != 0, a lane's group
// in a transposed reduction) is computed from the lane id.
// CHECK-LABEL: gpu.func @xor_permutation(
// CHECK: %[[LANE:.*]] = gpu.lane_id
// CHECK: %[[LANE32:.*]] = arith.index_cast %[[LANE]] : index to i32
// CHECK: arith.andi %[[LANE32]], %c8_i32
// CHECK: arith.cmpi ne
// CHECK: %[[UPPER:.*]] = arith.cmpi ne
// CHECK: %[[SHUFFLED:.*]] = nvvm.shfl.sync  bfly %c-1_i32, %[[V:.*]], %c16_i32{{.*}}, %c31_i32 : i32 -> i32
// CHECK: arith.select %[[UPPER]], %[[SHUFFLED]], %[[V]] : i32
func.func @xor_permutation(%ids: memref<?x32xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 32], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 1, topk = argmax_passes>} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %upper = arith.constant dense<[false, false, false, false, false, false, false, false, true, true, true, true, true, true, true, true, false, false, false, false, false, false, false, false, true, true, true, true, true, true, true, true]> : vector<32xi1>
  scf.for %t = %t0 to %t1 step %c1 {
    %v = vector.load %ids[%t, %c0] : memref<?x32xi32>, vector<32xi32>
    %s = vector.shuffle %v, %v [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] : vector<32xi32>, vector<32xi32>
    %m = arith.select %upper, %s, %v : vector<32xi1>, vector<32xi32>
    vector.store %m, %ids[%t, %c0] : memref<?x32xi32>, vector<32xi32>
  }
  return
}

// -----

// A token on 8 lanes, 4 tokens per warp, 16 per block: the lane within the
// token's segment, the token from the thread, a shared slice per token.
// In converged code (the token loop has one trip in every segment) the
// collectives name the whole warp and shfl.sync's c, (32 - 8) << 8 | 31,
// keeps each exchange within its segment; an integer reduction there is a
// butterfly too (redux.sync has no width). Under a token-dependent branch
// they name the segment's lanes, 0xFF << (lane & ~7). A constant lane
// interval [2, 6) is two compares.
// CHECK-LABEL: gpu.func @segments(
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 128, tokens_per_block = 16, dynamic_shared_memory_bytes = 512, lanes_per_token = 8>
// CHECK: %[[LANEID:.*]] = gpu.lane_id
// CHECK: %[[TID:.*]] = gpu.thread_id x
// CHECK: %[[LANE:.*]] = arith.andi %[[LANEID]], %c7
// CHECK: %[[SLOT:.*]] = arith.divui %[[TID]], %c8
// CHECK: %[[LANEID32:.*]] = arith.index_cast %[[LANEID]] : index to i32
// CHECK: %[[FIRST:.*]] = arith.andi %[[LANEID32]], %c-8_i32
// CHECK: %[[MASK:.*]] = arith.shli %c255_i32, %[[FIRST]]
// CHECK: arith.muli %{{.*}}, %c16
// CHECK: arith.addi %{{.*}}, %[[SLOT]]
// CHECK: arith.muli %[[SLOT]], %c32
// CHECK: arith.cmpi ult, %[[LANE]], %c6
// CHECK: arith.cmpi uge, %[[LANE]], %c2
// CHECK-NOT: nvvm.bar.warp.sync
// CHECK: memref.store
// CHECK-NOT: nvvm.bar.warp.sync
// CHECK-COUNT-3: nvvm.shfl.sync  bfly %c-1_i32{{.*}}, %{{.*}}, %{{.*}}, %c6175_i32{{.*}} : f32 -> f32
// CHECK-COUNT-3: nvvm.shfl.sync  bfly %c-1_i32{{.*}}, %{{.*}}, %{{.*}}, %c6175_i32{{.*}} : i32 -> i32
// CHECK: scf.if
// CHECK: nvvm.redux.sync  max %{{.*}}, %[[MASK]] : i32 -> i32
// CHECK: nvvm.shfl.sync  bfly %[[MASK]], %{{.*}}, %{{.*}}, %c6175_i32{{.*}} : f32 -> f32
func.func @segments(%logits: memref<?x8xf32> {moe.kernel_arg = #moe.kernel_arg<name = "logits", role = tensor, dtype = f32, shape = ["T", 8], access = read>}, %out: memref<?x2xf32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", role = tensor, dtype = f32, shape = ["T", 2], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 8, tokens_per_task = 16, topk = argmax_passes>} {
  %row = memref.alloca() : memref<8xf32>
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant dense<0.0> : vector<8xf32>
  %fzero = arith.constant 0.0 : f32
  %middle = arith.constant dense<[false, false, true, true, true, true, false, false]> : vector<8xi1>
  %ids = arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7]> : vector<8xi32>
  scf.for %t = %t0 to %t1 step %c1 {
    %x = vector.load %logits[%t, %c0] : memref<?x8xf32>, vector<8xf32>
    %kept = arith.select %middle, %x, %zero : vector<8xi1>, vector<8xf32>
    vector.store %kept, %row[%c0] : memref<8xf32>, vector<8xf32>
    %back = vector.load %row[%c0] : memref<8xf32>, vector<8xf32>
    %max = vector.reduction <maximumf>, %back : vector<8xf32> into f32
    %top = vector.reduction <maxsi>, %ids : vector<8xi32> into i32
    %positive = arith.cmpf ogt, %max, %fzero : f32
    scf.if %positive {
      %again = vector.reduction <maxsi>, %ids : vector<8xi32> into i32
      %sum = vector.reduction <maximumf>, %x : vector<8xf32> into f32
      %againf = arith.sitofp %again : i32 to f32
      %both = arith.addf %againf, %sum : f32
      memref.store %both, %out[%t, %c1] : memref<?x2xf32>
    }
    %topf = arith.sitofp %top : i32 to f32
    memref.store %max, %out[%t, %c0] : memref<?x2xf32>
  }
  return
}

// -----

// expected-error @+1 {{#moe.kernel_config: nvptx kernels spread a token over at most a warp: vector_width = 64 must be at most 32}}
func.func @too_wide(%ids: memref<?x1xi32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_ids", role = tensor, dtype = i32, shape = ["T", 1], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 64, tokens_per_task = 1, topk = argmax_passes>} {
  return
}

// -----

// Segment barriers go only where a lane may read or overwrite another
// lane's element of a shared row since the last one. Chunk accesses at
// multiples of the width touch each lane's own elements; scalar accesses
// (every lane, one element) touch anyone's.
// CHECK-LABEL: gpu.func @fences(
// Own store, then a scalar load of the row: one barrier, before the load.
// CHECK: scf.for
// CHECK-NOT: nvvm.bar.warp.sync
// CHECK: memref.store %{{.*}} : memref<8xf32, #gpu.address_space<workgroup>>
// CHECK-NEXT: nvvm.bar.warp.sync %c-1_i32
// CHECK-NEXT: memref.load %{{.*}}[%[[C0:.*]]] : memref<8xf32, #gpu.address_space<workgroup>>
// Scalar stores to distinct constant elements need nothing between them;
// reading one back does.
// CHECK-NEXT: memref.store %{{.*}}[%[[C0]]] : memref<8xf32, #gpu.address_space<workgroup>>
// CHECK-NEXT: memref.store %{{.*}}[%[[C1:.*]]] : memref<8xf32, #gpu.address_space<workgroup>>
// CHECK-NEXT: nvvm.bar.warp.sync %c-1_i32
// CHECK-NEXT: memref.load %{{.*}}[%[[C1]]] : memref<8xf32, #gpu.address_space<workgroup>>
// A loop storing element j of trip j after element 1 was read: one barrier
// before it. Then a loop reading element k of trip k: one barrier before
// it, none in the trips (a trip's element is no other trip's).
// CHECK: nvvm.bar.warp.sync %c-1_i32
// CHECK-NEXT: scf.for %[[J:.*]] = %{{.*}} to %{{.*}} step
// CHECK-NEXT: memref.store %{{.*}}[%[[J]]] : memref<8xf32
// CHECK-NEXT: }
// CHECK-NEXT: nvvm.bar.warp.sync %c-1_i32
// CHECK-NEXT: scf.for %[[K:.*]] = %{{.*}} to %{{.*}} step
// CHECK-NEXT: memref.load %{{.*}}[%[[K]]] : memref<8xf32
// CHECK-NOT: nvvm.bar.warp.sync
// CHECK: }
// Element 0 read in every trip while trip l stores element l: trip 0's
// store meets later trips' reads, and each trip's read meets its store.
// CHECK-NEXT: nvvm.bar.warp.sync %c-1_i32
// CHECK-NEXT: scf.for %[[L:.*]] = %{{.*}} to %{{.*}} step
// CHECK-NEXT: nvvm.bar.warp.sync %c-1_i32
// CHECK-NEXT: memref.load %{{.*}}[%{{.*}}] : memref<8xf32
// CHECK: nvvm.bar.warp.sync %c-1_i32
// CHECK-NEXT: memref.store %{{.*}}[%[[L]]] : memref<8xf32
// CHECK-NEXT: }
// CHECK: gpu.return
func.func @fences(%logits: memref<?x8xf32> {moe.kernel_arg = #moe.kernel_arg<name = "logits", role = tensor, dtype = f32, shape = ["T", 8], access = read>}, %out: memref<?x2xf32> {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", role = tensor, dtype = f32, shape = ["T", 2], access = write>}, %err: memref<6xi64> {moe.kernel_arg = #moe.kernel_arg<name = "error", role = error_record, dtype = i64, shape = [6], access = readwrite>}, %t0: index {moe.kernel_arg = #moe.kernel_arg<name = "token_begin", role = token_begin, dtype = i64, shape = [], access = read>}, %t1: index {moe.kernel_arg = #moe.kernel_arg<name = "token_end", role = token_end, dtype = i64, shape = [], access = read>}) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 8, tokens_per_task = 4, topk = argmax_passes>} {
  %row = memref.alloca() : memref<8xf32>
  %copy = memref.alloca() : memref<8xf32>
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  scf.for %t = %t0 to %t1 step %c1 {
    %x = vector.load %logits[%t, %c0] : memref<?x8xf32>, vector<8xf32>
    vector.store %x, %row[%c0] : memref<8xf32>, vector<8xf32>
    %first = memref.load %row[%c0] : memref<8xf32>
    memref.store %first, %copy[%c0] : memref<8xf32>
    memref.store %first, %copy[%c1] : memref<8xf32>
    %second = memref.load %copy[%c1] : memref<8xf32>
    memref.store %second, %out[%t, %c0] : memref<?x2xf32>
    scf.for %j = %c0 to %c8 step %c1 {
      memref.store %second, %copy[%j] : memref<8xf32>
    }
    %sum = scf.for %k = %c0 to %c8 step %c1 iter_args(%acc = %second) -> (f32) {
      %v = memref.load %copy[%k] : memref<8xf32>
      %s = arith.addf %acc, %v : f32
      scf.yield %s : f32
    }
    scf.for %l = %c0 to %c8 step %c1 {
      %v = memref.load %copy[%c0] : memref<8xf32>
      %w = arith.addf %v, %sum : f32
      memref.store %w, %copy[%l] : memref<8xf32>
    }
    memref.store %sum, %out[%t, %c1] : memref<?x2xf32>
  }
  return
}
