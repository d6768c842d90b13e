func.func @config_no_tokens() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 0, topk = insertion>} {
  return
}
