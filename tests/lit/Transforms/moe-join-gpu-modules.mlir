// RUN: moegen-opt %s -split-input-file -verify-diagnostics -moe-join-gpu-modules | FileCheck %s

// The parts join where the first stood, each kernel in the parts' order
// and the first copy of each other symbol: the declaration that only the
// second part gained (as the NVVM lowering declares what a kernel calls)
// comes with it. Modules that are no part stay as they are.
// CHECK-LABEL: module attributes {gpu.container_module}
// CHECK:       gpu.module @before {
// CHECK:       gpu.module @kernels [#nvvm.target<chip = "sm_90">] {
// CHECK-NEXT:    llvm.mlir.global external @__dynamic_shmem__0()
// CHECK-NEXT:    llvm.func @route() attributes {gpu.kernel}
// CHECK:         llvm.func @__nv_expf(f32) -> f32
// CHECK-NEXT:    llvm.func @replay() attributes {gpu.kernel}
// CHECK-NOT:     __dynamic_shmem__0
// CHECK-NOT:     moe.split_from
// CHECK:       gpu.module @after {
module attributes {gpu.container_module} {
  gpu.module @before {
  }
  gpu.module @kernels_route [#nvvm.target<chip = "sm_90">] attributes {moe.split_from = "kernels"} {
    llvm.mlir.global external @__dynamic_shmem__0() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
    llvm.func @route() attributes {gpu.kernel} {
      llvm.return
    }
  }
  gpu.module @after {
  }
  gpu.module @kernels_replay [#nvvm.target<chip = "sm_90">] attributes {moe.split_from = "kernels"} {
    llvm.mlir.global external @__dynamic_shmem__0() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
    llvm.func @__nv_expf(f32) -> f32
    llvm.func @replay() attributes {gpu.kernel} {
      llvm.return
    }
  }
}

// -----

// Two parts that declare one symbol differently are not joined.
module attributes {gpu.container_module} {
  gpu.module @kernels_a attributes {moe.split_from = "kernels"} {
    llvm.mlir.global external @shared() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
  }
  gpu.module @kernels_b attributes {moe.split_from = "kernels"} {
    // expected-error @+1 {{@shared differs between the parts of @kernels (or is a kernel twice)}}
    llvm.mlir.global external @shared() {addr_space = 3 : i32, alignment = 8 : i64} : !llvm.array<0 x i8>
  }
}

// -----

// A kernel of one name in two parts is not joined.
module attributes {gpu.container_module} {
  gpu.module @kernels_a attributes {moe.split_from = "kernels"} {
    llvm.func @route() attributes {gpu.kernel} {
      llvm.return
    }
  }
  gpu.module @kernels_b attributes {moe.split_from = "kernels"} {
    // expected-error @+1 {{@route differs between the parts of @kernels (or is a kernel twice)}}
    llvm.func @route() attributes {gpu.kernel} {
      llvm.return
    }
  }
}

// -----

// The joined module's name must be free.
module attributes {gpu.container_module} {
  gpu.module @kernels {
  }
  // expected-error @+1 {{joins into @kernels, which is a symbol already}}
  gpu.module @kernels_a attributes {moe.split_from = "kernels"} {
  }
}
