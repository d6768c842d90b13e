func.func @group_mask_negative_groups(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups -2 keep 1 by max : tensor<?x8xf32>
  return
}
