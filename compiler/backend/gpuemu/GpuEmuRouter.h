//===- GpuEmuRouter.h - Routing specs on the emulated GPU -------*- C++ -*-===//
//
// The NVPTX backend's kernels, run on the host: a spec is compiled by the
// NVPTX pipeline up to its gpu stage (the very gpu.funcs that become PTX),
// lowered by convert-gpu-to-emulator to host functions of one GPU thread,
// JIT-compiled, and registered with the emulated CUDA driver
// (EmuCudaDriver.h). The kernel directory written for it holds the
// manifest the NVPTX backend derives, so the runtime's own CudaRouter
// loads, checks and launches the kernels exactly as on a GPU; only the
// driver underneath is the emulator. docs/gpu-emulator.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_GPUEMU_GPUEMUROUTER_H
#define MOEGEN_COMPILER_BACKEND_GPUEMU_GPUEMUROUTER_H

#include "compiler/backend/nvptx/NvptxCompiler.h"
#include "compiler/spec/RoutingSpec.h"
#include "runtime/HostRouter.h"
#include "runtime/cuda/CudaRouter.h"

#include "llvm/Support/Error.h"

#include <memory>
#include <string>
#include <vector>

namespace moegen::gpuemu {

struct GpuEmuOptions {
  /// The NVPTX compile (arch, tokens per block, top-k method, dump
  /// directory); the arch only names the manifest's target.
  nvptx::NvptxCompileOptions nvptx;
  /// More than one: a route (and replay) kernel per token bucket, as
  /// `moegen compile --tuning-db` builds them (nvptx::compileBuckets), the
  /// runtime launching each call's bucket.
  std::vector<nvptx::BucketSchedule> buckets;
  /// Test only: a fault convert-gpu-to-emulator injects (lane-mapping,
  /// no-warp-sync, shared-row-offset); empty: $MOEGEN_EMU_INJECT_FAULT, else
  /// none.
  std::string injectFault;
  /// rt::LoadOptions::fusedDispatch: small calls that dispatch launch the
  /// route kernel with a fused dispatch; false: the route and the dispatch.
  bool fusedDispatch = true;
};

/// A spec's kernels on the emulated GPU, behind the runtime's HostRouter
/// (backend name "gpu-emu"). Errors: a CompileError (nvptx::takeCompileError)
/// when the spec does not compile, a string error when the emulator cannot
/// take the kernels. Input violations come back from run() as on the GPU; a
/// kernel fault (out of bounds, race, deadlock) is thrown by run() as an
/// rt::Error of kind Driver whose message names kernel, block, thread and
/// the seed.
llvm::Expected<std::unique_ptr<rt::HostRouter>>
compileEmulatedRouter(const RoutingSpec &spec, const GpuEmuOptions &options);

/// The runtime's device router under a router compileEmulatedRouter made
/// (launches on emulated device pointers, e.g. dispatch alone); null for
/// any other router.
const rt::CudaRouter *emulatedDevice(const rt::HostRouter &router);

} // namespace moegen::gpuemu

#endif // MOEGEN_COMPILER_BACKEND_GPUEMU_GPUEMUROUTER_H
