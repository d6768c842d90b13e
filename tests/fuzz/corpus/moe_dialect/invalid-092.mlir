func.func @capture_dynamic_k(%ids: tensor<?x?xi32>, %buf: tensor<?x4x2xi32>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x?xi32> into tensor<?x4x2xi32>
  return
}
