func.func @score_rank1_logits(%l: tensor<8xf32>) {
  %s = moe.score softmax %l : tensor<8xf32> -> tensor<4x8xf32>
  return
}
