func.func @group_mask_zero_groups(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups 0 keep 1 by max : tensor<?x8xf32>
  return
}
