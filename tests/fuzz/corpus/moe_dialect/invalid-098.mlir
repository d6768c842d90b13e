func.func @capture_rank2_buffer(%ids: tensor<?x2xi32>, %buf: tensor<?x2xi32>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x2xi32> into tensor<?x2xi32>
  return
}
