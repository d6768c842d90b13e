func.func @group_mask_empty_experts(%k: tensor<4x0xf32>) {
  %m = moe.group_mask %k groups 1 keep 1 by max : tensor<4x0xf32>
  return
}
