//===- RouterInputs.cpp - Routing inputs from .npy files ------------------===//

#include "runtime/RouterInputs.h"
#include "support/Quote.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace moegen::rt {

namespace {

using npy::DType;
using support::quotePath;

[[noreturn]] void failUsage(const std::string &message) {
  throw InputError("", message);
}

/// One dimension a tensor must have: its symbol in the docs, its size
/// (nullopt: any size of at least `minSize`) and what fixes that size.
struct ExpectedDim {
  std::string symbol;
  std::optional<int64_t> size;
  std::string reason;
  int64_t minSize = 0;
};

/// "NAME: shape (3, 5) must be [T, E] = [3, 4]: dimension 1 is 5, not E = 4
/// (num_experts)", or nullopt when the shape fits.
std::optional<std::string> checkShape(std::string_view name,
                                      const npy::Array &array,
                                      const std::vector<ExpectedDim> &dims) {
  std::string symbols, sizes;
  for (size_t i = 0; i < dims.size(); ++i) {
    symbols += (i ? ", " : "") + dims[i].symbol;
    sizes += (i ? ", " : "") +
             (dims[i].size ? std::to_string(*dims[i].size) : dims[i].symbol);
  }
  std::string prefix = std::string(name) + ": shape " + shapeRepr(array.shape) +
                       " must be [" + symbols + "] = [" + sizes + "]: ";
  if (array.shape.size() != dims.size())
    return prefix + "it has " + std::to_string(array.shape.size()) +
           (array.shape.size() == 1 ? " dimension" : " dimensions") + ", not " +
           std::to_string(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    const ExpectedDim &dim = dims[i];
    int64_t actual = array.shape[i];
    std::string at = "dimension " + std::to_string(i) + " is " +
                     std::to_string(actual) + ", not " + dim.symbol;
    if (dim.size && actual != *dim.size)
      return prefix + at + " = " + std::to_string(*dim.size) + " (" +
             dim.reason + ")";
    if (!dim.size && actual < dim.minSize)
      return prefix + at + " >= " + std::to_string(dim.minSize) + " (" +
             dim.reason + ")";
  }
  return std::nullopt;
}

/// "NAME: dtype '<f8' must be '<f4'", or nullopt when the dtype is allowed.
std::optional<std::string> checkDType(std::string_view name,
                                      const npy::Array &array,
                                      const std::vector<DType> &allowed,
                                      std::string_view why = "") {
  for (DType dtype : allowed)
    if (array.dtype == dtype)
      return std::nullopt;
  std::string message = std::string(name) + ": dtype '" +
                        std::string(npy::descr(array.dtype)) + "' must be ";
  for (size_t i = 0; i < allowed.size(); ++i)
    message += (i ? " or '" : "'") + std::string(npy::descr(allowed[i])) + "'";
  return message + std::string(why);
}

/// An int64 id that does not fit the kernels' int32, e.g. forced_ids[3][1]
/// = 5000000000. The kernels get -1 in its place, which is outside both
/// [0, num_experts) and [0, vocab), so they still report the first bad id in
/// their usual order; when that is this one, its real value is put back.
struct WideId {
  std::string element; ///< "forced_ids[3][1]"
  int64_t value = 0;
};

/// The ids of an int32 or int64 tensor as int32; the first id outside int32
/// (in row-major order) goes to `firstWide`. `rowLength` is 0 for 1-D.
std::vector<int32_t> idsAsInt32(std::string_view name, const npy::Array &array,
                                int64_t rowLength,
                                std::optional<WideId> &firstWide) {
  int64_t count = array.numElements();
  std::vector<int32_t> ids(static_cast<size_t>(count));
  if (array.dtype == DType::I32) {
    if (count > 0)
      std::memcpy(ids.data(), array.data.data(), ids.size() * sizeof(int32_t));
    return ids;
  }
  const int64_t *wide = array.as<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    int64_t value = wide[i];
    if (value >= std::numeric_limits<int32_t>::min() &&
        value <= std::numeric_limits<int32_t>::max()) {
      ids[i] = static_cast<int32_t>(value);
      continue;
    }
    ids[i] = -1;
    if (!firstWide) {
      std::string element = std::string(name);
      if (rowLength > 0)
        element += "[" + std::to_string(i / rowLength) + "][" +
                   std::to_string(i % rowLength) + "]";
      else
        element += "[" + std::to_string(i) + "]";
      firstWide = WideId{element, value};
    }
  }
  return ids;
}

