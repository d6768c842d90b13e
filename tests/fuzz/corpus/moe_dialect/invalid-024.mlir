func.func @group_mask_top2_sum_single_expert(%k: tensor<?x1xf32>) {
  %m = moe.group_mask %k groups 1 keep 1 by top2_sum : tensor<?x1xf32>
  return
}
