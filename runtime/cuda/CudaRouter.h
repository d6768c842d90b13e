//===- CudaRouter.h - Launch moegen routing kernels on a stream -*- C++ -*-===//
//
// Loads a `moegen compile --emit=cubin -o DIR` output directory (or a JIT
// cache entry) into a CUDA context and launches its kernels on the caller's
// stream, in the style of MaxText's RouteOutput / RouteMetadata: device
// pointers in, device pointers out.
//
//   auto router = moegen::rt::CudaRouter::load("out/");
//   moegen::rt::RouteBuffers buffers = router->allocateBuffers(maxTokens);
//   moegen::rt::RouteInputs in;
//   in.numTokens = T; in.logits = dLogits; in.bias = dBias;
//   moegen::rt::RouteOutputs out = router->route(in, buffers, stream);
//   ...                               // out.topkIds, out.topkWeights, ...
//   router->checkErrors(stream);      // optional: syncs, throws on bad input
//
// The launch path (route, routeHash, replay, dispatch) neither allocates nor
// synchronizes: it checks the arguments on the host and calls cuLaunchKernel
// once or twice (dispatch: cuLaunchCooperativeKernel), nothing else, so it
// can be captured in a CUDA graph. No call zeroes the error record: it
// starts at zero, the kernels only move it towards the earliest violation,
// and a report (checkErrors, readError) zeroes it again.
// Dispatch keeps its histograms in the router's scratch buffer, allocated
// once at load: one router's dispatches must not run on several streams at
// once (load one router per concurrent stream). Kernels validate the values they read (logits,
// ids, the capture layer) into the error record; checkErrors() or
// readError() (which synchronize the stream) turn it into the one-line
// message of docs/semantics.md §2. All errors are moegen::rt::Error.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_CUDA_CUDAROUTER_H
#define MOEGEN_RUNTIME_CUDA_CUDAROUTER_H

#include "runtime/Manifest.h"
#include "runtime/cuda/CudaDriver.h"

#include <cuda.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace moegen::rt {

/// Inputs of route / routeHash / replay: device pointers to dense,
/// row-major tensors owned by the caller. E = num_experts, k = top_k.
struct RouteInputs {
  int64_t numTokens = 0;
  /// [T, E] of the manifest's logits_dtype (f32, or bf16 / f16 bits).
  CUdeviceptr logits = 0;
  /// [E] f32; route only, required exactly when its kernel takes a bias.
  CUdeviceptr bias = 0;
  /// routeHash only: [T] int32 token ids and the [hashVocab, k] int32 table.
  CUdeviceptr tokenIds = 0;
  CUdeviceptr hashTable = 0;
  int64_t hashVocab = 0;
  /// replay only: [T, k] int32 forced expert ids (see Recorder::layer).
  CUdeviceptr forcedIds = 0;
  /// route / routeHash with capture: the [T, captureLayers, k] buffer of the
  /// manifest's capture_dtype, of which layer captureLayer is written.
  /// Required when the kernel has a capture parameter (and T > 0).
  CUdeviceptr capture = 0;
  int64_t captureLayers = 0;
  int64_t captureLayer = 0;
  /// [T, 1] of the logits' dtype: the shared expert's gate logits, required
  /// exactly when the kernel takes them (spec shared_expert_gate: true).
  CUdeviceptr sharedGateLogits = 0;
};

/// Outputs (RouteOutput, and with dispatch RouteMetadata): device pointers.
struct RouteOutputs {
  /// [T, k] int32 and [T, k] f32; required.
  CUdeviceptr topkIds = 0;
  CUdeviceptr topkWeights = 0;
  /// [T, 1] f32, sigmoid(shared_gate_logits); required with them.
  CUdeviceptr sharedGate = 0;
  /// Dispatch metadata: [E], [E + 1], [T * k], [T * k] int32. Either all
  /// four (and the manifest has a dispatch kernel) or none.
  CUdeviceptr expertCounts = 0;
  CUdeviceptr expertOffsets = 0;
  CUdeviceptr sortedSlots = 0;
  CUdeviceptr slotPositions = 0;
  /// The error record, 6 int64 (48 bytes, 8-byte aligned), zeroed before
  /// its first call (allocateBuffers' is); no call zeroes it, a report
  /// does. 0: the router's own record, which calls on several streams at
  /// once must not share.
  CUdeviceptr error = 0;

