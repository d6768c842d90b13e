func.func @kernel_arg_static_for_dynamic(%ids: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "ids", role = tensor, dtype = i32, shape = [64, 2], access = read>}) {
  return
}
