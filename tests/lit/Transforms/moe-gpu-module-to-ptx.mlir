// RUN: moegen-opt %s -split-input-file --pass-pipeline='builtin.module(moe-gpu-module-to-ptx)' -o %t.split.mlir
// RUN: %python %S/Inputs/ptx_of.py %t.split.mlir | FileCheck %s
// The kernels compiled apart and joined are the module compiled whole, but
// for the numbering of the labels.
// RUN: moegen-opt %s -split-input-file --pass-pipeline='builtin.module(moe-gpu-module-to-ptx{split-kernels=false})' -o %t.whole.mlir
// RUN: %python %S/Inputs/ptx_of.py --normalize %t.split.mlir > %t.split.ptx
// RUN: %python %S/Inputs/ptx_of.py --normalize %t.whole.mlir > %t.whole.ptx
// RUN: diff %t.split.ptx %t.whole.ptx

// Two kernels sharing the dynamic shared memory and a helper: one header,
// the shared declaration and the helper once, both kernels in order.
// CHECK: .version
// CHECK-NOT: .version
// CHECK: .target sm_90
// CHECK: .extern .shared .align 16 .b8 __dynamic_shmem__0[];
// CHECK-NOT: .extern .shared
// CHECK: .visible .func {{.*}}twice(
// CHECK: .visible .entry first(
// CHECK-NOT: .func {{.*}}twice(
// CHECK: .visible .entry second(
// CHECK-NOT: .extern .shared
// CHECK-NOT: twice(
// CHECK-NOT: .version
module attributes {gpu.container_module} {
  gpu.module @kernels [#nvvm.target<chip = "sm_90", features = "+ptx80">] {
    llvm.mlir.global external @__dynamic_shmem__0() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
    llvm.func @twice(%x: f32) -> f32 {
      %y = llvm.fadd %x, %x : f32
      llvm.return %y : f32
    }
    llvm.func @first(%p: !llvm.ptr) attributes {nvvm.kernel} {
      %s = llvm.mlir.addressof @__dynamic_shmem__0 : !llvm.ptr<3>
      %v = llvm.load %p : !llvm.ptr -> f32
      %w = llvm.call @twice(%v) : (f32) -> f32
      llvm.store %w, %s : f32, !llvm.ptr<3>
      llvm.return
    }
    llvm.func @second(%p: !llvm.ptr) attributes {nvvm.kernel} {
      %s = llvm.mlir.addressof @__dynamic_shmem__0 : !llvm.ptr<3>
      %v = llvm.load %s : !llvm.ptr<3> -> f32
      %w = llvm.call @twice(%v) : (f32) -> f32
      llvm.store %w, %p : f32, !llvm.ptr
      llvm.return
    }
  }
}

// -----

// A part keeps only what its kernel uses: the kernel without a libdevice
// call needs no toolkit, and the other's call stays an extern declaration
// (no toolkit given here). One kernel alone goes through whole.
// CHECK: .version
// CHECK: .extern .func {{.*}}__nv_fabsf
// CHECK: .visible .entry calls(
// CHECK: .visible .entry plain(
// CHECK-NOT: __nv_fabsf
// CHECK: .visible .entry alone(
module attributes {gpu.container_module} {
  gpu.module @kernels [#nvvm.target<chip = "sm_90", features = "+ptx80">] {
    llvm.func @__nv_fabsf(f32) -> f32
    llvm.func @calls(%p: !llvm.ptr) attributes {nvvm.kernel} {
      %v = llvm.load %p : !llvm.ptr -> f32
      %w = llvm.call @__nv_fabsf(%v) : (f32) -> f32
      llvm.store %w, %p : f32, !llvm.ptr
      llvm.return
    }
    llvm.func @plain(%p: !llvm.ptr) attributes {nvvm.kernel} {
      %v = llvm.load %p : !llvm.ptr -> f32
      %w = llvm.fadd %v, %v : f32
      llvm.store %w, %p : f32, !llvm.ptr
      llvm.return
    }
  }
  gpu.module @single [#nvvm.target<chip = "sm_90", features = "+ptx80">] {
    llvm.func @alone(%p: !llvm.ptr) attributes {nvvm.kernel} {
      llvm.return
    }
  }
}
