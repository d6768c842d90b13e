func.func @group_mask_unknown_group_score(%k: tensor<?x8xf32>) {
  %m = moe.group_mask %k groups 2 keep 1 by min : tensor<?x8xf32>
  return
}
