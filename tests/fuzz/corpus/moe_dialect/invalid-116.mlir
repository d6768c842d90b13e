func.func @config_unknown_target() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = tpu, vector_width = 8, tokens_per_task = 64, topk = insertion>} {
  return
}
