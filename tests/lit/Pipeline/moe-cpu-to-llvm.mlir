// RUN: moegen compile %templates/deepseek-v3.yaml | moegen-opt -moe-cpu-to-llvm | FileCheck %s
// RUN: moegen compile %templates/deepseek-v4-flash-hash.yaml | moegen-opt -moe-cpu-to-llvm="vector-width=4" | FileCheck %s --check-prefix=HASH

// Every entry point ends as an LLVM function plus the C-callable wrapper the
// host JIT calls; no moe op, scf, memref or math is left (the moe.entry and
// moe.kernel_config attributes stay, for the runtime to read).
// CHECK-NOT: func.func
// CHECK-NOT: moe.score
// CHECK-LABEL: llvm.func @route(
// CHECK: llvm.load {{.*}} -> vector<16xf32>
// CHECK-NOT: math.
// CHECK-LABEL: llvm.func @_mlir_ciface_route(
// CHECK-LABEL: llvm.func @replay(
// CHECK-LABEL: llvm.func @_mlir_ciface_replay(
// Dispatch needs no scratch: the counts double as the buckets' fill levels.
// CHECK-LABEL: llvm.func @dispatch(
// CHECK-NOT: llvm.call @malloc
// CHECK-LABEL: llvm.func @_mlir_ciface_dispatch(

// HASH-LABEL: llvm.func @route_hash(
// HASH: vector<4xf32>
// HASH-LABEL: llvm.func @_mlir_ciface_route_hash(
