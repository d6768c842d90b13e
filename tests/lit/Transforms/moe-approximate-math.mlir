// RUN: moegen-opt %s -split-input-file -moe-approximate-math | FileCheck %s

// exp and log1p become polynomial arithmetic on the same vectors: no math
// op is left for a per-lane libm call.
// CHECK-LABEL: func.func @scoring_math
// CHECK-NOT: math.exp
// CHECK-NOT: math.log1p
// CHECK: arith.mulf {{.*}} : vector<8xf32>
// CHECK: math.sqrt
// CHECK: return
func.func @scoring_math(%x: vector<8xf32>) -> vector<8xf32> {
  %e = math.exp %x : vector<8xf32>
  %l = math.log1p %e : vector<8xf32>
  %s = math.sqrt %l : vector<8xf32>
  return %s : vector<8xf32>
}
