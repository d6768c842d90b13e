func.func @group_mask_result_type(%k: tensor<?x8xf32>) {
  %m = "moe.group_mask"(%k) <{group_score = 1 : i32, groups = 2 : i64, keep = 1 : i64}> : (tensor<?x8xf32>) -> tensor<4x8xf32>
  return
}
