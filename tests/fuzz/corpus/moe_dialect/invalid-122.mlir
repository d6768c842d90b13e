func.func @config_unknown_topk() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = heap>} {
  return
}
