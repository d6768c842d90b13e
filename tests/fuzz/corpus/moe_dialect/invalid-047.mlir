func.func @forced_select_dynamic_k(%f: tensor<?x?xi64>) {
  %ids = moe.forced_select %f experts 8 : tensor<?x?xi64> -> tensor<?x2xi32>
  return
}
