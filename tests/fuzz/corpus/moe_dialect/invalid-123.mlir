func.func @launch_empty_block() attributes {moe.launch = #moe.launch<block_dim = 0, tokens_per_block = 1, dynamic_shared_memory_bytes = 0>} {
  return
}
