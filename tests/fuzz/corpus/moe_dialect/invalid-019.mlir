func.func @group_mask_more_groups_than_experts(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups 16 keep 1 by max : tensor<?x8xf32>
  return
}
