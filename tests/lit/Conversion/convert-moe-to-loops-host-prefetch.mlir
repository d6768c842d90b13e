// RUN: moegen-opt %s -split-input-file -convert-moe-to-loops -canonicalize | FileCheck %s
// RUN: moegen-opt %s -split-input-file -convert-moe-to-loops="host-prefetch-bytes=0" -canonicalize | FileCheck %s --check-prefix=OFF
// RUN: moegen-opt %s -split-input-file -convert-moe-to-loops="host-prefetch-bytes=256" -canonicalize | FileCheck %s --check-prefix=NEAR

// A host row kernel prefetches the logits row of the token 4 KiB ahead
// (four 1 KiB rows), one prefetch per 64-byte line and the row's last
// element, before the token's own loads. The forced ids (8 bytes a row)
// and the bias (not per token) are not prefetched.
// CHECK-LABEL: func.func @replay(
// CHECK-SAME: %[[LOGITS:arg[0-9]+]]: memref<?x256xf32>
// CHECK: scf.for %[[T:.*]] = %{{.*}} to %{{.*}} step
// CHECK: %[[AHEAD:.*]] = arith.addi %[[T]], %c4 : index
// CHECK: memref.prefetch %[[LOGITS]][%[[AHEAD]], %c0], read, locality<3>, data
// CHECK: memref.prefetch %[[LOGITS]][%[[AHEAD]], %c16], read, locality<3>, data
// CHECK-COUNT-13: memref.prefetch %[[LOGITS]][%[[AHEAD]], %c{{[0-9]+}}], read
// CHECK: memref.prefetch %[[LOGITS]][%[[AHEAD]], %c240], read, locality<3>, data
// CHECK: memref.prefetch %[[LOGITS]][%[[AHEAD]], %c255], read, locality<3>, data
// CHECK-NOT: memref.prefetch
// CHECK: vector.load %[[LOGITS]][%[[T]]
// CHECK-NOT: memref.prefetch
// CHECK: return
// OFF-LABEL: func.func @replay(
// OFF-NOT: memref.prefetch
// 256 bytes ahead of a 1 KiB row: the next token's first 256 bytes.
// NEAR-LABEL: func.func @replay(
// NEAR: %[[AHEAD:.*]] = arith.addi %{{.*}}, %c1 : index
// NEAR: memref.prefetch %{{.*}}[%[[AHEAD]], %c0], read
// NEAR: memref.prefetch %{{.*}}[%[[AHEAD]], %c16], read
// NEAR: memref.prefetch %{{.*}}[%[[AHEAD]], %c32], read
// NEAR: memref.prefetch %{{.*}}[%[[AHEAD]], %c48], read
// NEAR-NOT: memref.prefetch
func.func @replay(%logits: tensor<?x256xf32>, %forced: tensor<?x2xi32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "replay", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 16, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x256xf32> -> tensor<?x256xf32>
  %ids = moe.forced_select %forced experts 256 : tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Rows narrower than a cache line (16 bf16 logits: 32 bytes) are left to
// the hardware: consecutive tokens share their lines.
// CHECK-LABEL: func.func @narrow(
// CHECK-NOT: memref.prefetch
// CHECK: return
func.func @narrow(%logits: tensor<?x16xbf16>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 16, tokens_per_task = 64, topk = argmax_passes>} {
  %s = moe.score softmax %logits : tensor<?x16xbf16> -> tensor<?x16xf32>
  %ids = moe.topk %s k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// GPU kernels do not prefetch: a warp's loads of a row are already in
// flight together.
// CHECK-LABEL: func.func @gpu(
// CHECK-NOT: memref.prefetch
// CHECK: return
func.func @gpu(%logits: tensor<?x256xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 1, topk = argmax_passes>} {
  %s = moe.score sigmoid %logits : tensor<?x256xf32> -> tensor<?x256xf32>
  %ids = moe.topk %s k 2 : tensor<?x256xf32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
