func.func @score_expert_mismatch(%l: tensor<?x8xf16>) {
  %s = moe.score sqrtsoftplus %l : tensor<?x8xf16> -> tensor<?x16xf32>
  return
}
