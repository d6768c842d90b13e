//===----------------------------------------------------------------------===//
// moe.group_mask
//===----------------------------------------------------------------------===//

func.func @group_mask_dynamic_experts(%k: tensor<4x?xf32>) {
  %m = moe.group_mask %k groups 2 keep 1 by max : tensor<4x?xf32>
  return
}
