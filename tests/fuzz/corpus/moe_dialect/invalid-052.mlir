func.func @forced_select_i16_forced_ids(%f: tensor<?x2xi16>) {
  %ids = moe.forced_select %f experts 8 : tensor<?x2xi16> -> tensor<?x2xi32>
  return
}
