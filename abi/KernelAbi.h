//===- KernelAbi.h - The kernel ABI compiler and runtime share --*- C++ -*-===//
//
// What every moegen kernel argument is: its name, how it is passed, its
// element type, its shape in symbols and what the kernel does with it. The
// catalogue below is the one statement of that contract:
//
// - convert-moe-to-loops stamps each kernel argument with a
//   `#moe.kernel_arg` attribute built from it (and checks the IR against it);
// - the CPU backend binds the caller's buffers to those arguments by name;
// - the NVPTX backend's manifest lists the stamped arguments, and the
//   runtime checks a manifest against the catalogue before it launches.
//
// Plain C++20, no LLVM, no CUDA: the dialect's lowerings, the compiler and
// the runtime all include it. docs/kernel-abi.md describes it in prose
// (KernelAbiTest checks that its tensor table matches this file).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_ABI_KERNELABI_H
#define MOEGEN_ABI_KERNELABI_H

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace moegen::abi {

enum class DType { F32, BF16, F16, I16, I32, I64 };
/// "f32", "bf16", "f16", "i16", "i32", "i64".
std::string_view toString(DType dtype);
std::optional<DType> parseDType(std::string_view text);
size_t byteSize(DType dtype);

/// The entry points a spec compiles to.
/// Permute and combine move hidden rows, not routing data: a spec emits
/// them with `permute: true` (docs/kernel-abi.md, "Permute and combine").
/// UpdateBias is auxiliary-loss-free balancing's step (DeepSeek-V3): the
/// bias moved against each expert's load (gating programs only).
enum class EntryKind {
  Route,
  RouteHash,
  Replay,
  Dispatch,
  Permute,
  Combine,
  UpdateBias
};
/// "route", "route_hash", "replay", "dispatch", "permute", "combine",
/// "update_bias".
std::string_view toString(EntryKind entry);
std::optional<EntryKind> parseEntryKind(std::string_view text);
inline constexpr std::array<EntryKind, 7> kEntryKinds = {
    EntryKind::Route,    EntryKind::RouteHash, EntryKind::Replay,
    EntryKind::Dispatch, EntryKind::Permute,   EntryKind::Combine,
    EntryKind::UpdateBias};
/// The threads of the update_bias kernel's one block (one warp).
inline constexpr int64_t kUpdateBiasBlockThreads = 32;

enum class Access { Read, Write, ReadWrite };
/// "read", "write", "readwrite".
std::string_view toString(Access access);
std::optional<Access> parseAccess(std::string_view text);

/// How a kernel argument is passed.
enum class ArgRole {
  /// A tensor the caller owns: a memref on the host, a device pointer
  /// followed by its dynamic sizes on the GPU.
  Tensor,
  /// An int64 value (the capture layer).
  Scalar,
  /// The error record the backend allocates, zeroes and reads.
  ErrorRecord,
  /// The token range [begin, end) of one host task; GPU kernels derive
  /// their token from the launch grid instead.
  TokenBegin,
  TokenEnd,
  /// Device memory the runtime allocates once per loaded module and keeps
  /// between calls (the GPU dispatch's histograms and grid barrier).
  Scratch,
};
/// "tensor", "scalar", "error_record", "token_begin", "token_end",
/// "scratch".
std::string_view toString(ArgRole role);
std::optional<ArgRole> parseArgRole(std::string_view text);

/// One dimension of a tensor of the catalogue.
enum class DimRule {
  Tokens,       ///< T, dynamic
  HashRows,     ///< V, the hash table's rows, dynamic
  Layers,       ///< L, the capture buffer's layers, dynamic
  Slots,        ///< T * k, dynamic
  Hidden,       ///< H, the hidden size, dynamic
  Experts,      ///< E, static
  ExpertsPlus1, ///< E + 1, static
  TopK,         ///< k, static
  One,          ///< 1, static (one value per token)
  ErrorWords,   ///< the error record's words on the target, static
  DispatchScratchWords, ///< dispatchScratchWords(E), static
  ExpertChoiceScratchWords, ///< expertChoiceScratchWords(E), static
};
/// "T", "V", "L", "T*k", "H", "E", "E+1", "k", "1", "W", "S", "S_ec".
std::string_view toString(DimRule rule);
/// Whether the dimension is a run-time size (a symbol in the manifest).
constexpr bool isDynamic(DimRule rule) {
  return rule == DimRule::Tokens || rule == DimRule::HashRows ||
         rule == DimRule::Layers || rule == DimRule::Slots ||
         rule == DimRule::Hidden;
}

/// Where an argument's element type comes from.
enum class DTypeRule {
  Fixed,   ///< ArgSpec::dtype
  Logits,  ///< the spec's logits dtype (f32, bf16, f16)
  Capture, ///< i16 when E <= kMaxI16CaptureExperts, else i32
  Hidden,  ///< the spec's hidden dtype (f32, bf16, f16)
};
inline constexpr int64_t kMaxI16CaptureExperts = 32767;
constexpr DType captureDType(int64_t numExperts) {
  return numExperts <= kMaxI16CaptureExperts ? DType::I16 : DType::I32;
}

/// One argument of an entry point, as the catalogue states it.
struct ArgSpec {
  std::string_view name;
  ArgRole role = ArgRole::Tensor;
  /// Used in order; `rank` of them.
  std::array<DimRule, 3> dims{};
  int rank = 0;
  DTypeRule dtypeRule = DTypeRule::Fixed;
  DType dtype = DType::I32;
  Access access = Access::Read;
  /// Whether every kernel of the entry takes it (bias and capture depend on
  /// the spec).
  bool required = true;
  /// Taken only by a route, route_hash or replay kernel with a fused
  /// dispatch (the dispatch's outputs and scratch): no part of the entry
  /// point's own signature.
  bool fusedDispatchOnly = false;

  std::span<const DimRule> shape() const { return {dims.data(), size_t(rank)}; }
};

/// Every argument an entry point's kernel may take, inputs first, then
/// outputs, the error record and (host kernels) the token range. Kernels
/// take them in the order the IR gives; backends bind them by name.
std::span<const ArgSpec> entrySignature(EntryKind entry);
/// The argument called `name` of `entry`'s kernels, or null.
const ArgSpec *findArg(EntryKind entry, std::string_view name);

//===----------------------------------------------------------------------===//
// The GPU dispatch: a parallel stable counting sort in one cooperative launch
// (docs/kernel-abi.md, "GPU dispatch"). Every warp of the grid owns a
// contiguous range of slots (a partition); the scratch buffer holds the grid
// barrier, one word per partition and a histogram of E words per partition.
// The compiler sizes the buffer and the runtime the grid from these rules.
//===----------------------------------------------------------------------===//

inline constexpr int64_t kDispatchWarpsPerBlock = 8;
inline constexpr int64_t kDispatchBlockThreads = 32 * kDispatchWarpsPerBlock;
/// Slots a block is given before the grid grows past one block per SM: a
/// few rounds of 32 per warp hide the latency of the id loads.
inline constexpr int64_t kDispatchSlotsPerBlock = 2048;
/// Enough blocks for every SM of today's GPUs (132 to 148).
inline constexpr int64_t kDispatchMaxBlocks = 256;
/// The histograms' budget, in 4-byte words (8 MiB): large expert counts get
/// fewer, longer partitions instead of more memory.
inline constexpr int64_t kDispatchScratchBudgetWords = int64_t(1) << 21;
/// Words of the scratch buffer before the partitions' sums: the grid
/// barrier's arrival count and generation, then the ticket of a route with
/// a fused dispatch (below). Each is 0 between calls (the expert-choice
/// route's layout leaves them so too).
inline constexpr int64_t kDispatchHeaderWords = 3;
inline constexpr int64_t kDispatchTicketWord = 2;

/// The largest grid a dispatch kernel for `numExperts` experts may use.
constexpr int64_t dispatchMaxBlocks(int64_t numExperts) {
  int64_t byBudget = kDispatchScratchBudgetWords /
                     (kDispatchWarpsPerBlock * (numExperts < 1 ? 1 : numExperts));
  return byBudget < 1 ? 1
         : byBudget > kDispatchMaxBlocks ? kDispatchMaxBlocks
                                         : byBudget;
}
/// The scratch buffer's size in int32 words: the barrier, one sum per
/// partition and E counters per partition, for the largest grid, then the
/// E + 1 offsets of the capped counts (a dispatch with a capacity).
constexpr int64_t dispatchScratchWords(int64_t numExperts) {
  int64_t partitions = dispatchMaxBlocks(numExperts) * kDispatchWarpsPerBlock;
  return kDispatchHeaderWords + partitions + partitions * numExperts +
         numExperts + 1;
}
/// A grid of one block (up to kDispatchSlotsPerBlock slots: a decode step)
/// keeps its sums, counters and capped offsets in shared memory instead of
/// the scratch buffer, in the scratch's layout for its 8 partitions, up to
/// this many experts (36,900 bytes at 1024, below the 48 KiB a kernel gets
/// without asking): each phase's counter reads and updates are then a
/// shared-memory access, not an L2 round trip.
inline constexpr int64_t kDispatchSharedMaxExperts = 1024;
/// Words of those shared counters for a block of `warps` warps (its
/// partitions; 0: above kDispatchSharedMaxExperts, the one-block grid uses
/// the scratch buffer too).
constexpr int64_t dispatchSharedWords(int64_t numExperts,
                                      int64_t warps = kDispatchWarpsPerBlock) {
  return numExperts > kDispatchSharedMaxExperts
             ? 0
             : warps + warps * numExperts + numExperts + 1;
}
/// The dispatch kernel's dynamic shared memory, in bytes (the manifest's
/// launch.dynamic_shared_memory_bytes).
constexpr int64_t dispatchSharedBytes(int64_t numExperts) {
  return 4 * dispatchSharedWords(numExperts);
}

//===----------------------------------------------------------------------===//
// A route with a fused dispatch (docs/kernel-abi.md, "Fused dispatch"): for
// calls of at most kFusedDispatchMaxSlots slots (a decode step), one kernel
// routes and then sorts. After its tokens' ids are stored, each block takes
// a ticket (scratch word kDispatchTicketWord); the block drawing the last
// runs the one-block dispatch on its own warps (its partitions) and puts
// the ticket back to 0. No second launch, no cooperative grid.
//===----------------------------------------------------------------------===//

/// The largest T * k a fused kernel sorts: as many as one dispatch block.
inline constexpr int64_t kFusedDispatchMaxSlots = kDispatchSlotsPerBlock;
/// Shared memory a fused kernel's dispatch may take without asking for
/// more: below it the counters live in shared memory, above in scratch.
inline constexpr int64_t kFusedDispatchSharedBudgetBytes = 48 * 1024;
/// Whether a route block of `warps` warps can run the dispatch: its
/// partitions must fit the scratch buffer's layout (dispatchScratchWords).
constexpr bool fusedDispatchFits(int64_t numExperts, int64_t warps) {
  return warps >= 1 &&
         warps <= dispatchMaxBlocks(numExperts) * kDispatchWarpsPerBlock;
}
/// Words of shared counters of a fused dispatch on `warps` warps, laid out
/// as dispatchSharedWords; 0 when they would not fit the budget (then in
/// the scratch buffer).
constexpr int64_t fusedDispatchCounterWords(int64_t numExperts,
                                            int64_t warps) {
  const int64_t words = dispatchSharedWords(numExperts, warps);
  return 4 * (words + 1) > kFusedDispatchSharedBudgetBytes ? 0 : words;
}
/// The dynamic shared memory the dispatch part of a fused kernel needs: its
/// counters and one word that tells the block it drew the last ticket. The
/// route's rows are dead by then and share the same bytes.
constexpr int64_t fusedDispatchSharedBytes(int64_t numExperts, int64_t warps) {
  return 4 * (fusedDispatchCounterWords(numExperts, warps) + 1);
}

/// The grid of a cooperative launch over `slots` = T * k slots on a device
/// of `multiprocessors` SMs: one block per `slotsPerBlock` slots, at most
/// one block per SM (a cooperative launch needs every block resident), at
/// most `maxBlocks`, at least one (T = 0 still runs: dispatch writes counts
/// and offsets).
constexpr int64_t cooperativeGridDim(int64_t slots, int64_t slotsPerBlock,
                                     int64_t maxBlocks,
                                     int64_t multiprocessors) {
  int64_t wanted = (slots + slotsPerBlock - 1) / slotsPerBlock;
  int64_t limit = maxBlocks < multiprocessors ? maxBlocks : multiprocessors;
  if (wanted > limit)
    wanted = limit;
  return wanted < 1 ? 1 : wanted;
}
/// The grid of one dispatch launch: kDispatchSlotsPerBlock slots a block,
/// at most dispatchMaxBlocks(E).
constexpr int64_t dispatchGridDim(int64_t slots, int64_t numExperts,
                                  int64_t multiprocessors) {
  return cooperativeGridDim(slots, kDispatchSlotsPerBlock,
                            dispatchMaxBlocks(numExperts), multiprocessors);
}

//===----------------------------------------------------------------------===//
// The GPU expert-choice route (docs/kernel-abi.md, "Expert-choice route"):
// one cooperative launch whose token segments stride over all tokens,
// radix-select each expert's threshold through the scratch buffer between
// grid barriers, then route every token. Its grid: one block per
// `tokens_per_block` tokens (slots_per_block = tokens_per_block * k), at
// most kExpertChoiceMaxBlocks.
//===----------------------------------------------------------------------===//

inline constexpr int64_t kExpertChoiceMaxBlocks = 256;
/// The radix select's digits: 8 bits, so 256 bins per expert.
inline constexpr int64_t kExpertChoiceBins = 256;
/// Scratch words before the per-expert arrays: the grid barrier's two
/// words, the fused dispatch's ticket (kDispatchTicketWord: one scratch
/// buffer serves every kernel of a router, and a replay with a fused
/// dispatch may follow an expert-choice route), then the flag that some
/// expert must break a tie by token, which a call may leave at 1.
inline constexpr int64_t kExpertChoiceHeaderWords = 4;
inline constexpr int64_t kExpertChoiceTieFlagWord = 3;
static_assert(kExpertChoiceTieFlagWord != kDispatchTicketWord &&
              kExpertChoiceTieFlagWord >= 2);
/// Per expert: the threshold key, the tokens still to take, the last token
/// taken, the tie's token prefix, and the histogram.
inline constexpr int64_t kExpertChoiceWordsPerExpert = 4 + kExpertChoiceBins;
/// The scratch buffer's size in int32 words.
constexpr int64_t expertChoiceScratchWords(int64_t numExperts) {
  return kExpertChoiceHeaderWords + kExpertChoiceWordsPerExpert * numExperts;
}

/// The name of a GPU kernel's size parameter: "logits.size0".
std::string sizeParamName(std::string_view tensor, int dim);

} // namespace moegen::abi

#endif // MOEGEN_ABI_KERNELABI_H
