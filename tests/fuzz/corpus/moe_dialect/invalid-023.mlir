func.func @group_mask_top2_sum_one_per_group(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups 8 keep 4 by top2_sum : tensor<?x8xf32>
  return
}
