// RUN: moegen-opt %s -split-input-file -moe-kernel-config | FileCheck %s
// RUN: moegen-opt %s -split-input-file -moe-kernel-config="vector-width=4 tokens-per-task=32 topk=argmax_passes" | FileCheck %s --check-prefix=PINNED
// RUN: moegen-opt %s -split-input-file -moe-kernel-config="target=nvptx" | FileCheck %s --check-prefix=NVPTX
// RUN: %expect-exit 1 moegen-opt %s -split-input-file -moe-kernel-config="target=tpu" 2>&1 | FileCheck %s --check-prefix=BAD-TARGET
// RUN: %expect-exit 1 moegen-opt %s -split-input-file -moe-kernel-config="vector-width=6" 2>&1 | FileCheck %s --check-prefix=BAD-WIDTH
// RUN: %expect-exit 1 moegen-opt %s -split-input-file -moe-kernel-config="topk=heap" 2>&1 | FileCheck %s --check-prefix=BAD-TOPK
// RUN: %expect-exit 1 moegen-opt %s -split-input-file -moe-kernel-config="target=nvptx topk=lane_tree" 2>&1 | FileCheck %s --check-prefix=GPU-TREE

// BAD-TARGET: moe-kernel-config: target = 'tpu': must be cpu or nvptx
// BAD-WIDTH: moe-kernel-config: vector-width = 6: must be 0 (heuristic) or a power of two up to 64
// GPU-TREE: #moe.kernel_config: topk = lane_tree is a host method (a merge tree of vector shuffles, not yet weighed on a GPU); nvptx kernels take lane_lists
// BAD-TOPK: moe-kernel-config: topk = 'heap': must be argmax_passes, insertion, lane_lists, lane_tree or token_lanes

// 256 f32 experts: 16 lanes, rows of 16 chunks for lane lists, merged by
// a bitonic tree (k = 8, a power of two, over at most 16 lanes); 1 KiB per
// token -> 256 tokens per task.
// CHECK-LABEL: func.func @route
// CHECK-SAME: moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 16, tokens_per_task = 256, topk = lane_tree>
// PINNED-LABEL: func.func @route
// PINNED-SAME: moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 4, tokens_per_task = 32, topk = argmax_passes>
// On the GPU a token takes 16 lanes of a warp, each holding 16 experts,
// sorted lane by lane in registers (lane_lists); 8 tokens per block of 4
// warps.
// NVPTX-LABEL: func.func @route
// NVPTX-SAME: moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 16, tokens_per_task = 8, topk = lane_lists>
func.func @route(%logits: tensor<?x256xf32>) -> tensor<?x8xi32> attributes {moe.entry = "route"} {
  %s = moe.score softmax %logits : tensor<?x256xf32> -> tensor<?x256xf32>
  %ids = moe.topk %s k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

// Functions that are not entry points are left alone.
// CHECK-LABEL: func.func @helper()
// CHECK-NOT: moe.kernel_config
func.func @helper() {
  return
}

// -----

// Two experts: on the host 16 tokens across the lanes (a route whose ops
// all have that form, up to 64 experts); bf16 halves the bytes per token.
// On the GPU the same layout on a warp: 32 tokens a warp, one a thread,
// four warps a block.
// CHECK-LABEL: func.func @tiny
// CHECK-SAME: moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 16, tokens_per_task = 4096, topk = token_lanes>
// NVPTX-LABEL: func.func @tiny
// NVPTX-SAME: moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 4, topk = token_lanes>
func.func @tiny(%logits: tensor<?x2xbf16>) -> tensor<?x1xi32> attributes {moe.entry = "route"} {
  %s = moe.score sigmoid %logits : tensor<?x2xbf16> -> tensor<?x2xf32>
  %ids = moe.topk %s k 1 : tensor<?x2xf32> -> tensor<?x1xi32>
  return %ids : tensor<?x1xi32>
}

// -----

// From 1024 experts on, the single-pass insertion top-k; on the GPU a warp
// per token, and lane lists streamed above a bound (rows of more than 16
// chunks a lane).
// CHECK-LABEL: func.func @wide
// CHECK-SAME: moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = insertion>
// NVPTX-LABEL: func.func @wide
// NVPTX-SAME: moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 3, topk = lane_lists>
func.func @wide(%logits: tensor<?x1024xf32>) -> tensor<?x8xi32> attributes {moe.entry = "route"} {
  %s = moe.score softmax %logits : tensor<?x1024xf32> -> tensor<?x1024xf32>
  %ids = moe.topk %s k 8 : tensor<?x1024xf32> -> tensor<?x8xi32>
  return %ids : tensor<?x8xi32>
}

// -----

// An existing configuration is replaced: the pass is idempotent.
// CHECK-LABEL: func.func @reconfigured
// CHECK-SAME: vector_width = 16, tokens_per_task = 1024, topk = token_lanes
// CHECK-NOT: vector_width = 4
func.func @reconfigured(%logits: tensor<?x64xf32>) -> tensor<?x2xi32> attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 4, tokens_per_task = 1, topk = insertion>} {
  %s = moe.score softmax %logits : tensor<?x64xf32> -> tensor<?x64xf32>
  %ids = moe.topk %s k 2 : tensor<?x64xf32> -> tensor<?x2xi32>
  return %ids : tensor<?x2xi32>
}

// -----

// Replay's forced_select has no token-lanes form: the row in the lanes.
// CHECK-LABEL: func.func @replay_keeps_rows
// CHECK-SAME: moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 4096, topk = argmax_passes>
func.func @replay_keeps_rows(%logits: tensor<?x8xf32>, %forced: tensor<?x2xi32>) -> tensor<?x2xf32> attributes {moe.entry = "replay"} {
  %s = moe.score softmax %logits : tensor<?x8xf32> -> tensor<?x8xf32>
  %ids = moe.forced_select %forced experts 8 : tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %w : tensor<?x2xf32>
}
