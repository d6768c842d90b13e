func.func @group_mask_zero_keep(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups 4 keep 0 by top2_sum : tensor<?x8xf32>
  return
}
