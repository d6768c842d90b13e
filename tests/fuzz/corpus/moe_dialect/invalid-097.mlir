func.func @capture_i8_buffer(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi8>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x4x2xi8>
  return
}
