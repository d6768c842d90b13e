func.func @topk_i64_ids(%k: tensor<?x8xf32>) {
  %ids = moe.topk %k k 2 : tensor<?x8xf32> -> tensor<?x2xi64>
  return
}
