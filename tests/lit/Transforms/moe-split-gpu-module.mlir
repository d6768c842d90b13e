// RUN: moegen-opt %s -split-input-file -verify-diagnostics -moe-split-gpu-module | FileCheck %s
// RUN: moegen-opt %s -split-input-file -verify-diagnostics -moe-split-gpu-module -moe-join-gpu-modules | FileCheck %s --check-prefix=ROUND

// Each kernel moves into a gpu.module of its own, in order, with the
// module's targets and moe.split_from; what is not a kernel (the global,
// the device function) is copied into every part. A name that is taken
// is numbered.
// CHECK-LABEL: module attributes {gpu.container_module}
// CHECK:       gpu.module @kernels_first [#nvvm.target<chip = "sm_90">] attributes {moe.split_from = "kernels"}
// CHECK-NEXT:    llvm.mlir.global internal @table
// CHECK-NEXT:    gpu.func @first() kernel
// CHECK:         func.func private @helper
// CHECK-NOT:     gpu.func @second
// CHECK:       gpu.module @kernels_second_0 [#nvvm.target<chip = "sm_90">] attributes {moe.split_from = "kernels"}
// CHECK-NEXT:    llvm.mlir.global internal @table
// CHECK-NEXT:    gpu.func @second() kernel
// CHECK:         func.func private @helper
// CHECK:       gpu.module @kernels_second {
// CHECK-NOT:   moe.split_from
// The join gives the module back, part by part: the first part's ops (the
// device function among them), then the second's kernel.
// ROUND-LABEL: module attributes {gpu.container_module}
// ROUND:       gpu.module @kernels [#nvvm.target<chip = "sm_90">] {
// ROUND-NEXT:    llvm.mlir.global internal @table
// ROUND-NEXT:    gpu.func @first() kernel
// ROUND:         func.func private @helper
// ROUND-NEXT:    gpu.func @second() kernel
// ROUND:       gpu.module @kernels_second {
// ROUND-NOT:   moe.split_from
module attributes {gpu.container_module} {
  gpu.module @kernels [#nvvm.target<chip = "sm_90">] {
    llvm.mlir.global internal @table() {addr_space = 1 : i32} : !llvm.array<4 x i8>
    gpu.func @first() kernel {
      gpu.return
    }
    gpu.func @second() kernel {
      gpu.return
    }
    func.func private @helper()
  }
  gpu.module @kernels_second {
    gpu.func @only() kernel {
      gpu.return
    }
  }
}

// -----

// A module of one kernel stays whole.
// CHECK-LABEL: gpu.module @alone
// CHECK-NOT:   moe.split_from
// CHECK:       gpu.func @kernel() kernel
module attributes {gpu.container_module} {
  gpu.module @alone {
    gpu.func @kernel() kernel {
      gpu.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  // expected-error @+1 {{is already a part of a split gpu.module}}
  gpu.module @part attributes {moe.split_from = "kernels"} {
    gpu.func @a() kernel {
      gpu.return
    }
    gpu.func @b() kernel {
      gpu.return
    }
  }
}