  bool hasDispatch() const {
    return expertCounts || expertOffsets || sortedSlots || slotPositions;
  }
};

/// Permute: `permuted[p, :] = hidden[sortedSlots[p] / k, :]` for p < T * k,
/// rows of H = hiddenSize elements of the manifest's hidden_dtype.
struct PermuteArgs {
  int64_t numTokens = 0;
  int64_t hiddenSize = 0;
  CUdeviceptr hidden = 0;       ///< [T, H]
  CUdeviceptr sortedSlots = 0;  ///< [T * k] int32, from dispatch
  CUdeviceptr permuted = 0;     ///< [T * k, H], written
  /// The error record (see RouteOutputs::error); 0: the router's own.
  CUdeviceptr error = 0;
};

/// Combine: `combined[t, :] = sum_j topkWeights[t, j] *
/// expertOutput[slotPositions[t * k + j], :]` in f32, rounded once.
struct CombineArgs {
  int64_t numTokens = 0;
  int64_t hiddenSize = 0;
  CUdeviceptr topkWeights = 0;    ///< [T, k] f32
  CUdeviceptr slotPositions = 0;  ///< [T * k] int32, from dispatch
  CUdeviceptr expertOutput = 0;   ///< [T * k, H]
  CUdeviceptr combined = 0;       ///< [T, H], written
  CUdeviceptr error = 0;
};

/// The bias update (a gating program's update_bias entry): [E] each.
struct UpdateBiasArgs {
  CUdeviceptr bias = 0;         ///< f32
  CUdeviceptr expertCounts = 0; ///< int32 loads
  CUdeviceptr updatedBias = 0;  ///< f32, written; may be `bias`
  CUdeviceptr error = 0;
};

/// Device memory from cuMemAlloc in a given context; freed on destruction.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(const CudaDriver &driver, CUcontext context, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer &&other) noexcept;
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;

  CUdeviceptr get() const { return pointer; }
  size_t size() const { return bytes; }
  /// Copies through the stream and waits for it (for tests and tools, not
  /// for the hot path).
  void upload(const void *host, size_t size, CUstream stream) const;
  void download(void *host, size_t size, CUstream stream) const;

private:
  void release();
  const CudaDriver *driver = nullptr;
  CUcontext context = nullptr;
  CUdeviceptr pointer = 0;
  size_t bytes = 0;
};

/// Library-allocated outputs for calls of up to maxTokens tokens.
class RouteBuffers {
public:
  RouteBuffers() = default;
  int64_t maxTokens() const { return capacity; }
  /// Pointers to every buffer (dispatch ones only when allocated).
  RouteOutputs outputs() const;

private:
  friend class CudaRouter;
  int64_t capacity = 0;
  DeviceBuffer ids, weights, sharedGate, counts, offsets, slots, positions,
      error;
};

struct LoadOptions {
  /// The driver to use; null: CudaDriver::get().
  const CudaDriver *driver = nullptr;
  /// When no context is current on the calling thread, the kernels are
  /// loaded into this device's primary context (the CUDA runtime's), which
  /// the router retains.
  int device = 0;
  /// Check that every pointer lies in memory the driver knows, and that its
  /// allocation extends over the tensor's bytes (cuPointerGetAttributes,
  /// one call per pointer). Catches buffers that are too small unless they
  /// sit inside a larger allocation (a caching allocator's block).
  bool checkBufferBounds = true;
  /// Skip the cubin and JIT-compile the PTX (when the manifest has both).
  bool preferPtx = false;
  /// A call that routes and dispatches at most a fused kernel's slots
  /// (docs/kernel-abi.md, "Fused dispatch") launches that one kernel
  /// instead of the route and the dispatch. False: always the two (for
  /// comparing them).
  bool fusedDispatch = true;
};

