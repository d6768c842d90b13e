func.func @config_untyped() attributes {moe.entry = "route", moe.kernel_config = 8} {
  return
}
