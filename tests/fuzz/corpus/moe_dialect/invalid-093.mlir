func.func @capture_empty_k(%ids: tensor<?x0xi32>, %buf: tensor<?x4x0xi32>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 8 : tensor<?x0xi32> into tensor<?x4x0xi32>
  return
}
