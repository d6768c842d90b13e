// RUN: moegen-opt %s -split-input-file -moe-kernel-config="target=nvptx" -moe-fuse-dispatch | FileCheck %s
// RUN: moegen-opt %s -split-input-file -moe-kernel-config="target=nvptx" -moe-fuse-dispatch="max-slots=64" | FileCheck %s --check-prefix=SMALL
// RUN: moegen-opt %s -split-input-file -moe-kernel-config="target=nvptx" -moe-fuse-dispatch="max-slots=0" | FileCheck %s --check-prefix=NONE
// RUN: moegen-opt %s -split-input-file -moe-kernel-config -moe-fuse-dispatch | FileCheck %s --check-prefix=HOST
// RUN: %expect-exit 1 moegen-opt %s -split-input-file -moe-kernel-config="target=nvptx" -moe-fuse-dispatch="max-slots=4096" 2>&1 | FileCheck %s --check-prefix=TOO-MANY
// RUN: moegen-opt %s -split-input-file -moe-kernel-config="target=nvptx" -moe-fuse-dispatch -convert-moe-to-loops | FileCheck %s --check-prefix=LOOPS

// TOO-MANY: moe-fuse-dispatch: max-slots = 4096 must be 0 to 2048 (one dispatch block's slots)

// A route and a replay beside a dispatch: each gains a twin that ends in
// the dispatch of its ids, its results last; the entries stay.
// CHECK-LABEL: func.func @route(
// CHECK-NOT: moe.dispatch
// CHECK: return
// CHECK-LABEL: func.func @route_dispatch(
// CHECK-SAME: -> (tensor<?x4xi32>, tensor<?x4xf32>, tensor<64xi32>, tensor<65xi32>, tensor<?xi32>, tensor<?xi32>)
// CHECK-SAME: moe.entry = "route", moe.fused_dispatch_max_slots = 2048 : i64, moe.kernel_config = #moe.kernel_config<target = nvptx
// CHECK: %[[IDS:.*]] = moe.topk
// CHECK: %[[C:.*]], %[[O:.*]], %[[S:.*]], %[[P:.*]] = moe.dispatch %[[IDS]] experts 64
// CHECK: return %[[IDS]], %{{.*}}, %[[C]], %[[O]], %[[S]], %[[P]]
// CHECK-LABEL: func.func @replay(
// CHECK-LABEL: func.func @replay_dispatch(
// CHECK: %[[FORCED:.*]] = moe.forced_select
// CHECK: moe.dispatch %[[FORCED]] experts 64
// CHECK-LABEL: func.func @dispatch(
// SMALL: moe.fused_dispatch_max_slots = 64 : i64
// NONE-NOT: _dispatch(
// HOST-NOT: _dispatch(

// After convert-moe-to-loops: the dispatch's outputs and its scratch
// before the error record, and the sort after the token loop, behind a
// ticket taken once per block.
// LOOPS-LABEL: func.func @route_dispatch(
// LOOPS-SAME: name = "expert_counts"
// LOOPS-SAME: name = "slot_positions"
// LOOPS-SAME: name = "dispatch_scratch", role = scratch
// LOOPS-SAME: name = "error"
// LOOPS: scf.for
// LOOPS: gpu.barrier
// LOOPS: llvm.call_intrinsic "llvm.nvvm.membar.gl"
// LOOPS: memref.atomic_rmw addi
// LOOPS: gpu.barrier
// LOOPS: scf.if
// LOOPS: llvm.call_intrinsic "llvm.nvvm.match.any.sync.i32"
// LOOPS: return
func.func @route(%logits: tensor<?x64xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) attributes {moe.entry = "route"} {
  %s = moe.score softmax %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %ids = moe.topk %s k 4 : tensor<?x64xf32> -> tensor<?x4xi32>
  %w = moe.gather %s[%ids] : tensor<?x64xf32>, tensor<?x4xi32> -> tensor<?x4xf32>
  return %ids, %w : tensor<?x4xi32>, tensor<?x4xf32>
}
func.func @replay(%logits: tensor<?x64xf32>, %forced: tensor<?x4xi32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) attributes {moe.entry = "replay"} {
  %s = moe.score softmax %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %ids = moe.forced_select %forced experts 64 : tensor<?x4xi32> -> tensor<?x4xi32>
  %w = moe.gather %s[%ids] : tensor<?x64xf32>, tensor<?x4xi32> -> tensor<?x4xf32>
  return %ids, %w : tensor<?x4xi32>, tensor<?x4xf32>
}
func.func @dispatch(%ids: tensor<?x4xi32>) -> (tensor<64xi32>, tensor<65xi32>, tensor<?xi32>, tensor<?xi32>) attributes {moe.entry = "dispatch"} {
  %c, %o, %s, %p = moe.dispatch %ids experts 64 : tensor<?x4xi32> -> tensor<64xi32>, tensor<65xi32>, tensor<?xi32>, tensor<?xi32>
  return %c, %o, %s, %p : tensor<64xi32>, tensor<65xi32>, tensor<?xi32>, tensor<?xi32>
}

// -----

// Without a dispatch entry point there is nothing to fuse.
// CHECK-LABEL: func.func @alone(
// CHECK-NOT: _dispatch(
func.func @alone(%logits: tensor<?x64xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) attributes {moe.entry = "route"} {
  %s = moe.score softmax %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %ids = moe.topk %s k 4 : tensor<?x64xf32> -> tensor<?x4xi32>
  %w = moe.gather %s[%ids] : tensor<?x64xf32>, tensor<?x4xi32> -> tensor<?x4xf32>
  return %ids, %w : tensor<?x4xi32>, tensor<?x4xf32>
}
