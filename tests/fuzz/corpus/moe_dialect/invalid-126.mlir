func.func @kernel_arg_shaped_scalar(%layer: index {moe.kernel_arg = #moe.kernel_arg<name = "layer", role = scalar, dtype = i64, shape = [2], access = read>}) {
  return
}
