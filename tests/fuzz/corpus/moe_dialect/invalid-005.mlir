func.func @score_f64_logits(%l: tensor<4x8xf64>) {
  %s = moe.score softmax %l : tensor<4x8xf64> -> tensor<4x8xf32>
  return
}
