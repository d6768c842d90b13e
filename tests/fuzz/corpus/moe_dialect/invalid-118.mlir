func.func @config_width_not_power_of_two() attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<target = cpu, vector_width = 6, tokens_per_task = 64, topk = insertion>} {
  return
}
