func.func @score_unknown_kind(%l: tensor<4x8xf32>) {
  %s = moe.score relu %l : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}
