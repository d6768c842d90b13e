func.func @capture_token_mismatch(%ids: tensor<4x2xi32>, %buf: tensor<3x4x2xi16>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<4x2xi32> into tensor<3x4x2xi16>
  return
}
