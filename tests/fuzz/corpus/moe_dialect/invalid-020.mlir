func.func @group_mask_groups_not_dividing(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups 3 keep 1 by max : tensor<?x8xf32>
  return
}
