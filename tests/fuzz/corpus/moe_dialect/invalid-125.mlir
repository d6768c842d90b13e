func.func @kernel_arg_unknown_symbol(%ids: memref<?xi32> {moe.kernel_arg = #moe.kernel_arg<name = "ids", role = tensor, dtype = i32, shape = ["N"], access = read>}) {
  return
}
