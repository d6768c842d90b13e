func.func @capture_i32_layer(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi32>, %layer: i32) {
  %c = "moe.capture"(%ids, %buf, %layer) <{experts = 8 : i64}> : (tensor<?x2xi32>, tensor<?x4x2xi32>, i32) -> tensor<?x4x2xi32>
  return
}
