//===- EmuRuntime.h - SIMT emulation runtime for gpu.funcs ------*- C++ -*-===//
//
// Runs the NVPTX backend's GPU kernels on the host. The emulation lowering
// turns each gpu.func into a host function for ONE GPU thread; this runtime
// launches a grid of them and implements the calls that lowered code makes
// at every point where GPU threads interact.
//
// What is modelled:
//  * The launch geometry: a 1-D grid of 1-D blocks. Blocks run on a pool of
//    OS threads, each block entirely on one of them; every GPU thread of a
//    block is a fiber with its own small stack. A fiber runs until it reaches
//    a synchronisation point (shuffle, warp sync, barrier, the yield after
//    an atomic) or returns; the next fiber to run is drawn at random. The
//    order of blocks and of fibers follows a seed, so a result that depends
//    on scheduling changes with the seed.
//  * Warps of 32 consecutive threads (the last one may be partial);
//    shfl.sync.bfly and redux.sync over a member mask: every member lane
//    must arrive with the same op and mask, the others go on their way
//    (tiled sub-warp segments); a shuffle's lanes outside the width segment
//    or the warp keep their value, one reading a lane outside the mask is a
//    fault.
//  * bar.warp.sync with a member mask, and the block-wide barrier.
//  * Faults, reported as one line naming kernel, block, thread and seed:
//    out-of-bounds accesses to dynamic shared memory and to the kernel's
//    argument buffers, shared-memory races (two threads touch one byte, at
//    least one writing, with no barrier or common warp sync between them),
//    a barrier, shuffle or warp sync that a returned thread never reaches,
//    deadlocks (no thread can proceed) and livelocks (threads spin through
//    atomics while nothing else moves).
//
// What is not modelled: the memory model beyond "barriers and warp syncs
// order shared-memory accesses" (fences, the visibility of plain global
// stores between blocks, and weak atomics are all sequentially consistent
// here; races on global memory are not detected); timing; warp divergence
// beyond what shfl.sync requires (lanes of a warp run independently between
// synchronisation points, as under independent thread scheduling); stack
// overflow of a fiber (256 KiB, ended by
// its guard page like any host stack overflow).
//
// The lowered code calls the extern "C" functions below through `void *ctx`,
// the per-thread context that the runtime passes as the kernel's last
// argument. A fault stops the faulting fiber for good (the access it
// announced never happens), ends its block and, soon after, the launch.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_GPUEMU_EMURUNTIME_H
#define MOEGEN_COMPILER_BACKEND_GPUEMU_EMURUNTIME_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" {
/// shfl.sync.bfly over the lanes of `mask`, in segments of `width` lanes.
/// f32 values are bitcast to i32 around the call.
__attribute__((visibility("default"))) int32_t
moegen_emu_shfl_xor_i32(void *ctx, int32_t value, int32_t offset,
                        int32_t width, int32_t mask);
/// redux.sync over the lanes of `mask`; `kind` is a moegen::gpuemu::ReduxKind.
__attribute__((visibility("default"))) int32_t
moegen_emu_redux_i32(void *ctx, int32_t value, int32_t kind, int32_t mask);
/// match.any.sync over the lanes of `mask`: the members whose `value`
/// equals this lane's.
__attribute__((visibility("default"))) int32_t
moegen_emu_match_any_i32(void *ctx, int32_t value, int32_t mask);
/// vote.sync.ballot over the lanes of `mask`: the bits of the members whose
/// `predicate` is nonzero.
__attribute__((visibility("default"))) int32_t
moegen_emu_ballot_i32(void *ctx, int32_t predicate, int32_t mask);
/// bar.warp.sync / __syncwarp(mask).
__attribute__((visibility("default"))) void moegen_emu_warp_sync(void *ctx,
                                                                 int32_t mask);
/// gpu.barrier / __syncthreads().
__attribute__((visibility("default"))) void moegen_emu_barrier(void *ctx);
/// Called right after every atomic, so that a thread spinning on a lock
/// hands over to the others.
__attribute__((visibility("default"))) void moegen_emu_yield(void *ctx);
/// gridDim.x of the launch.
__attribute__((visibility("default"))) int64_t moegen_emu_grid_dim(void *ctx);
/// The block's dynamic shared memory and its size.
__attribute__((visibility("default"))) void *moegen_emu_shared_base(void *ctx);
__attribute__((visibility("default"))) int64_t
moegen_emu_shared_bytes(void *ctx);
/// Called before every load and store. isWrite: 0 read, 1 write, 2 atomic
/// read-modify-write (atomics on one address do not race with each other).
/// `site` names the access in the kernel (the lowering numbers them): the
/// lanes of a warp storing to one address from ONE site between warp syncs
/// are a single warp-wide store instruction, not a race.
__attribute__((visibility("default"))) void
moegen_emu_check_access(void *ctx, const void *address, int64_t bytes,
                        int32_t isWrite, int32_t isShared, int32_t site);
}

namespace moegen::gpuemu {

/// moegen_emu_redux_i32's `kind`: redux.sync's operations on i32.
enum ReduxKind : int32_t {
  kReduxAdd,
  kReduxAnd,
  kReduxOr,
  kReduxXor,
  kReduxMax,
  kReduxMin,
  kReduxUMax,
  kReduxUMin,
};

/// A kernel argument's buffer: global memory the kernel may touch.
struct MemoryRegion {
  const void *base = nullptr;
  size_t bytes = 0;
  std::string name;
};

struct LaunchConfig {
  /// The kernel's name, for messages.
  std::string kernel;
  int64_t gridDim = 1, blockDim = 1, sharedBytes = 0;
  /// Orders blocks and threads; printed in every fault message.
  uint64_t seed = 0;
  /// OS threads running blocks; 0: the hardware concurrency.
  unsigned workerThreads = 0;
  /// A cooperative launch: every block is resident at once (one OS thread
  /// each, whatever workerThreads says), so blocks may wait for each other
  /// (a grid barrier spinning on atomics).
  bool cooperative = false;
  /// The global memory the kernel may touch; anything else is out of bounds.
  std::vector<MemoryRegion> regions;
  /// Detect shared-memory races.
  bool checkRaces = true;
};

/// One GPU thread of a lowered kernel, in MLIR's packed calling convention:
/// args[i] points at the i-th argument: the kernel's parameters (8 bytes
/// each), then int64_t blockIdx, int64_t threadIdx, then void *ctx.
using EmuKernelFn = void (*)(void **args);

/// Runs the grid to completion. `params` holds the kernel's parameter values
/// (8 bytes each, in order). Returns "" on success, else one line naming the
/// kernel, block, thread (warp, lane) and what happened, ending with
/// "(seed S; MOEGEN_EMU_SEED=S reproduces it)".
std::string launch(const LaunchConfig &config, EmuKernelFn kernel,
                   const std::vector<uint64_t> &params);

/// MOEGEN_EMU_SEED from the environment when it holds a decimal number,
/// else `fallback`.
uint64_t seedFromEnvironment(uint64_t fallback);

} // namespace moegen::gpuemu

#endif // MOEGEN_COMPILER_BACKEND_GPUEMU_EMURUNTIME_H
