func.func @forced_select_token_mismatch(%f: tensor<4x2xi64>) {
  %ids = moe.forced_select %f experts 8 : tensor<4x2xi64> -> tensor<5x2xi32>
  return
}
