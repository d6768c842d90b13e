// REQUIRES: cuda-runtime
// RUN: moegen-opt %s -split-input-file -convert-gpu-to-emulator -verify-diagnostics | FileCheck %s
// RUN: moegen-opt %s -split-input-file -convert-gpu-to-emulator="inject-fault=no-warp-sync" -verify-diagnostics | FileCheck %s --check-prefix=NOSYNC
// RUN: moegen-opt %s -split-input-file -convert-gpu-to-emulator="inject-fault=shared-row-offset" -verify-diagnostics | FileCheck %s --check-prefix=SHIFT
// RUN: %expect-exit 1 moegen-opt %s -split-input-file -convert-gpu-to-emulator="inject-fault=bogus" 2>&1 | FileCheck %s --check-prefix=BAD
// BAD: convert-gpu-to-emulator: inject-fault = 'bogus': must be lane-mapping, no-warp-sync or shared-row-offset

// One GPU thread as a host function: the kernel's parameters (and their
// ABI stamps), then blockIdx, threadIdx and the emulator's context.
// CHECK-NOT: gpu.module
// CHECK-DAG: func.func private @moegen_emu_shfl_xor_i32(!llvm.ptr, i32, i32, i32, i32) -> i32
// CHECK-DAG: func.func private @moegen_emu_redux_i32(!llvm.ptr, i32, i32, i32) -> i32
// CHECK-DAG: func.func private @moegen_emu_check_access(!llvm.ptr, !llvm.ptr, i64, i32, i32, i32)
// CHECK-LABEL: func.func @kernel(
// CHECK-SAME: %[[OUT:arg[0-9]+]]: !llvm.ptr {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights"
// CHECK-SAME: %[[BLOCK:arg[0-9]+]]: i64, %[[THREAD:arg[0-9]+]]: i64, %[[CTX:arg[0-9]+]]: !llvm.ptr)
// CHECK-SAME: moe.launch = #moe.launch<block_dim = 64, tokens_per_block = 2, dynamic_shared_memory_bytes = 256>
// The lane is threadIdx mod 32.
// CHECK: %[[LANE64:.*]] = arith.remui %[[THREAD]], %c32_i64
// Shared memory is the block's buffer from the runtime; rows are plain
// host memrefs.
// CHECK: call @moegen_emu_shared_base(%[[CTX]])
// CHECK: call @moegen_emu_shared_bytes(%[[CTX]])
// CHECK: memref.view {{.*}} : memref<?xi8> to memref<32xf32>
// A shared store is announced (write = 1, shared = 1, its site number),
// then made; the warp sync is a call.
// CHECK: call @moegen_emu_check_access(%[[CTX]], %{{.*}}, %c4_i64{{.*}}, %c1_i32{{.*}}, %c1_i32{{.*}}, %c0_i32{{.*}})
// CHECK-NEXT: memref.store
// CHECK: call @moegen_emu_warp_sync(%[[CTX]], %c-1_i32)
// A shuffle of f32 goes through i32, over the whole warp (mask -1).
// CHECK: %[[BITS:.*]] = arith.bitcast %{{.*}} : f32 to i32
// CHECK: %[[SHUFFLED:.*]] = call @moegen_emu_shfl_xor_i32(%[[CTX]], %[[BITS]], %c16_i32, %c32_i32, %c-1_i32{{.*}})
// CHECK: arith.bitcast %[[SHUFFLED]] : i32 to f32
// A global atomic is announced as one (2), and yields after.
// CHECK: call @moegen_emu_check_access(%[[CTX]], %{{.*}}, %c8_i64{{.*}}, %c2_i32{{.*}}, %c0_i32{{.*}}, %c2_i32{{.*}})
// CHECK-NEXT: memref.atomic_rmw
// CHECK-NEXT: call @moegen_emu_yield(%[[CTX]])
// CHECK: return
// NOSYNC-LABEL: func.func @kernel(
// NOSYNC-NOT: moegen_emu_warp_sync(
// NOSYNC: return
// SHIFT-LABEL: func.func @kernel(
// SHIFT: %[[AT:.*]] = arith.addi %{{.*}}, %c4 : index
// SHIFT: memref.view %{{.*}}[%[[AT]]][]
module attributes {gpu.container_module} {
  gpu.module @moe_kernels {
    gpu.func @kernel(%out: !llvm.ptr {moe.kernel_arg = #moe.kernel_arg<name = "topk_weights", role = tensor, dtype = f32, shape = ["T", 1], access = write>}, %err: !llvm.ptr) kernel attributes {moe.launch = #moe.launch<block_dim = 64, tokens_per_block = 2, dynamic_shared_memory_bytes = 256>} {
      %c0 = arith.constant 0 : index
      %c32 = arith.constant 32 : index
      %c5 = arith.constant 5 : index
      %c1_i64 = arith.constant 1 : i64
      %c16_i32 = arith.constant 16 : i32
      %c32_i32 = arith.constant 32 : i32
      %all = arith.constant -1 : i32
      %lane = gpu.lane_id
      %tid = gpu.thread_id x
      %warp = arith.divui %tid, %c32 : index
      %shared = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
      %base = arith.muli %warp, %c32 : index
      %row = memref.view %shared[%base][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32xf32, #gpu.address_space<workgroup>>
      %x = arith.constant 1.0 : f32
      memref.store %x, %row[%lane] : memref<32xf32, #gpu.address_space<workgroup>>
      nvvm.bar.warp.sync %all : i32
      %v = memref.load %row[%c0] : memref<32xf32, #gpu.address_space<workgroup>>
      %s, %valid = gpu.shuffle xor %v, %c16_i32, %c32_i32 : f32
      %record = builtin.unrealized_conversion_cast %err : !llvm.ptr to memref<6xi64>
      %old = memref.atomic_rmw assign %c1_i64, %record[%c5] : (i64, memref<6xi64>) -> i64
      gpu.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @moe_kernels {
    gpu.func @attributions(%out: !llvm.ptr) workgroup(%tile: memref<4xf32, #gpu.address_space<workgroup>>) kernel {
      // expected-error @-1 {{memory attributions cannot be emulated}}
      gpu.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @moe_kernels {
    gpu.func @half_warp_shuffle(%out: !llvm.ptr) kernel {
      %c1_i32 = arith.constant 1 : i32
      %c16_i32 = arith.constant 16 : i32
      // expected-error @+1 {{only shuffles over a whole warp (width 32) are emulated}}
      %s, %valid = gpu.shuffle xor %c1_i32, %c1_i32, %c16_i32 : i32
      gpu.return
    }
  }
}

// -----

// redux.sync over its member mask is one call (kind 5 = min); so is
// nvvm.shfl.sync bfly, whose c names the segment width ((32 - 8) << 8 | 31:
// 8 lanes), with its member mask.
// CHECK-LABEL: func.func @redux(
// CHECK: call @moegen_emu_redux_i32(%{{.*}}, %c7_i32, %c5_i32{{.*}}, %c-1_i32)
// CHECK: call @moegen_emu_redux_i32(%{{.*}}, %c7_i32, %c5_i32{{.*}}, %c255_i32)
// CHECK: %[[BITS:.*]] = arith.bitcast %{{.*}} : f32 to i32
// CHECK: call @moegen_emu_shfl_xor_i32(%{{.*}}, %[[BITS]], %c4_i32, %c8_i32{{.*}}, %c255_i32)
// CHECK-NOT: nvvm.
module attributes {gpu.container_module} {
  gpu.module @moe_kernels {
    gpu.func @redux(%out: !llvm.ptr) kernel {
      %c7_i32 = arith.constant 7 : i32
      %c4_i32 = arith.constant 4 : i32
      %all = arith.constant -1 : i32
      %low = arith.constant 255 : i32
      %c = arith.constant 6175 : i32
      %x = arith.constant 1.0 : f32
      %r = nvvm.redux.sync min %c7_i32, %all : i32 -> i32
      %p = nvvm.redux.sync min %c7_i32, %low : i32 -> i32
      %s = nvvm.shfl.sync bfly %low, %x, %c4_i32, %c : f32 -> f32
      gpu.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @moe_kernels {
    gpu.func @odd_segment(%out: !llvm.ptr) kernel {
      %c4_i32 = arith.constant 4 : i32
      %low = arith.constant 255 : i32
      %c = arith.constant 6144 : i32
      %x = arith.constant 1.0 : f32
      // expected-error @+1 {{only a constant c = (32 - width) << 8 | 31 with a power-of-two width is emulated}}
      %s = nvvm.shfl.sync bfly %low, %x, %c4_i32, %c : f32 -> f32
      gpu.return
    }
  }
}
