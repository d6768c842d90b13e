func.func @capture_too_many_experts(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi32>, %layer: index) {
  %c = moe.capture %ids into %buf[%layer] experts 2147483648 : tensor<?x2xi32> into tensor<?x4x2xi32>
  return
}
