func.func @topk_k_above_experts(%k: tensor<?x8xf32>) {
  %ids = moe.topk %k k 9 : tensor<?x8xf32> -> tensor<?x9xi32>
  return
}
