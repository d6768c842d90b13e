func.func @group_mask_keep_more_than_groups(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups 4 keep 5 by top2_sum : tensor<?x8xf32>
  return
}
