func.func @launch_untyped() attributes {moe.launch = {block_dim = 32}} {
  return
}
