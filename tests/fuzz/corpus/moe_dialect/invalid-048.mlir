func.func @forced_select_empty_k(%f: tensor<4x0xi32>) {
  %ids = moe.forced_select %f experts 8 : tensor<4x0xi32> -> tensor<4x0xi32>
  return
}
