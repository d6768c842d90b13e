func.func @forced_select_i64_ids(%f: tensor<?x2xi64>) {
  %ids = moe.forced_select %f experts 8 : tensor<?x2xi64> -> tensor<?x2xi64>
  return
}
