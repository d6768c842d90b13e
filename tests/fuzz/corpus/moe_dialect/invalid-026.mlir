func.func @group_mask_f16_keys(%k: tensor<?x8xf16>) {
  %m = moe.group_mask %k groups 2 keep 1 by max : tensor<?x8xf16>
  return
}