class CudaRouter {
public:
  /// Loads the manifest and kernels of `directory` into the current context
  /// (see LoadOptions::device when none is current): the cubin when it runs
  /// on the context's device, else the PTX through the driver's JIT. Throws
  /// Error: Manifest (bad manifest), Arch (neither binary runs on the
  /// device), NoDriver / NoDevice / Driver.
  static std::unique_ptr<CudaRouter> load(const std::string &directory,
                                          const LoadOptions &options = {});
  ~CudaRouter();
  CudaRouter(const CudaRouter &) = delete;
  CudaRouter &operator=(const CudaRouter &) = delete;

  const Manifest &manifest() const;
  CUcontext context() const;
  /// The device's compute capability, e.g. {9, 0}.
  int deviceMajor() const;
  int deviceMinor() const;
  /// "cubin" or "ptx": what was loaded.
  const char *loadedBinaryKind() const;
  bool hasEntry(EntryKind entry) const;
  /// Whether a call of `entry` on `numTokens` tokens that also dispatches
  /// runs as one kernel (a fused dispatch; LoadOptions::fusedDispatch).
  bool fusesDispatch(EntryKind entry, int64_t numTokens) const;
  const CudaDriver &driver() const;

  /// Route: top-k selection (route) over logits [+ bias], writing ids,
  /// weights, the capture layer when given, and dispatch metadata when its
  /// outputs are given. Asynchronous on `stream`.
  void route(const RouteInputs &inputs, const RouteOutputs &outputs,
             CUstream stream) const;
  /// Hash selection (route_hash): token_ids and the hash table.
  void routeHash(const RouteInputs &inputs, const RouteOutputs &outputs,
                 CUstream stream) const;
  /// Replay: the forced ids are validated on device and used as the
  /// selection; weights are recomputed from the logits.
  void replay(const RouteInputs &inputs, const RouteOutputs &outputs,
              CUstream stream) const;
  /// Dispatch metadata alone from [numTokens, k] int32 ids on device.
  void dispatch(CUdeviceptr topkIds, int64_t numTokens,
                const RouteOutputs &outputs, CUstream stream) const;
  /// The permute and combine entry points (spec permute: true); each
  /// launches once. Asynchronous on `stream`.
  void permute(const PermuteArgs &args, CUstream stream) const;
  void combine(const CombineArgs &args, CUstream stream) const;
  /// The update_bias entry point: launches one warp. Asynchronous on
  /// `stream`.
  void updateBias(const UpdateBiasArgs &args, CUstream stream) const;

  /// The same into library-allocated buffers (numTokens <= maxTokens());
  /// returns the pointers written. Dispatch runs when `buffers` has its
  /// outputs.
  RouteOutputs route(const RouteInputs &inputs, const RouteBuffers &buffers,
                     CUstream stream) const;
  RouteOutputs routeHash(const RouteInputs &inputs, const RouteBuffers &buffers,
                         CUstream stream) const;
  RouteOutputs replay(const RouteInputs &inputs, const RouteBuffers &buffers,
                      CUstream stream) const;

  /// Allocates outputs for up to maxTokens tokens (not on the hot path),
  /// with dispatch buffers when `withDispatch` and the manifest has a
  /// dispatch kernel.
  RouteBuffers allocateBuffers(int64_t maxTokens,
                               bool withDispatch = true) const;
  /// cuMemAlloc in the router's context.
  DeviceBuffer allocate(size_t bytes) const;

  /// Synchronizes `stream` and reads the error record (`record`, or the
  /// router's own): the one-line message of the first violation, or ""
  /// when the calls since the record was zeroed saw none. A violation
  /// reported is cleared (the record zeroed on `stream`), so the next
  /// report covers the calls after this one. `context`, when non-empty,
  /// prefixes the message ("layer 3: forced_ids[...]...").
  std::string readError(CUstream stream, CUdeviceptr record = 0,
                        std::string_view context = {}) const;
  /// readError(), throwing Error(Kind::Kernel) with the message when there
  /// is one.
  void checkErrors(CUstream stream, CUdeviceptr record = 0,
                   std::string_view context = {}) const;

private:
  struct Impl;
  explicit CudaRouter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_CUDA_CUDAROUTER_H
