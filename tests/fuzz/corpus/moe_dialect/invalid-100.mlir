func.func @capture_result_type(%ids: tensor<?x2xi32>, %buf: tensor<?x4x2xi16>, %layer: index) {
  %c = "moe.capture"(%ids, %buf, %layer) <{experts = 8 : i64}> : (tensor<?x2xi32>, tensor<?x4x2xi16>, index) -> tensor<?x4x2xi32>
  return
}
