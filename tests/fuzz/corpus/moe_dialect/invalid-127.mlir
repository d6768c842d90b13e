func.func @kernel_arg_wrong_rank(%ids: memref<?x2xi32> {moe.kernel_arg = #moe.kernel_arg<name = "ids", role = tensor, dtype = i32, shape = ["T"], access = read>}) {
  return
}
