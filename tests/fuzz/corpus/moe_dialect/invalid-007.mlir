func.func @score_bf16_scores(%l: tensor<4x8xbf16>) {
  %s = moe.score softmax %l : tensor<4x8xbf16> -> tensor<4x8xbf16>
  return
}
