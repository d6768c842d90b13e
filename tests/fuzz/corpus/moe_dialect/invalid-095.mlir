func.func @capture_buffer_k(%ids: tensor<?x2xi32>, %buf: tensor<?x4x4xi16>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x4x4xi16>
  return
}
