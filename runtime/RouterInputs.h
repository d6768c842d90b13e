//===- RouterInputs.h - Routing inputs from .npy files ----------*- C++ -*-===//
//
// The .npy tensors of one routing call (logits, bias, token_ids,
// hash_table, forced_ids, capture; docs/cli.md) checked against a router's
// facts before anything runs, then run on any HostRouter, with the outputs
// back as named arrays. `moegen run`, moegen-gpu-check and the tests share
// it, so a bad input gets the same one line everywhere: it names the file,
// the tensor, the index or dimension, and the rule.
//
// Shapes and dtypes are checked here; values (finite logits, ids in range
// and distinct, the capture layer) are the kernels' to check, and their
// messages come back from HostRouter::run. Plain C++20; no LLVM, no CUDA.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_ROUTERINPUTS_H
#define MOEGEN_RUNTIME_ROUTERINPUTS_H

#include "runtime/Error.h"
#include "runtime/HostRouter.h"
#include "runtime/npy/Npy.h"

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moegen::rt {

/// The tensors a call reads, in the order the kernels check them
/// (docs/semantics.md §2), so that input errors come out in that order.
/// hidden and expert_output (spec permute: true) feed permute and combine,
/// which run after routing and dispatch, on their outputs. expert_counts
/// (with bias) makes the call an update_bias call instead, alone.
inline constexpr std::array<std::string_view, 10> kRouterInputNames = {
    "logits",     "bias",    "token_ids",          "hash_table",
    "forced_ids", "capture", "shared_gate_logits", "hidden",
    "expert_output", "expert_counts"};

/// A bad input or argument: one line naming the file (when there is one)
/// and the rule.
class InputError : public Error {
public:
  InputError(std::string file, const std::string &message)
      : Error(Kind::InvalidArgument, message), path(std::move(file)) {}

  /// The file the message is about; empty when it is about the command
  /// line.
  const std::string &file() const { return path; }
  /// "FILE: error: MESSAGE", or "PROGRAM: error: MESSAGE" without a file.
  std::string format(std::string_view program) const;

private:
  std::string path;
};

/// Input tensor name -> .npy path.
using InputPaths = std::map<std::string, std::string>;

/// Splits `NAME=FILE` arguments (moegen run's --in) into NAME -> FILE,
/// rejecting malformed, unknown and repeated names. Throws InputError.
InputPaths parseInputArguments(const std::vector<std::string> &arguments);

/// Checks that every given input plays a role in the call and that every
/// input the call needs is given; forced_ids selects replay. `layer` is
/// the capture layer when one was asked for. Throws InputError.
void checkInputsUsed(const RouterFacts &facts, const InputPaths &paths,
                     std::optional<int64_t> layer);

/// Why input `name` plays no role in a call, or nullopt when it does.
/// Inputs that would be silently ignored are errors, as spec keys are.
std::optional<std::string> whyUnused(std::string_view name,
                                     const RouterFacts &facts, bool replay);

struct RouterInput {
  std::string path;
  npy::Array array;
};
using RouterInputMap = std::map<std::string, RouterInput>;

/// Reads every input, in kRouterInputNames order. Throws InputError naming
/// the file and the tensor.
RouterInputMap readInputs(const InputPaths &paths);

/// The shape and dtype of every input against `facts` (T from the logits,
/// the capture layer inside the buffer). Returns T (0 for an update_bias
/// call); throws InputError.
int64_t checkInputs(const RouterFacts &facts, const RouterInputMap &inputs,
                    int64_t layer);

/// One output of a call: its name (the .npy file's stem) and the array.
using NamedArray = std::pair<std::string, npy::Array>;

struct HostRunResult {
  /// "" or the one-line message of the first violation, starting with the
  /// tensor it names ("forced_ids[3][1] = 300: ...").
  std::string error;
  /// topk_ids, topk_weights, then with dispatch expert_counts,
  /// expert_offsets, sorted_slots, slot_positions, then capture when the
  /// call captured, then permuted (given hidden) and combined (given
  /// expert_output); updated_bias alone for an update_bias call. Empty
  /// after an error.
  std::vector<NamedArray> outputs;

  const npy::Array *find(std::string_view name) const;
};

/// Runs `router` on checked inputs (checkInputs): ids become int32, the
/// outputs are allocated (dispatch ones when the facts have dispatch, the
/// capture buffer from the capture input or a fresh [T, 1, k] one), and a
/// capture input is moved into the result. int64 ids outside int32 are
/// reported with their real value.
HostRunResult runOnHost(HostRouter &router, RouterInputMap &inputs,
                        int64_t layer);

/// An error of runOnHost as an InputError naming the file of the tensor it
/// starts with, when that tensor is one of `inputs`.
InputError locateError(const std::string &error, const RouterInputMap &inputs);

/// A shape as Python prints it, so that it reads like the file's own
/// header: "(3,)", "(3, 4)".
std::string shapeRepr(const std::vector<int64_t> &shape);

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_ROUTERINPUTS_H
