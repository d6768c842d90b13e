//===- Program.h - Gating programs: a router as a composition of ops -*- C++ -*-===//
//
// A spec's `program:` block writes a router as named values, one `moe` op
// per call (docs/spec-language.md, "Gating programs"):
//
//   route(logits, bias) -> (ids, weights):
//     s = sigmoid(logits)
//     c = group_mask(s + bias, groups: 8, keep: 4, by: top2_sum)
//     ids = topk(c, 8)
//     weights = scale(normalize(gather(s, ids)), 2.5)
//
// The parser checks names, types and the kernel ABI's entry signatures
// (abi/KernelAbi.h) and produces a flat list of typed ops per entry, which
// the IR builder (SpecToMoE.cpp) and the golden reference both consume.
// Plain C++20, no LLVM/MLIR, like RoutingSpec.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_SPEC_PROGRAM_H
#define MOEGEN_COMPILER_SPEC_PROGRAM_H

#include "abi/KernelAbi.h"
#include "compiler/spec/RoutingSpec.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moegen::program {

/// A position in the program text, 1-based.
struct Location {
  int line = 1;
  int column = 1;
};

/// The type of a program value: an element type and a shape in the ABI's
/// dimension symbols (T, E, k, ...); rank 0 is the capture layer (index).
struct ValueType {
  abi::DType dtype = abi::DType::F32;
  std::vector<abi::DimRule> dims;
  /// Ids produced by a selection (topk, hash, forced): in [0, E) and
  /// distinct per token, so gather and capture may index with them.
  bool selected = false;

  bool sameShapeAndDType(const ValueType &other) const {
    return dtype == other.dtype && dims == other.dims;
  }
};
/// "[T, E] f32", "index" for the layer, "[T, k] i32 (selected ids)".
std::string toString(const ValueType &type);

enum class OpKind {
  Score,     ///< softmax | sigmoid | sqrtsoftplus | identity (x,
             ///< temperature:, softcap:)
  AddBias,   ///< x + bias, add_bias(x, bias)
  GroupMask, ///< group_mask(x, groups:, keep:, by:)
  TopK,      ///< topk(x, k)
  TopP,      ///< topp(x, k, p:): dynamic k, unused slots hold -1
  ExpertChoice, ///< expert_choice(x, k, capacity_factor:): experts pick tokens
  Hash,      ///< hash(token_ids, hash_table, k)
  Forced,    ///< forced(forced_ids)
  Gather,    ///< gather(x, ids)
  Normalize, ///< normalize(w, epsilon:)
  Sparsemixer, ///< sparsemixer(x, ids, jitter_eps:)
  Scale,     ///< scale(w, factor)
  Capture,   ///< capture(ids, capture, layer)
  SharedGate, ///< shared_gate(shared_gate_logits)
  Dispatch,  ///< dispatch(topk_ids, capacity_factor:), four results
  Permute,   ///< permute(hidden, sorted_slots)
  Combine,   ///< combine(expert_output, slot_positions, topk_weights)
  UpdateBias, ///< update_bias(bias, expert_counts, rate:)
};

/// One op of an entry, in evaluation order. Operands and results index
/// Program::values.
struct Op {
  OpKind kind = OpKind::Score;
  Location loc;
  std::vector<int> operands;
  std::vector<int> results;
  // Attributes, by kind.
  Scoring scoring = Scoring::Softmax;
  std::optional<double> temperature, softcap; // Score
  int64_t groups = 1, keep = 1;               // GroupMask
  GroupScore by = GroupScore::Top2Sum;        // GroupMask
  int64_t k = 0;                              // TopK, TopP, ExpertChoice, Hash
  double p = 1.0;                             // TopP
  double epsilon = kNormalizeEpsilon;         // Normalize
  double factor = 1.0;                        // Scale
  double jitterEps = 0.0;                     // Sparsemixer
  std::optional<double> capacityFactor;       // Dispatch
  double rate = 0.0;                          // UpdateBias
};

struct Entry {
  abi::EntryKind kind = abi::EntryKind::Route;
  Location loc;
  /// Parameters, in the ABI's order, with their ABI names.
  std::vector<int> params;
  std::vector<std::string> paramNames;
  std::vector<Op> ops;
  std::vector<int> results;
};

struct Program {
  /// k, the experts per token, from the route entry's selection.
  int64_t topK = 0;
  /// The route entry selects with topp: ids may hold -1 (an unused slot),
  /// which replay's forced(), dispatch, permute and combine then accept.
  bool unusedSlots = false;
  /// The route entry selects with expert_choice (it spans the tokens).
  bool expertChoice = false;
  /// The dispatch entry's capacity factor (Switch / GShard): each expert
  /// keeps its first ceil(f * T * k / E) slots; dispatch's metadata then
  /// holds -1 for the dropped ones, which permute and combine accept.
  std::optional<double> capacityFactor;
  std::vector<ValueType> values;
  /// In the order the text defines them.
  std::vector<Entry> entries;

  const Entry *find(abi::EntryKind kind) const;
};

/// What the program's types depend on, from the spec's other keys.
struct ProgramShape {
  int64_t numExperts = 0;
  LogitsDType logitsDType = LogitsDType::F32;
  LogitsDType hiddenDType = LogitsDType::BF16;
};

struct ProgramError {
  Location loc;
  std::string message;
};

/// Parses and checks a program. On failure returns nullopt and sets
/// `error` to the first broken rule. Locations are those in `text` shifted
/// by `origin` (line l of the text is line origin.line + l), so that a
/// program embedded in a file reports the file's lines and columns.
std::optional<Program> parseProgram(std::string_view text,
                                    const ProgramShape &shape,
                                    ProgramError &error,
                                    Location origin = {0, 0});

/// The spec facts a program determines: top_k, score_bias, selection,
/// capture, replay, dispatch, permute and unused_slots, set on `spec` from
/// `program`.
void applyProgramFacts(const Program &program, RoutingSpec &spec);

/// The program twin of a spec written with keys: the same entry points and
/// ops in the same order, so that both compile to identical IR.
std::string expandToProgram(const RoutingSpec &spec);

/// `spec` written as a program: its twin, with the same facts and the
/// sugar keys at their defaults. A program spec is its own twin.
RoutingSpec programTwin(const RoutingSpec &spec);

/// `value` in the shortest form that reads back as the same double.
std::string formatNumber(double value);

} // namespace moegen::program

#endif // MOEGEN_COMPILER_SPEC_PROGRAM_H
