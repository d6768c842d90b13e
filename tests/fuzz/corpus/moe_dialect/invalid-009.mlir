//===----------------------------------------------------------------------===//
// moe.add_bias
//===----------------------------------------------------------------------===//

func.func @add_bias_dynamic_experts(%s: tensor<?x?xf32>, %b: tensor<8xf32>) {
  %k = moe.add_bias %s, %b : tensor<?x?xf32>, tensor<8xf32>
  return
}
