// RUN: moegen-opt %s -split-input-file -moe-extern-dynamic-shared-memory | FileCheck %s

// The dynamic shared memory base gets external linkage (PTX `.extern
// .shared ... []`); other globals, shared or not, keep theirs.
// CHECK-LABEL: gpu.module @kernels
// CHECK: llvm.mlir.global external @__dynamic_shmem__0() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
// CHECK: llvm.mlir.global internal @static_tile() {addr_space = 3 : i32} : !llvm.array<4 x f32>
// CHECK: llvm.mlir.global internal @__dynamic_shmem__table() {addr_space = 1 : i32} : !llvm.array<4 x i8>
module attributes {gpu.container_module} {
  gpu.module @kernels {
    llvm.mlir.global internal @__dynamic_shmem__0() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
    llvm.mlir.global internal @static_tile() {addr_space = 3 : i32} : !llvm.array<4 x f32>
    llvm.mlir.global internal @__dynamic_shmem__table() {addr_space = 1 : i32} : !llvm.array<4 x i8>
  }
}