template <typename T>
npy::Array makeArray(DType dtype, std::vector<int64_t> shape,
                     const std::vector<T> &values) {
  npy::Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(values.size() * sizeof(T));
  if (!values.empty())
    std::memcpy(array.data.data(), values.data(), array.data.size());
  return array;
}

} // namespace

std::string InputError::format(std::string_view program) const {
  if (path.empty())
    return std::string(program) + ": error: " + what();
  return quotePath(path) + ": error: " + what();
}

std::string shapeRepr(const std::vector<int64_t> &shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

InputPaths parseInputArguments(const std::vector<std::string> &arguments) {
  InputPaths paths;
  for (const std::string &argument : arguments) {
    size_t equals = argument.find('=');
    std::string quoted = quotePath(argument);
    if (equals == std::string::npos || equals + 1 == argument.size())
      failUsage("--in " + quoted + ": expected NAME=FILE.npy");
    std::string name = argument.substr(0, equals);
    std::string path = argument.substr(equals + 1);
    if (std::find(kRouterInputNames.begin(), kRouterInputNames.end(), name) ==
        kRouterInputNames.end()) {
      std::string known;
      for (std::string_view input : kRouterInputNames)
        known += (known.empty() ? "" : ", ") + std::string(input);
      failUsage("--in " + quoted + ": unknown input '" + support::escape(name) +
                "' (inputs: " + known + ")");
    }
    auto [it, inserted] = paths.emplace(name, path);
    if (!inserted)
      failUsage("--in " + quoted + ": input '" + name +
                "' given twice (first as --in " + name + "=" +
                quotePath(it->second) + ")");
  }
  return paths;
}

std::optional<std::string> whyUnused(std::string_view name,
                                     const RouterFacts &facts, bool replay) {
  if (name == "forced_ids")
    return facts.replay ? std::nullopt
                        : std::optional<std::string>(
                              "the spec has no replay entry point (set "
                              "replay: true to replay forced ids)");
  if (name == "bias" || name == "token_ids" || name == "hash_table") {
    if (replay)
      return "replay (forced_ids given) takes no selection inputs";
    if (name == "bias" && !facts.scoreBias)
      return std::string("the spec has score_bias: false");
    if (name != "bias" && !facts.hashSelection)
      return std::string("the spec has selection: topk");
    return std::nullopt;
  }
  if (name == "shared_gate_logits" && !facts.sharedGate)
    return std::string("the spec has no shared expert gate (set "
                       "shared_expert_gate: true)");
  if (name == "capture") {
    if (!facts.capture)
      return std::string("the spec has capture: false");
    if (replay)
      return std::string("replay (forced_ids given) does not capture");
  }
  if (name == "hidden" || name == "expert_output") {
    if (!facts.permute)
      return std::string("the spec has no permute and combine entry points "
                         "(set permute: true)");
    // They read dispatch's outputs (a spec with permute always has it; a
    // hand-made kernel directory may not).
    if (!facts.dispatch)
      return std::string("the kernels have no dispatch entry point, whose "
                         "sorted_slots and slot_positions they read");
  }
  return std::nullopt;
}

/// An update_bias call (expert_counts given): bias and the loads, nothing
/// else.
static void checkUpdateBiasInputsUsed(const RouterFacts &facts,
                               const InputPaths &paths,
                               std::optional<int64_t> layer) {
  for (const auto &[name, path] : paths) {
    std::optional<std::string> why;
    if (name == "expert_counts" && !facts.updateBias)
      why = "the spec has no update_bias entry point (a gating program's "
            "update_bias(bias, expert_counts))";
    else if (name != "expert_counts" && name != "bias")
      why = "an update_bias call (expert_counts given) takes bias and "
            "expert_counts only";
    if (why)
      failUsage("--in " + name + "=" + quotePath(path) + ": input '" + name +
                "' is not used by this run: " + *why);
  }
  if (!paths.count("bias"))
    failUsage("missing input 'bias' ([E] f32, required by update_bias); give "
              "--in bias=FILE.npy");
  if (layer)
    failUsage("--layer " + std::to_string(*layer) +
              ": not used by this run: update_bias does not capture");
}

void checkInputsUsed(const RouterFacts &facts, const InputPaths &paths,
                     std::optional<int64_t> layer) {
  if (paths.count("expert_counts"))
    return checkUpdateBiasInputsUsed(facts, paths, layer);
  bool replay = paths.count("forced_ids") != 0;
  for (const auto &[name, path] : paths)
    if (auto why = whyUnused(name, facts, replay))
      failUsage("--in " + name + "=" + quotePath(path) + ": input '" + name +
                "' is not used by this run: " + *why);
  std::vector<std::pair<std::string, std::string>> required = {
      {"logits", "[T, E] logits, always required"}};
  if (!replay && facts.scoreBias)
    required.push_back({"bias", "[E] f32, required by score_bias: true"});
  if (!replay && facts.hashSelection) {
    required.push_back(
        {"token_ids", "[T] i32/i64, required by selection: hash"});
    required.push_back(
        {"hash_table", "[V, k] i32, required by selection: hash"});
  }
  if (facts.sharedGate)
    required.push_back({"shared_gate_logits",
                        "[T, 1] of the logits' dtype, required by "
                        "shared_expert_gate: true"});
  for (const auto &[name, what] : required)
    if (!paths.count(name))
      failUsage("missing input '" + name + "' (" + what + "); give --in " +
                name + "=FILE.npy");
  bool captures = facts.capture && !replay;
  if (layer && !captures)
    failUsage("--layer " + std::to_string(*layer) + ": not used by this run: " +
              (facts.capture ? "replay (forced_ids given) does not capture"
                             : "the spec has capture: false"));
  if (captures && !paths.count("capture") && layer.value_or(0) != 0)
    failUsage("--layer " + std::to_string(*layer) +
              ": without --in capture=FILE.npy the capture buffer "
              "is [T, 1, k], so the layer must be 0");
}

RouterInputMap readInputs(const InputPaths &paths) {
  RouterInputMap inputs;
  for (std::string_view name : kRouterInputNames) {
    auto it = paths.find(std::string(name));
    if (it == paths.end())
      continue;
    std::string error;
    std::optional<npy::Array> array = npy::readNpy(it->second, error);
    if (!array) {
      // readNpy's one line is "PATH: MESSAGE"; name the tensor too.
      std::string message =
          error.substr(std::min(error.size(), it->second.size() + 2));
      throw InputError(it->second, std::string(name) + ": " + message);
    }
    inputs.emplace(name, RouterInput{it->second, std::move(*array)});
  }
  return inputs;
}

int64_t checkInputs(const RouterFacts &facts, const RouterInputMap &inputs,
                    int64_t layer) {
  const int64_t e = facts.numExperts;
  const int64_t k = facts.topK;
  auto fail = [&](const std::string &name, const std::string &message) {
    throw InputError(inputs.at(name).path, message);
  };
  if (inputs.count("expert_counts")) {
    // An update_bias call: [E] f32 bias and [E] int32 loads.
    const ExpectedDim experts{"E", e, "num_experts"};
    for (const char *name : {"bias", "expert_counts"}) {
      if (!inputs.count(name))
        continue;
      const npy::Array &array = inputs.at(name).array;
      std::optional<std::string> error = checkDType(
          name, array,
          {std::string_view(name) == "bias" ? DType::F32 : DType::I32});
      if (!error)
        error = checkShape(name, array, {experts});
      if (error)
        fail(name, *error);
    }
    return 0;
  }
  if (!inputs.count("logits"))
    failUsage("missing input 'logits' ([T, E] logits, always required); "
              "give --in logits=FILE.npy");

  const npy::Array &logits = inputs.at("logits").array;
  DType logitsDType = DType::F32;
  std::string why = " (logits_dtype: f32)";
  if (facts.logits == RouterFacts::Logits::F16) {
    logitsDType = DType::F16;
    why = " (logits_dtype: f16)";
  } else if (facts.logits == RouterFacts::Logits::BF16) {
    logitsDType = DType::U16;
    why = " (logits_dtype: bf16, stored as raw bits since NumPy has no bf16)";
  }
  if (auto error = checkDType("logits", logits, {logitsDType}, why))
    fail("logits", *error);
  if (auto error =
          checkShape("logits", logits,
                     {{"T", std::nullopt, "tokens"}, {"E", e, "num_experts"}}))
    fail("logits", *error);
  const int64_t numTokens = logits.shape[0];
  // Slot indices t*k+j and every dispatch tensor are int32.
  if (numTokens > std::numeric_limits<int32_t>::max() / k)
    fail("logits", "logits: T = " + std::to_string(numTokens) +
                       " tokens: T * top_k = " + std::to_string(numTokens * k) +
                       " must fit in int32 (slot indices are int32)");

  const ExpectedDim tokens{"T", numTokens, "the token count of logits"};
  // Hidden rows: their dtype, and H from hidden when it is given.
  DType rowDType = DType::U16;
  std::string rowWhy =
      " (hidden_dtype: bf16, stored as raw bits since NumPy has no bf16)";
  if (facts.hidden == RouterFacts::Logits::F32) {
    rowDType = DType::F32;
    rowWhy = " (hidden_dtype: f32)";
  } else if (facts.hidden == RouterFacts::Logits::F16) {
    rowDType = DType::F16;
    rowWhy = " (hidden_dtype: f16)";
  }
  std::optional<int64_t> hiddenSize;
  const ExpectedDim experts{"E", e, "num_experts"};
  const ExpectedDim topK{"k", k, "top_k"};
  const std::vector<DType> ids = {DType::I32, DType::I64};
  for (std::string_view input : kRouterInputNames) {
    std::string name(input);
    if (!inputs.count(name))
      continue;
    const npy::Array &array = inputs.at(name).array;
    std::optional<std::string> error;
    if (name == "bias") {
      error = checkDType(name, array, {DType::F32});
      if (!error)
        error = checkShape(name, array, {experts});
    } else if (name == "token_ids") {
      error = checkDType(name, array, ids);
      if (!error)
        error = checkShape(name, array, {tokens});
    } else if (name == "hash_table") {
      error = checkDType(name, array, {DType::I32});
      if (!error)
        error =
            checkShape(name, array, {{"V", std::nullopt, "vocabulary"}, topK});
    } else if (name == "forced_ids") {
      error = checkDType(name, array, ids);
      if (!error)
        error = checkShape(name, array, {tokens, topK});
    } else if (name == "capture") {
      // The vLLM routed_experts layout: int16 while expert ids fit.
      DType captureDType =
          facts.captureElementBytes() == 2 ? DType::I16 : DType::I32;
      error = checkDType(name, array, {captureDType},
                         " (expert ids of num_experts = " + std::to_string(e) +
                             " experts)");
      if (!error)
        error = checkShape(
            name, array, {tokens, {"L", std::nullopt, "MoE layers", 1}, topK});
      if (!error && (layer < 0 || layer >= array.shape[1]))
        error = "capture: --layer " + std::to_string(layer) +
                " is outside the buffer's layers [0, " +
                std::to_string(array.shape[1]) + ")";
    } else if (name == "shared_gate_logits") {
      error = checkDType(name, array, {logitsDType}, why);
      if (!error)
        error = checkShape(name, array,
                           {tokens, {"1", 1, "one logit per token"}});
    } else if (name == "hidden") {
      error = checkDType(name, array, {rowDType}, rowWhy);
      if (!error)
        error = checkShape(name, array,
                           {tokens, {"H", std::nullopt, "hidden size", 1}});
      if (!error)
        hiddenSize = array.shape[1];
    } else if (name == "expert_output") {
      error = checkDType(name, array, {rowDType}, rowWhy);
      if (!error)
        error = checkShape(
            name, array,
            {{"T*k", numTokens * k, "tokens * top_k, one row per slot"},
             {"H", hiddenSize,
              hiddenSize ? "the hidden size of hidden" : "hidden size", 1}});
    }
    if (error)
      fail(name, *error);
  }
  return numTokens;
}

const npy::Array *HostRunResult::find(std::string_view name) const {
  for (const auto &[outputName, array] : outputs)
    if (outputName == name)
      return &array;
  return nullptr;
}

HostRunResult runOnHost(HostRouter &router, RouterInputMap &inputs,
                        int64_t layer) {
  const RouterFacts &facts = router.facts();
  if (inputs.count("expert_counts")) {
    npy::Array updated = makeArray(DType::F32, {facts.numExperts},
                                   std::vector<float>(facts.numExperts));
    HostUpdateBiasCall call;
    call.bias = reinterpret_cast<const float *>(
        inputs.at("bias").array.data.data());
    call.expertCounts = reinterpret_cast<const int32_t *>(
        inputs.at("expert_counts").array.data.data());
    call.updatedBias = reinterpret_cast<float *>(updated.data.data());
    HostRunResult result;
    result.error = router.updateBias(call);
    if (result.error.empty())
      result.outputs.emplace_back("updated_bias", std::move(updated));
    return result;
  }
  const int64_t numTokens = inputs.at("logits").array.shape.at(0);
  const int64_t e = facts.numExperts;
  const int64_t k = facts.topK;
  const int64_t slots = numTokens * k;
  const bool replay = inputs.count("forced_ids") != 0;

  std::optional<WideId> wide;
  std::vector<int32_t> tokenIds, forcedIds;
  if (inputs.count("token_ids"))
    tokenIds = idsAsInt32("token_ids", inputs.at("token_ids").array, 0, wide);
  if (replay)
    forcedIds =
        idsAsInt32("forced_ids", inputs.at("forced_ids").array, k, wide);

  // Empty tensors (T = 0) still get a valid pointer: the backends treat a
  // null pointer as a missing tensor.
  alignas(8) std::array<std::byte, 8> empty{};
  auto pointer = [&](auto &vector) -> void * {
    return vector.empty() ? static_cast<void *>(empty.data())
                          : static_cast<void *>(vector.data());
  };

  HostRouteCall call;
  call.numTokens = numTokens;
  call.logits = pointer(inputs.at("logits").array.data);
  if (inputs.count("bias"))
    call.bias =
        static_cast<const float *>(pointer(inputs.at("bias").array.data));
  if (inputs.count("token_ids")) {
    npy::Array &table = inputs.at("hash_table").array;
    call.tokenIds = static_cast<const int32_t *>(pointer(tokenIds));
    call.hashTable = static_cast<const int32_t *>(pointer(table.data));
    call.hashVocab = table.shape[0];
  }
  if (replay)
    call.forcedIds = static_cast<const int32_t *>(pointer(forcedIds));

  const bool captures = facts.capture && !replay;
  npy::Array capture;
  if (captures) {
    if (inputs.count("capture")) {
      capture = std::move(inputs.at("capture").array);
    } else {
      capture.dtype =
          facts.captureElementBytes() == 2 ? DType::I16 : DType::I32;
      capture.shape = {numTokens, 1, k};
      capture.data.assign(slots * npy::itemSize(capture.dtype), std::byte{0});
    }
    call.captureBuffer = pointer(capture.data);
    call.captureLayers = capture.shape[1];
    call.captureLayer = layer;
  }

  std::vector<int32_t> topkIds(slots);
  std::vector<float> topkWeights(slots);
  call.topkIds = static_cast<int32_t *>(pointer(topkIds));
  call.topkWeights = static_cast<float *>(pointer(topkWeights));
  std::vector<float> sharedGate;
  if (facts.sharedGate) {
    sharedGate.resize(numTokens);
    call.sharedGateLogits = pointer(inputs.at("shared_gate_logits").array.data);
    call.sharedGate = static_cast<float *>(pointer(sharedGate));
  }
  std::vector<int32_t> counts, offsets, sortedSlots, slotPositions;
  if (facts.dispatch) {
    counts.resize(e);
    offsets.resize(e + 1);
    sortedSlots.resize(slots);
    slotPositions.resize(slots);
    call.expertCounts = counts.data();
    call.expertOffsets = offsets.data();
    call.sortedSlots = static_cast<int32_t *>(pointer(sortedSlots));
    call.slotPositions = static_cast<int32_t *>(pointer(slotPositions));
  }

  HostRunResult result;
  result.error = router.run(call);
  if (!result.error.empty()) {
    if (wide) {
      std::string placeholder = wide->element + " = -1:";
      if (result.error.compare(0, placeholder.size(), placeholder) == 0)
        result.error = wide->element + " = " + std::to_string(wide->value) +
                       ":" + result.error.substr(placeholder.size());
    }
    return result;
  }
  // -1 stands in for every wide id and is always invalid, so the kernels
  // cannot have accepted it; refuse rather than return results built on it.
  if (wide) {
    result.error = wide->element + " = " + std::to_string(wide->value) +
                   ": does not fit in int32";
    return result;
  }

  result.outputs.emplace_back("topk_ids",
                              makeArray(DType::I32, {numTokens, k}, topkIds));
  result.outputs.emplace_back(
      "topk_weights", makeArray(DType::F32, {numTokens, k}, topkWeights));
  if (facts.sharedGate)
    result.outputs.emplace_back(
        "shared_gate", makeArray(DType::F32, {numTokens, 1}, sharedGate));
  if (facts.dispatch) {
    result.outputs.emplace_back("expert_counts",
                                makeArray(DType::I32, {e}, counts));
    result.outputs.emplace_back("expert_offsets",
                                makeArray(DType::I32, {e + 1}, offsets));
    result.outputs.emplace_back("sorted_slots",
                                makeArray(DType::I32, {slots}, sortedSlots));
    result.outputs.emplace_back("slot_positions",
                                makeArray(DType::I32, {slots}, slotPositions));
  }
  if (captures)
    result.outputs.emplace_back("capture", std::move(capture));

  // Permute and combine, on this call's dispatch outputs and weights.
  auto rows = [&](std::string_view name, int64_t count, int64_t size) {
    npy::Array array;
    array.dtype = inputs.at(std::string(name)).array.dtype;
    array.shape = {count, size};
    array.data.assign(size_t(count * size) * npy::itemSize(array.dtype),
                      std::byte{0});
    return array;
  };
  if (inputs.count("hidden")) {
    npy::Array &hidden = inputs.at("hidden").array;
    npy::Array permuted = rows("hidden", slots, hidden.shape[1]);
    HostPermuteCall permute;
    permute.numTokens = numTokens;
    permute.hiddenSize = hidden.shape[1];
    permute.hidden = pointer(hidden.data);
    permute.sortedSlots = static_cast<const int32_t *>(pointer(sortedSlots));
    permute.permuted = pointer(permuted.data);
    if (std::string error = router.permute(permute); !error.empty()) {
      result = HostRunResult{error, {}};
      return result;
    }
    result.outputs.emplace_back("permuted", std::move(permuted));
  }
  if (inputs.count("expert_output")) {
    npy::Array &outputs = inputs.at("expert_output").array;
    npy::Array combined = rows("expert_output", numTokens, outputs.shape[1]);
    HostCombineCall combine;
    combine.numTokens = numTokens;
    combine.hiddenSize = outputs.shape[1];
    combine.topkWeights = static_cast<const float *>(pointer(topkWeights));
    combine.slotPositions =
        static_cast<const int32_t *>(pointer(slotPositions));
    combine.expertOutput = pointer(outputs.data);
    combine.combined = pointer(combined.data);
    if (std::string error = router.combine(combine); !error.empty()) {
      result = HostRunResult{error, {}};
      return result;
    }
    result.outputs.emplace_back("combined", std::move(combined));
  }
  return result;
}

InputError locateError(const std::string &error, const RouterInputMap &inputs) {
  std::string tensor = error.substr(0, error.find_first_of("[: "));
  auto it = inputs.find(tensor);
  return InputError(it != inputs.end() ? it->second.path : "", error);
}

} // namespace moegen::rt
