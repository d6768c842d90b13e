func.func @topk_rank3_keys(%k: tensor<2x4x8xf32>) {
  %ids = moe.topk %k k 2 : tensor<2x4x8xf32> -> tensor<?x2xi32>
  return
}
