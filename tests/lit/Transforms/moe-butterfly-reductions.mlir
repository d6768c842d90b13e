// RUN: moegen-opt %s -split-input-file -moe-butterfly-reductions | FileCheck %s

// A maximum of 8 lanes: three shuffle-and-maximum steps (lane i with
// lane i ^ 4, ^ 2, ^ 1), then lane 0.
// CHECK-LABEL: func.func @row_maximum
// CHECK-SAME:    %[[V:.*]]: vector<8xf32>
// CHECK:         %[[S4:.*]] = vector.shuffle %[[V]], %[[V]] [4, 5, 6, 7, 0, 1, 2, 3]
// CHECK:         %[[M4:.*]] = arith.maximumf %[[V]], %[[S4]] : vector<8xf32>
// CHECK:         %[[S2:.*]] = vector.shuffle %[[M4]], %[[M4]] [2, 3, 0, 1, 6, 7, 4, 5]
// CHECK:         %[[M2:.*]] = arith.maximumf %[[M4]], %[[S2]] : vector<8xf32>
// CHECK:         %[[S1:.*]] = vector.shuffle %[[M2]], %[[M2]] [1, 0, 3, 2, 5, 4, 7, 6]
// CHECK:         %[[M1:.*]] = arith.maximumf %[[M2]], %[[S1]] : vector<8xf32>
// CHECK:         %[[R:.*]] = vector.extract %[[M1]][0] : f32 from vector<8xf32>
// CHECK-NOT:     vector.reduction
// CHECK:         return %[[R]]
func.func @row_maximum(%v: vector<8xf32>) -> f32 {
  %m = vector.reduction <maximumf>, %v : vector<8xf32> into f32
  return %m : f32
}

// -----

// A sum of 4 lanes: a pairwise tree with arith.addf.
// CHECK-LABEL: func.func @row_sum
// CHECK:         vector.shuffle {{.*}} [2, 3, 0, 1]
// CHECK:         arith.addf {{.*}} : vector<4xf32>
// CHECK:         vector.shuffle {{.*}} [1, 0, 3, 2]
// CHECK:         arith.addf {{.*}} : vector<4xf32>
// CHECK:         vector.extract {{.*}}[0] : f32 from vector<4xf32>
// CHECK-NOT:     vector.reduction
func.func @row_sum(%v: vector<4xf32>) -> f32 {
  %s = vector.reduction <add>, %v : vector<4xf32> into f32
  return %s : f32
}

// -----

// Kept: integer and boolean reductions (LLVM already reduces them in log2
// steps), a reduction with an accumulator, odd and one-lane widths, and
// other float kinds.
// CHECK-LABEL: func.func @kept
// CHECK: vector.reduction <minsi>
// CHECK: vector.reduction <or>
// CHECK: vector.reduction <add>, %{{.*}}, %{{.*}} : vector<8xf32> into f32
// CHECK: vector.reduction <maximumf>, %{{.*}} : vector<6xf32> into f32
// CHECK: vector.reduction <maximumf>, %{{.*}} : vector<1xf32> into f32
// CHECK: vector.reduction <minimumf>
func.func @kept(%i: vector<8xi32>, %b: vector<8xi1>, %v: vector<8xf32>,
                %acc: f32, %six: vector<6xf32>, %one: vector<1xf32>)
    -> (i32, i1, f32, f32, f32, f32) {
  %0 = vector.reduction <minsi>, %i : vector<8xi32> into i32
  %1 = vector.reduction <or>, %b : vector<8xi1> into i1
  %2 = vector.reduction <add>, %v, %acc : vector<8xf32> into f32
  %3 = vector.reduction <maximumf>, %six : vector<6xf32> into f32
  %4 = vector.reduction <maximumf>, %one : vector<1xf32> into f32
  %5 = vector.reduction <minimumf>, %v : vector<8xf32> into f32
  return %0, %1, %2, %3, %4, %5 : i32, i1, f32, f32, f32, f32
}
