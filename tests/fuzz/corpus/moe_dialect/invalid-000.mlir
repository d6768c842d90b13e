// One case per verifier rule of MoEOps.cpp (every emitOpError path of every
// op), then the TableGen type constraints and the AllTypesMatch traits.

//===----------------------------------------------------------------------===//
// moe.score
//===----------------------------------------------------------------------===//

func.func @score_dynamic_experts(%l: tensor<4x?xf32>) {
  %s = moe.score softmax %l : tensor<4x?xf32> -> tensor<4x8xf32>
  return
}
