// RUN: moegen-opt %s -moe-zero-sign-free-minmax | FileCheck %s

// Every f32 maximum and minimum may return either zero for -0 and +0
// (nsz), keeping its other flags; other ops are untouched.
// CHECK-LABEL: func.func @minmax
// CHECK: arith.maximumf %{{.*}}, %{{.*}} fastmath<nsz> : vector<8xf32>
// CHECK: arith.minimumf %{{.*}}, %{{.*}} fastmath<nsz> : f32
// CHECK: arith.maximumf %{{.*}}, %{{.*}} fastmath<nsz,afn> : f32
// CHECK: arith.addf %{{.*}}, %{{.*}} : f32
func.func @minmax(%v: vector<8xf32>, %a: f32, %b: f32) -> (vector<8xf32>, f32, f32, f32) {
  %0 = arith.maximumf %v, %v : vector<8xf32>
  %1 = arith.minimumf %a, %b : f32
  %2 = arith.maximumf %a, %b fastmath<afn> : f32
  %3 = arith.addf %a, %b : f32
  return %0, %1, %2, %3 : vector<8xf32>, f32, f32, f32
}
