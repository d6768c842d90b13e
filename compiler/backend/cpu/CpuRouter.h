//===- CpuRouter.h - Run a routing spec on the host -------------*- C++ -*-===//
//
// The CPU backend end to end: a spec is lowered through the moe pipeline
// (kernel config, moe -> loops, loops -> LLVM) and JIT-compiled with MLIR's
// ExecutionEngine; calls split the tokens into tasks run on a thread pool.
//
// Every call checks what the kernels cannot (pointers present, sizes
// consistent) and the kernels validate the values (logits finite or -inf,
// hash and forced ids in range and distinct, the capture layer): a violation
// comes back as one line naming the tensor, the index and the rule: the
// first violation in the order of docs/semantics.md §2 (by tensor, then
// token, then index), worded as the golden reference words it. Outputs are
// unspecified after an error; no memory outside the given tensors is ever
// touched.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_CPU_CPUROUTER_H
#define MOEGEN_COMPILER_BACKEND_CPU_CPUROUTER_H

#include "compiler/spec/RoutingSpec.h"
#include "runtime/HostRouter.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <string>

namespace moegen::cpu {

struct CpuCompileOptions {
  /// Lanes over experts; 0 lets the kernel-config heuristic choose.
  int64_t vectorWidth = 0;
  /// Tokens per thread-pool task; 0 lets the heuristic choose.
  int64_t tokensPerTask = 0;
  /// Top-k method ("argmax_passes", "insertion", "lane_lists", "lane_tree"
  /// or "token_lanes"); empty lets the heuristic choose.
  std::string topk;
  /// Worker threads; 0 means one per hardware thread.
  unsigned threads = 0;
  /// When non-empty, the IR after every stage is written there
  /// (01-moe.mlir, 02-config.mlir, 03-loops.mlir, 04-llvm.mlir).
  std::string dumpDir;
};

/// One routing call: the runtime's backend-neutral call over host buffers
/// (dense, row-major, owned by the caller). run() picks replay when
/// forcedIds is given, route_hash when the spec selects by hash, else route,
/// and runs dispatch when its outputs are given.
using RouterCall = rt::HostRouteCall;

class CpuRouter {
public:
  /// Compiles every entry point of `spec`, or an error of one line when the
  /// spec is invalid or compilation fails; a compiler failure also names the
  /// dump directory or how to get one.
  static llvm::Expected<std::unique_ptr<CpuRouter>>
  compile(const RoutingSpec &spec, const CpuCompileOptions &options);
  ~CpuRouter();

  const RoutingSpec &spec() const;
  /// The kernel configuration chosen at compile time.
  int64_t vectorWidth() const;
  int64_t tokensPerTask() const;

  /// Runs route / route_hash / replay, then dispatch when its outputs are
  /// given. Returns an empty string on success, else one line.
  std::string run(const RouterCall &call);
  /// The dispatch entry point alone, over [T, k] ids from anywhere (the
  /// caller's own selection, a capture): the four outputs as in run(). The
  /// kernel checks every id is in [0, num_experts) (semantics.md §10 needs
  /// no more). "" or one line naming topk_ids[t][j].
  std::string dispatch(const int32_t *topkIds, int64_t numTokens,
                       int32_t *expertCounts, int32_t *expertOffsets,
                       int32_t *sortedSlots, int32_t *slotPositions);
  /// The permute and combine entry points (spec permute: true), checked as
  /// rt::checkPermuteCall / checkCombineCall say. "" or one line.
  std::string permute(const rt::HostPermuteCall &call);
  std::string combine(const rt::HostCombineCall &call);
  /// The update_bias entry point (rt::checkUpdateBiasCall). "" or one line.
  std::string updateBias(const rt::HostUpdateBiasCall &call);

private:
  struct Impl;
  explicit CpuRouter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace moegen::cpu

#endif // MOEGEN_COMPILER_BACKEND_CPU_CPUROUTER_H
