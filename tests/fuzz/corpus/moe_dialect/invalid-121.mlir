func.func @config_without_entry() attributes {moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 8, tokens_per_task = 64, topk = insertion>} {
  return
}
