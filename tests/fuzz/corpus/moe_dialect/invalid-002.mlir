func.func @score_token_mismatch(%l: tensor<4x8xf32>) {
  %s = moe.score softmax %l : tensor<4x8xf32> -> tensor<3x8xf32>
  return
}
