// RUN: moegen-opt %s -split-input-file --pass-pipeline='builtin.module(gpu.module(moe-gpu-fast-math))' | FileCheck %s

// f32 exp and division marked afn become PTX's approximations; the same ops
// without afn (or on f64) keep their precise lowering.
// CHECK-LABEL: gpu.func @scores(
// CHECK-SAME: %[[X:.*]]: f32, %[[D:.*]]: f32, %[[W:.*]]: f64)
// CHECK: %[[LOG2E:.*]] = arith.constant 1.44269502 : f32
// CHECK: %[[SCALED:.*]] = arith.mulf %[[X]], %[[LOG2E]] : f32
// CHECK: llvm.call_intrinsic "llvm.nvvm.ex2.approx.f"(%[[SCALED]]) : (f32) -> f32
// CHECK: llvm.call_intrinsic "llvm.nvvm.rcp.approx.ftz.f"(%[[D]]) : (f32) -> f32
// CHECK: %[[R:.*]] = llvm.call_intrinsic "llvm.nvvm.rcp.approx.ftz.f"(%[[D]]) : (f32) -> f32
// CHECK: arith.mulf %[[X]], %[[R]] : f32
// CHECK: math.exp %[[X]] : f32
// CHECK: arith.divf %{{.*}}, %[[D]] : f32
// CHECK: math.exp %[[W]] fastmath<afn> : f64
// CHECK-NOT: llvm.call_intrinsic
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @scores(%x: f32, %d: f32, %w: f64) {
      %one = arith.constant 1.0 : f32
      %e = math.exp %x fastmath<afn> : f32
      %r = arith.divf %one, %d fastmath<afn> : f32
      %xd = arith.divf %x, %d fastmath<afn> : f32
      %p = math.exp %x : f32
      %q = arith.divf %one, %d : f32
      %v = math.exp %w fastmath<afn> : f64
      gpu.return
    }
  }
}

// -----

// f32 and f64 abs become LLVM's intrinsic (exact, no libdevice); sqrt and
// other types keep math's lowering.
// CHECK-LABEL: gpu.func @exact(
// CHECK-SAME: %[[X:.*]]: f32, %[[W:.*]]: f64, %[[H:.*]]: f16)
// CHECK: llvm.call_intrinsic "llvm.fabs.f32"(%[[X]]) : (f32) -> f32
// CHECK: math.sqrt %[[X]] : f32
// CHECK: llvm.call_intrinsic "llvm.fabs.f64"(%[[W]]) : (f64) -> f64
// CHECK: math.absf %[[H]] : f16
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @exact(%x: f32, %w: f64, %h: f16) {
      %a = math.absf %x : f32
      %s = math.sqrt %x : f32
      %b = math.absf %w : f64
      %c = math.absf %h : f16
      gpu.return
    }
  }
}

// -----

// f32 and f64 fma (combine's accumulation) become LLVM's intrinsic, which
// PTX rounds once like std::fma; other types keep math's lowering.
// CHECK-LABEL: gpu.func @fused(
// CHECK-SAME: %[[X:.*]]: f32, %[[W:.*]]: f64, %[[H:.*]]: f16)
// CHECK: llvm.call_intrinsic "llvm.fma.f32"(%[[X]], %[[X]], %[[X]]) : (f32, f32, f32) -> f32
// CHECK: llvm.call_intrinsic "llvm.fma.f64"(%[[W]], %[[W]], %[[W]]) : (f64, f64, f64) -> f64
// CHECK: math.fma %[[H]], %[[H]], %[[H]] : f16
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @fused(%x: f32, %w: f64, %h: f16) {
      %a = math.fma %x, %x, %x : f32
      %b = math.fma %w, %w, %w : f64
      %c = math.fma %h, %h, %h : f16
      gpu.return
    }
  }
}

// -----

// f32 and f64 ceil and floor (an expert-choice capacity) become LLVM's
// intrinsics (cvt.rpi / cvt.rmi, exact, no libdevice); f16 keeps math's
// lowering.
// CHECK-LABEL: gpu.func @rounded(
// CHECK-SAME: %[[X:.*]]: f32, %[[W:.*]]: f64, %[[H:.*]]: f16)
// CHECK: llvm.call_intrinsic "llvm.ceil.f64"(%[[W]]) : (f64) -> f64
// CHECK: llvm.call_intrinsic "llvm.floor.f32"(%[[X]]) : (f32) -> f32
// CHECK: math.ceil %[[H]] : f16
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @rounded(%x: f32, %w: f64, %h: f16) {
      %a = math.ceil %w : f64
      %b = math.floor %x : f32
      %c = math.ceil %h : f16
      gpu.return
    }
  }
}
