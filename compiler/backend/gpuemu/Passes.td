//===- Passes.td - The GPU emulator's lowering -------------*- tablegen -*-===//

#ifndef MOEGEN_COMPILER_BACKEND_GPUEMU_PASSES_TD
#define MOEGEN_COMPILER_BACKEND_GPUEMU_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertGpuToEmulator : Pass<"convert-gpu-to-emulator", "::mlir::ModuleOp"> {
  let summary = "run the NVPTX backend's gpu.func kernels on the host";
  let description = [{
    Turns every `gpu.func` kernel of the NVPTX backend's gpu stage (after
    lane distribution, shared-memory rows, shuffles and warp syncs) into a
    host `func.func` that runs ONE GPU thread: its parameters, then
    `blockIdx : i64`, `threadIdx : i64` and the emulator's per-thread
    context `!llvm.ptr`. The GPU operations become calls into the emulation
    runtime (compiler/backend/gpuemu/EmuRuntime.h), whose fibers run the
    threads of a block and meet at every shuffle, warp sync and barrier:

    - `gpu.thread_id x`, `gpu.block_id x`: the new arguments;
      `gpu.lane_id`: threadIdx mod 32;
    - `gpu.shuffle xor`: `moegen_emu_shfl_xor_i32` (f32 through a
      bitcast), `valid` computed as PTX defines it;
    - `nvvm.bar.warp.sync`, `gpu.barrier`: `moegen_emu_warp_sync`,
      `moegen_emu_barrier`;
    - `gpu.dynamic_shared_memory`: the block's buffer
      (`moegen_emu_shared_base`, `moegen_emu_shared_bytes`); workgroup
      memrefs become plain host memrefs;
    - every `memref.load`, `memref.store` and `memref.atomic_rmw` is
      preceded by `moegen_emu_check_access` (address, bytes, write,
      shared), so that out-of-bounds accesses and shared-memory races are
      reported before they happen; every atomic is followed by
      `moegen_emu_yield` so that a spin lock hands over to the fiber
      holding the lock.

    The `gpu.module` goes away. `inject-fault` breaks the kernels on
    purpose, to prove that the emulator's tests catch such bugs:
    `lane-mapping` (lane = threadIdx mod 32 + 1), `no-warp-sync` (every
    warp sync dropped), `shared-row-offset` (every shared row starts 4
    bytes later).
  }];
  let options = [
    Option<"injectFault", "inject-fault", "std::string", /*default=*/"\"\"",
           "Test only: lane-mapping, no-warp-sync or shared-row-offset">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::memref::MemRefDialect"];
}

#endif // MOEGEN_COMPILER_BACKEND_GPUEMU_PASSES_TD
