func.func @capture_ids_wrong_experts(%keys: tensor<?x16xf32>, %cap: tensor<?x?x2xi16>, %layer: index) {
  %ids = moe.topk %keys k 2 : tensor<?x16xf32> -> tensor<?x2xi32>
  %c = moe.capture %ids into %cap[%layer] experts 256 : tensor<?x2xi32> into tensor<?x?x2xi16>
  return
}
