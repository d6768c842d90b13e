func.func @forced_select_ids_width(%f: tensor<?x2xi32>) {
  %ids = moe.forced_select %f experts 8 : tensor<?x2xi32> -> tensor<?x3xi32>
  return
}
