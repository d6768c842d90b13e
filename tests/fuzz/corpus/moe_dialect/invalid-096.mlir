func.func @capture_i16_too_many_experts(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi16>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 32768 : tensor<?x2xi32> into tensor<?x4x2xi16>
  return
}
