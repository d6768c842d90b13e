// RUN: moegen compile %templates/deepseek-v3.yaml | moegen-opt -moe-nvptx-to-nvvm | FileCheck %s
// RUN: moegen compile %templates/kimi-k2.yaml | moegen-opt -moe-nvptx-to-nvvm="chip=sm_80 tokens-per-block=2 topk=argmax_passes" | FileCheck %s --check-prefix=PINNED
// The same stages as `moegen compile --emit=llvm`, from the pipeline the
// NVPTX backend builds (NvptxPipeline.h).
// RUN: moegen compile %templates/deepseek-v3.yaml --emit=llvm > %t.backend.mlir
// RUN: moegen compile %templates/deepseek-v3.yaml | moegen-opt -moe-nvptx-to-nvvm | moegen-opt -mlir-print-op-generic > %t.pipeline.mlir
// RUN: moegen-opt %t.backend.mlir -moe-extern-dynamic-shared-memory -mlir-print-op-generic | diff - %t.pipeline.mlir

// Every entry point is an NVVM kernel in the gpu.module, with the NVVM
// target attached, its launch geometry kept for the manifest, and the
// dynamic shared memory base extern; no moe op, scf or gpu op is left.
// CHECK-NOT: moe.score
// CHECK: gpu.module @moe_kernels [#nvvm.target<O = 3, chip = "sm_90", features = "+ptx80">]
// CHECK: llvm.mlir.global external @__dynamic_shmem__0() {addr_space = 3 : i32
// CHECK-LABEL: llvm.func @route(
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 128, tokens_per_block = 8, dynamic_shared_memory_bytes = {{[0-9]+}}, lanes_per_token = 16>
// CHECK-SAME: nvvm.kernel
// CHECK: nvvm.shfl.sync bfly
// CHECK-NOT: scf.for
// CHECK-LABEL: llvm.func @replay(
// CHECK-LABEL: llvm.func @dispatch(
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 256, tokens_per_block = 0, dynamic_shared_memory_bytes = 9252, max_blocks = 256, slots_per_block = 2048>

// PINNED: #nvvm.target<O = 3, chip = "sm_80", features = "+ptx80">
// PINNED-LABEL: llvm.func @route(
// PINNED-SAME: moe.kernel_config = #moe.kernel_config<target = nvptx, vector_width = 32, tokens_per_task = 2, topk = argmax_passes>
// PINNED-SAME: moe.launch = #moe.launch<block_dim = 64, tokens_per_block = 2,
