func.func @kernel_arg_unknown(%ids: memref<?x2xi32> {moe.kernel_bogus = 1}) {
  return
}
