func.func @config_no_tokens_per_task() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, topk = insertion>} {
  return
}
