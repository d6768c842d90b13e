func.func @forced_select_k_above_experts(%f: tensor<?x8xi64>) {
  %ids = moe.forced_select %f experts 4 : tensor<?x8xi64> -> tensor<?x8xi32>
  return
}
