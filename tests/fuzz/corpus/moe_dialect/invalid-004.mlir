func.func @score_integer_logits(%l: tensor<4x8xi32>) {
  %s = moe.score softmax %l : tensor<4x8xi32> -> tensor<4x8xf32>
  return
}
