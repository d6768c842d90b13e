func.func @gather_i64_ids(%s: tensor<?x8xf32>, %ids: tensor<?x2xi64>) {
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi64> -> tensor<?x2xf32>
  return
}
