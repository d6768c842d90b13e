func.func @forced_select_too_many_experts(%f: tensor<?x2xi64>) {
  %ids = moe.forced_select %f experts 4294967296 : tensor<?x2xi64> -> tensor<?x2xi32>
  return
}
