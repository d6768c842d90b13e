//===- Manifest.cpp - Read and write manifest.json ------------------------===//
//
// Every check names the file and the key ("kernels[1].params[3].dtype") and
// says what was expected. Unknown keys are ignored (reserved for
// information such as the kernel configuration); everything the runtime
// uses is checked against the catalogue of KernelAbi.h.
//
//===----------------------------------------------------------------------===//

#include "abi/Manifest.h"
#include "support/Quote.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <limits>

namespace moegen::abi {

namespace {

/// Whether two kernels take the same parameters (names, kinds, types,
/// shapes, access and size bindings, in order).
bool sameParams(const Kernel &a, const Kernel &b) {
  if (a.params.size() != b.params.size())
    return false;
  for (size_t i = 0; i < a.params.size(); ++i) {
    const Param &x = a.params[i], &y = b.params[i];
    if (x.name != y.name || x.kind != y.kind || x.dtype != y.dtype ||
        x.access != y.access || x.ofParam != y.ofParam || x.dim != y.dim ||
        x.shape.size() != y.shape.size())
      return false;
    for (size_t d = 0; d < x.shape.size(); ++d)
      if (x.shape[d].symbol != y.shape[d].symbol ||
          x.shape[d].extent != y.shape[d].extent)
        return false;
  }
  return true;
}

using Json = nlohmann::json;
namespace fs = std::filesystem;

/// `text` for a one-line message: quoted, control characters escaped, cut.
std::string quote(std::string_view text, size_t maxLength = 40) {
  return support::quote(text, support::QuoteStyle{
                                  maxLength, /*namedControlEscapes=*/false});
}

std::string describe(const Json &value) {
  switch (value.type()) {
  case Json::value_t::null:
    return "null";
  case Json::value_t::boolean:
    return value.get<bool>() ? "true" : "false";
  case Json::value_t::string:
    return "string " + quote(value.get<std::string>());
  case Json::value_t::number_integer:
  case Json::value_t::number_unsigned:
  case Json::value_t::number_float: {
    std::string text = value.dump();
    return "number " + (text.size() > 40 ? text.substr(0, 40) + "..." : text);
  }
  case Json::value_t::array:
    return "an array";
  case Json::value_t::object:
    return "an object";
  default:
    return "a value of another type";
  }
}

/// Whether the entry has a `layer` scalar (exactly when it has a capture).
bool entryMayCapture(EntryKind entry) {
  return findArg(entry, "layer") != nullptr;
}

std::string shapeText(const std::vector<Dim> &shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + toString(shape[i]);
  return text + "]";
}

std::string stripSpaces(std::string_view text) {
  std::string out;
  for (char c : text)
    if (c != ' ' && c != '\t')
      out += c;
  return out;
}

class Parser {
public:
  Parser(const std::string &path, const ManifestOptions &options)
      : path(path), options(options) {}

  Manifest parse(std::string_view text);

private:
  [[noreturn]] void fail(const std::string &key, const std::string &message) {
    throw ManifestError(path + ": " + (key.empty() ? "" : key + ": ") +
                        message);
  }

  const Json &member(const Json &object, const std::string &objectKey,
                     const char *name) {
    auto it = object.find(name);
    if (it == object.end())
      fail(join(objectKey, name), "missing");
    return *it;
  }
  static std::string join(const std::string &objectKey, const char *name) {
    return objectKey.empty() ? name : objectKey + "." + name;
  }

  std::string getString(const Json &value, const std::string &key) {
    if (!value.is_string())
      fail(key, "must be a string, got " + describe(value));
    return value.get<std::string>();
  }
  int64_t getInt(const Json &value, const std::string &key, int64_t min,
                 int64_t max) {
    if (!value.is_number_integer())
      fail(key, "must be an integer, got " + describe(value));
    if (value.is_number_unsigned() &&
        value.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(key, value.dump() + " must be in [" + std::to_string(min) + ", " +
                    std::to_string(max) + "]");
    int64_t n = value.get<int64_t>();
    if (n < min || n > max)
      fail(key, std::to_string(n) + " must be in [" + std::to_string(min) +
                    ", " + std::to_string(max) + "]");
    return n;
  }
  DType getDType(const Json &value, const std::string &key) {
    std::string text = getString(value, key);
    std::optional<DType> dtype = parseDType(text);
    if (!dtype)
      fail(key, "unknown dtype " + quote(text) +
                    " (expected one of f32, "
                    "bf16, f16, i16, i32, i64)");
    return *dtype;
  }
  std::string getBinary(const Json &root, const char *name, std::string &file);

  Dim parseDim(const Json &value, const std::string &key);
  std::vector<Dim> expectedShape(const ArgSpec &arg);
  void parseKernel(const Json &value, const std::string &key, Kernel &kernel);
  void parseLaunch(const Json &value, const std::string &key,
                   EntryKind entry, LaunchRule &launch);

  const std::string &path;
  const ManifestOptions &options;
  Manifest manifest;
};

Dim Parser::parseDim(const Json &value, const std::string &key) {
  Dim dim;
  if (value.is_string()) {
    std::string text = stripSpaces(value.get<std::string>());
    if (std::optional<Dim::Symbol> symbol = parseDimSymbol(text))
      dim.symbol = *symbol;
    else
      fail(key, "unknown symbolic dimension " +
                    quote(value.get<std::string>()) +
                    " (expected \"T\", \"V\", \"L\", \"T*k\", \"H\" or an "
                    "integer)");
    return dim;
  }
  if (!value.is_number_integer())
    fail(key, "must be an integer or a symbol (\"T\", \"V\", \"L\", \"T*k\", "
              "\"H\"), "
              "got " +
                  describe(value));
  dim.extent = getInt(value, key, 0, std::numeric_limits<int32_t>::max());
  return dim;
}

std::vector<Dim> Parser::expectedShape(const ArgSpec &arg) {
  std::vector<Dim> shape;
  for (DimRule rule : arg.shape()) {
    Dim dim;
    switch (rule) {
    case DimRule::Tokens:
      dim.symbol = Dim::Symbol::T;
      break;
    case DimRule::HashRows:
      dim.symbol = Dim::Symbol::V;
      break;
    case DimRule::Layers:
      dim.symbol = Dim::Symbol::L;
      break;
    case DimRule::Slots:
      dim.symbol = Dim::Symbol::TK;
      break;
    case DimRule::Hidden:
      dim.symbol = Dim::Symbol::H;
      break;
    case DimRule::Experts:
      dim.extent = manifest.numExperts;
      break;
    case DimRule::ExpertsPlus1:
      dim.extent = manifest.numExperts + 1;
      break;
    case DimRule::TopK:
      dim.extent = manifest.topK;
      break;
    case DimRule::One:
      dim.extent = 1;
      break;
    case DimRule::ErrorWords:
      dim.extent = kGpuKernelErrorWords;
      break;
    case DimRule::DispatchScratchWords:
      dim.extent = dispatchScratchWords(manifest.numExperts);
      break;
    case DimRule::ExpertChoiceScratchWords:
      dim.extent = expertChoiceScratchWords(manifest.numExperts);
      break;
    }
    shape.push_back(dim);
  }
  return shape;
}

void Parser::parseLaunch(const Json &value, const std::string &key,
                         EntryKind entry, LaunchRule &launch) {
  if (!value.is_object())
    fail(key, "must be an object, got " + describe(value));
  launch.blockDim =
      getInt(member(value, key, "block_dim"), key + ".block_dim", 1, 1024);
  launch.tokensPerBlock =
      getInt(member(value, key, "tokens_per_block"), key + ".tokens_per_block",
             0, std::numeric_limits<int32_t>::max());
  launch.gridDim = getString(member(value, key, "grid_dim"), key + ".grid_dim");
  if (stripSpaces(launch.gridDim) == "cooperative" &&
      entry == EntryKind::Route) {
    // An expert-choice route: its token segments stride over all tokens,
    // blocks of whole warps, kExpertChoiceMaxBlocks at most, a block's
    // tokens times k slots per block (docs/kernel-abi.md).
    launch.cooperative = true;
    if (launch.tokensPerBlock != 0)
      fail(key + ".tokens_per_block",
           "must be 0 for a cooperative launch, got " +
               std::to_string(launch.tokensPerBlock));
    if (launch.blockDim % 32 != 0)
      fail(key + ".block_dim", std::to_string(launch.blockDim) +
                                   " must be a multiple of 32");
    launch.maxGridDim = getInt(member(value, key, "max_grid_dim"),
                               key + ".max_grid_dim", 1, kExpertChoiceMaxBlocks);
    if (launch.maxGridDim != kExpertChoiceMaxBlocks)
      fail(key + ".max_grid_dim", std::to_string(launch.maxGridDim) +
                                      " must be " +
                                      std::to_string(kExpertChoiceMaxBlocks));
    launch.slotsPerBlock =
        getInt(member(value, key, "slots_per_block"), key + ".slots_per_block",
               1, std::numeric_limits<int32_t>::max());
    if (launch.slotsPerBlock % manifest.topK != 0)
      fail(key + ".slots_per_block",
           std::to_string(launch.slotsPerBlock) +
               " must be a multiple of top_k = " +
               std::to_string(manifest.topK) + " (tokens per block * k)");
  } else if (stripSpaces(launch.gridDim) == "cooperative") {
    // The GPU dispatch: every block resident at once (docs/kernel-abi.md).
    launch.cooperative = true;
    if (launch.tokensPerBlock != 0)
      fail(key + ".tokens_per_block",
           "must be 0 for a cooperative launch, got " +
               std::to_string(launch.tokensPerBlock));
    if (entry != EntryKind::Dispatch)
      fail(key + ".grid_dim", "\"cooperative\" is for the dispatch and an "
                              "expert-choice route");
    if (launch.blockDim != kDispatchBlockThreads)
      fail(key + ".block_dim", std::to_string(launch.blockDim) + " must be " +
                                   std::to_string(kDispatchBlockThreads) +
                                   " for a cooperative launch");
    launch.maxGridDim = getInt(member(value, key, "max_grid_dim"),
                               key + ".max_grid_dim", 1, kDispatchMaxBlocks);
    if (launch.maxGridDim != dispatchMaxBlocks(manifest.numExperts))
      fail(key + ".max_grid_dim",
           std::to_string(launch.maxGridDim) + " must be " +
               std::to_string(dispatchMaxBlocks(manifest.numExperts)) +
               " for num_experts = " + std::to_string(manifest.numExperts));
    launch.slotsPerBlock =
        getInt(member(value, key, "slots_per_block"), key + ".slots_per_block",
               1, std::numeric_limits<int32_t>::max());
    if (launch.slotsPerBlock != kDispatchSlotsPerBlock)
      fail(key + ".slots_per_block",
           std::to_string(launch.slotsPerBlock) + " must be " +
               std::to_string(kDispatchSlotsPerBlock));
  } else {
    // Optional: kernels from before sub-warp schedules ran a warp per token.
    if (value.contains("lanes_per_token")) {
      launch.lanesPerToken =
          getInt(value["lanes_per_token"], key + ".lanes_per_token", 0, 32);
      const int64_t lanes = launch.lanesPerToken;
      if (lanes != 0 && ((lanes & (lanes - 1)) != 0 ||
                         launch.blockDim != launch.tokensPerBlock * lanes))
        fail(key + ".lanes_per_token",
             std::to_string(lanes) +
                 " must be a power of two with block_dim = tokens_per_block "
                 "* lanes_per_token (" +
                 std::to_string(launch.blockDim) + " = " +
                 std::to_string(launch.tokensPerBlock) + " * " +
                 std::to_string(lanes) + ")");
    }
    const std::string expected =
        launch.tokensPerBlock > 0
            ? "ceil_div(T," + std::to_string(launch.tokensPerBlock) + ")"
            : "1";
    if (stripSpaces(launch.gridDim) != expected)
      fail(key + ".grid_dim",
           quote(launch.gridDim) + " does not match tokens_per_block = " +
               std::to_string(launch.tokensPerBlock) + " (expected " +
               (launch.tokensPerBlock > 0
                    ? "\"ceil_div(T, " +
                          std::to_string(launch.tokensPerBlock) + ")\""
                    : std::string("\"1\" or \"cooperative\"")) +
               ")");
  }
  launch.dynamicSharedMemoryBytes =
      getInt(member(value, key, "dynamic_shared_memory_bytes"),
             key + ".dynamic_shared_memory_bytes", 0,
             std::numeric_limits<int32_t>::max());
  if (entry == EntryKind::Dispatch && launch.cooperative &&
      launch.dynamicSharedMemoryBytes !=
          dispatchSharedBytes(manifest.numExperts))
    fail(key + ".dynamic_shared_memory_bytes",
         std::to_string(launch.dynamicSharedMemoryBytes) + " must be " +
             std::to_string(dispatchSharedBytes(manifest.numExperts)) +
             " for num_experts = " + std::to_string(manifest.numExperts) +
             " (a one-block grid's counters, docs/kernel-abi.md)");
}

void Parser::parseKernel(const Json &value, const std::string &key,
                         Kernel &kernel) {
  if (!value.is_object())
    fail(key, "must be an object, got " + describe(value));
  std::string entryText =
      getString(member(value, key, "entry"), key + ".entry");
  std::optional<EntryKind> entry = parseEntryKind(entryText);
  if (!entry)
    fail(key + ".entry", "unknown entry point " + quote(entryText) +
                             " (expected route, route_hash, replay or "
                             "dispatch)");
  kernel.entry = *entry;
  const std::string entryName(toString(kernel.entry));

  kernel.symbol = getString(member(value, key, "symbol"), key + ".symbol");
  auto isIdentifierChar = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == '$' || (!first && c >= '0' && c <= '9');
  };
  bool validSymbol = !kernel.symbol.empty();
  for (size_t i = 0; i < kernel.symbol.size(); ++i)
    validSymbol &= isIdentifierChar(kernel.symbol[i], i == 0);
  if (!validSymbol)
    fail(key + ".symbol",
         quote(kernel.symbol) + " is not a PTX entry name (an identifier)");

  const std::string paramsKey = key + ".params";
  const Json &params = member(value, key, "params");
  if (!params.is_array())
    fail(paramsKey, "must be an array, got " + describe(params));

  // GPU kernels take the catalogue's arguments but the token range.
  std::vector<const ArgSpec *> expected;
  std::string expectedNames, tensorNames;
  for (const ArgSpec &arg : entrySignature(kernel.entry)) {
    if (arg.role == ArgRole::TokenBegin || arg.role == ArgRole::TokenEnd)
      continue;
    expected.push_back(&arg);
    expectedNames += std::string(expectedNames.empty() ? "" : ", ") +
                     std::string(arg.name);
    if (arg.role != ArgRole::Scalar)
      tensorNames += std::string(tensorNames.empty() ? "" : ", ") +
                     std::string(arg.name);
  }

  // Sizes still owed by the last pointer: (pointer index, dimension).
  std::vector<std::pair<int, int>> pendingSizes;
  for (size_t j = 0; j < params.size(); ++j) {
    const std::string pkey = paramsKey + "[" + std::to_string(j) + "]";
    const Json &p = params[j];
    if (!p.is_object())
      fail(pkey, "must be an object, got " + describe(p));
    Param param;
    param.name = getString(member(p, pkey, "name"), pkey + ".name");
    if (kernel.findParam(param.name) >= 0)
      fail(pkey + ".name", quote(param.name) + " appears twice");
    std::string kindText = getString(member(p, pkey, "kind"), pkey + ".kind");
    if (kindText == "pointer")
      param.kind = ParamKind::Pointer;
    else if (kindText == "size")
      param.kind = ParamKind::Size;
    else if (kindText == "scalar")
      param.kind = ParamKind::Scalar;
    else
      fail(pkey + ".kind", "unknown kind " + quote(kindText) +
                               " (expected pointer, size or scalar)");

    if (param.kind != ParamKind::Size && !pendingSizes.empty()) {
      const Param &owner = kernel.params[pendingSizes.front().first];
      fail(pkey, "expected the size parameter " +
                     quote(owner.name + ".size" +
                           std::to_string(pendingSizes.front().second)) +
                     " here (every dynamic dimension of " + quote(owner.name) +
                     " is followed by its size)");
    }

    switch (param.kind) {
    case ParamKind::Pointer: {
      const ArgSpec *spec = findArg(kernel.entry, param.name);
      if (!spec || (spec->role != ArgRole::Tensor &&
                    spec->role != ArgRole::ErrorRecord &&
                    spec->role != ArgRole::Scratch))
        fail(pkey + ".name", quote(param.name) + " is not a tensor of a " +
                                 entryName + " kernel (expected one of " +
                                 tensorNames + ")");
      const ArgSpec *it = spec;
      param.dtype = getDType(member(p, pkey, "dtype"), pkey + ".dtype");
      std::optional<DType> want = it->dtype;
      std::string source = "for " + param.name;
      if (it->dtypeRule == DTypeRule::Logits) {
        want = manifest.logitsDType;
        source = "as logits_dtype";
      } else if (it->dtypeRule == DTypeRule::Capture) {
        if (!manifest.captureDType)
          fail("capture_dtype",
               "missing, but " + pkey + " is a capture buffer");
        want = manifest.captureDType;
        source = "as capture_dtype";
      } else if (it->dtypeRule == DTypeRule::Hidden) {
        if (!manifest.hiddenDType)
          fail("hidden_dtype",
               "missing, but " + pkey + " is a hidden-state tensor");
        want = manifest.hiddenDType;
        source = "as hidden_dtype";
      }
      if (param.dtype != *want)
        fail(pkey + ".dtype", quote(toString(param.dtype)) + " must be " +
                                  quote(toString(*want)) + " " + source);

      const std::string shapeKey = pkey + ".shape";
      const Json &shape = member(p, pkey, "shape");
      if (!shape.is_array())
        fail(shapeKey, "must be an array, got " + describe(shape));
      for (size_t d = 0; d < shape.size(); ++d)
        param.shape.push_back(
            parseDim(shape[d], shapeKey + "[" + std::to_string(d) + "]"));
      std::vector<Dim> wantShape = expectedShape(*it);
      bool same = wantShape.size() == param.shape.size();
      for (size_t d = 0; same && d < wantShape.size(); ++d)
        same = wantShape[d].symbol == param.shape[d].symbol &&
               wantShape[d].extent == param.shape[d].extent;
      if (!same)
        fail(shapeKey,
             shapeText(param.shape) + " must be " + shapeText(wantShape) +
                 " for " + param.name +
                 " (num_experts = " + std::to_string(manifest.numExperts) +
                 ", top_k = " + std::to_string(manifest.topK) + ")");

      std::string accessText =
          getString(member(p, pkey, "access"), pkey + ".access");
      std::optional<Access> access = parseAccess(accessText);
      if (!access)
        fail(pkey + ".access", "unknown access " + quote(accessText) +
                                   " (expected read, write or readwrite)");
      param.access = *access;
      if (param.access != it->access)
        fail(pkey + ".access",
             quote(accessText) + " must be " + quote(toString(it->access)) +
                 " for " + param.name + " in a " + entryName + " kernel");
      for (size_t d = 0; d < param.shape.size(); ++d)
        if (param.shape[d].isDynamic())
          pendingSizes.emplace_back(int(kernel.params.size()), int(d));
      break;
    }
    case ParamKind::Size: {
      if (pendingSizes.empty())
        fail(pkey, "size parameter " + quote(param.name) +
                       " does not follow a pointer with a dynamic dimension "
                       "still to size");
      auto [owner, dim] = pendingSizes.front();
      pendingSizes.erase(pendingSizes.begin());
      const Param &pointer = kernel.params[owner];
      std::string of = getString(member(p, pkey, "of"), pkey + ".of");
      if (of != pointer.name)
        fail(pkey + ".of", quote(of) + " must be " + quote(pointer.name) +
                               " (sizes follow their pointer)");
      param.ofParam = owner;
      param.dim = int(getInt(member(p, pkey, "dim"), pkey + ".dim", 0, 7));
      if (param.dim != dim)
        fail(pkey + ".dim",
             std::to_string(param.dim) + " must be " + std::to_string(dim) +
                 " (the next dynamic dimension of " + quote(pointer.name) +
                 ", shape " + shapeText(pointer.shape) + ")");
      const std::string wantName = sizeParamName(pointer.name, dim);
      if (param.name != wantName)
        fail(pkey + ".name", quote(param.name) + " must be " + quote(wantName));
      param.dtype = DType::I64;
      break;
    }
    case ParamKind::Scalar:
      if (param.name != "layer" || !entryMayCapture(kernel.entry))
        fail(pkey + ".name", "scalar " + quote(param.name) +
                                 " is not a parameter of a " + entryName +
                                 " kernel (the only scalar is the capture "
                                 "layer of route and route_hash)");
      param.dtype = getDType(member(p, pkey, "dtype"), pkey + ".dtype");
      if (param.dtype != DType::I64)
        fail(pkey + ".dtype", quote(toString(param.dtype)) +
                                  " must be 'i64' (scalars are int64)");
      break;
    }
    kernel.params.push_back(std::move(param));
  }
  if (!pendingSizes.empty()) {
    const Param &owner = kernel.params[pendingSizes.front().first];
    fail(paramsKey, "ends before the size parameter " +
                        quote(owner.name + ".size" +
                              std::to_string(pendingSizes.front().second)));
  }
  for (const ArgSpec *arg : expected)
    if (arg->required && kernel.findParam(arg->name) < 0)
      fail(paramsKey, "missing " + quote(std::string(arg->name)) + " (a " +
                          entryName + " kernel takes " + expectedNames + ")");
  bool hasCapture = kernel.findParam("capture") >= 0;
  bool hasLayer = kernel.findParam("layer") >= 0;
  if (hasCapture != hasLayer)
    fail(paramsKey, hasCapture ? "has 'capture' but no 'layer'"
                               : "has 'layer' but no 'capture'");

  parseLaunch(member(value, key, "launch"), key + ".launch", kernel.entry,
              kernel.launch);
  // The scratch buffer and the cooperative grid come together: the kernel
  // that synchronizes its grid keeps its histograms there.
  bool hasScratch = kernel.findParam("scratch") >= 0;
  if (hasScratch != kernel.launch.cooperative)
    fail(key + ".launch.grid_dim",
         hasScratch ? "must be \"cooperative\" for a kernel with 'scratch'"
                    : "\"cooperative\" needs a 'scratch' parameter");
  // Information for people and tools (optional: older kernels lack it).
  if (auto it = value.find("topk"); it != value.end()) {
    kernel.topk = getString(*it, key + ".topk");
    if (kernel.topk != "argmax_passes" && kernel.topk != "insertion" &&
        kernel.topk != "lane_lists" && kernel.topk != "token_lanes")
      fail(key + ".topk",
           quote(kernel.topk) +
               " must be argmax_passes, insertion, lane_lists or token_lanes");
  }
  if (auto it = value.find("schedule_source"); it != value.end()) {
    kernel.scheduleSource = getString(*it, key + ".schedule_source");
    if (kernel.scheduleSource.empty())
      fail(key + ".schedule_source", "must not be empty");
  }
  if (auto it = value.find("min_tokens"); it != value.end()) {
    if (kernel.entry != EntryKind::Route &&
        kernel.entry != EntryKind::RouteHash &&
        kernel.entry != EntryKind::Replay)
      fail(key + ".min_tokens",
           "only route, route_hash and replay have a kernel per token "
           "bucket");
    if (kernel.launch.cooperative)
      fail(key + ".min_tokens",
           "a cooperative kernel has one schedule for every T");
    kernel.minTokens = getInt(*it, key + ".min_tokens", 1,
                              std::numeric_limits<int32_t>::max());
  }
  if (auto it = value.find("fused_dispatch_max_slots"); it != value.end()) {
    if (kernel.entry != EntryKind::Route &&
        kernel.entry != EntryKind::RouteHash &&
        kernel.entry != EntryKind::Replay)
      fail(key + ".fused_dispatch_max_slots",
           "only route, route_hash and replay kernels fuse the dispatch");
    if (kernel.minTokens > 0)
      fail(key + ".fused_dispatch_max_slots",
           "a kernel with a fused dispatch is no token bucket's (it has "
           "min_tokens)");
    if (kernel.launch.cooperative)
      fail(key + ".fused_dispatch_max_slots",
           "a cooperative kernel (an expert-choice route) does not fuse the "
           "dispatch");
    kernel.fusedDispatchMaxSlots =
        getInt(*it, key + ".fused_dispatch_max_slots", 1,
               kFusedDispatchMaxSlots);
  }
  // A fused kernel takes every output of the dispatch and its scratch (the
  // catalogue's fusedDispatchOnly arguments); another kernel of these entry
  // points takes none of them.
  for (const ArgSpec &arg : entrySignature(kernel.entry)) {
    if (!arg.fusedDispatchOnly)
      continue;
    const bool has = kernel.findParam(arg.name) >= 0;
    if (has != (kernel.fusedDispatchMaxSlots > 0))
      fail(paramsKey, has ? "has " + quote(std::string(arg.name)) +
                                " but no fused_dispatch_max_slots (only a "
                                "kernel with a fused dispatch takes it)"
                          : "lacks " + quote(std::string(arg.name)) +
                                ", which a kernel with a fused dispatch "
                                "takes");
  }
  if (kernel.fusedDispatchMaxSlots > 0 &&
      kernel.launch.dynamicSharedMemoryBytes <
          fusedDispatchSharedBytes(manifest.numExperts,
                                   kernel.launch.blockDim / 32))
    fail(key + ".launch.dynamic_shared_memory_bytes",
         std::to_string(kernel.launch.dynamicSharedMemoryBytes) +
             " bytes, but the fused dispatch of " +
             std::to_string(manifest.numExperts) + " experts on " +
             std::to_string(kernel.launch.blockDim / 32) +
             " warps needs at least " +
             std::to_string(fusedDispatchSharedBytes(
                 manifest.numExperts, kernel.launch.blockDim / 32)));
  if (kernel.fusedDispatchMaxSlots > 0 &&
      !fusedDispatchFits(manifest.numExperts, kernel.launch.blockDim / 32))
    fail(key + ".launch.block_dim",
         std::to_string(kernel.launch.blockDim) +
             " threads: too many partitions for the dispatch scratch of " +
             std::to_string(manifest.numExperts) + " experts");
  // Information from ptxas; checked only for sanity.
  if (auto it = value.find("registers"); it != value.end())
    kernel.registers = getInt(*it, key + ".registers", 0, 65536);
  if (auto it = value.find("spill_store_bytes"); it != value.end())
    kernel.spillStoreBytes = getInt(*it, key + ".spill_store_bytes", 0,
                                    std::numeric_limits<int32_t>::max());
}

std::string Parser::getBinary(const Json &root, const char *name,
                              std::string &file) {
  auto it = root.find(name);
  if (it == root.end())
    return {};
  file = getString(*it, name);
  if (file.empty() || fs::path(file).is_absolute())
    fail(name, quote(file) +
                   " must be a file name relative to the manifest's directory");
  fs::path resolved = fs::path(manifest.directory) / file;
  if (options.checkFilesExist) {
    std::error_code ec;
    if (!fs::is_regular_file(resolved, ec))
      fail(name, "file " + quote(resolved.string(), 200) + " does not exist");
  }
  return resolved.string();
}

Manifest Parser::parse(std::string_view text) {
  manifest.path = path;
  fs::path directory = fs::path(path).parent_path();
  manifest.directory = directory.empty() ? "." : directory.string();

  Json root;
  try {
    root = Json::parse(text.begin(), text.end());
  } catch (const Json::exception &e) {
    std::string message = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    if (size_t end = message.find("] ");
        !message.empty() && message[0] == '[' && end != std::string::npos)
      message = message.substr(end + 2);
    std::replace(message.begin(), message.end(), '\n', ' ');
    fail("", "invalid JSON: " + message);
  }
  if (!root.is_object())
    fail("", "must hold a JSON object, got " + describe(root));

  std::string format = getString(member(root, "", "format"), "format");
  if (format != kManifestFormat)
    fail("format", quote(format) + " is not '" + std::string(kManifestFormat) +
                       "' (not a moegen kernel manifest)");
  manifest.abiVersion = getInt(member(root, "", "abi_version"), "abi_version",
                               0, std::numeric_limits<int64_t>::max());
  if (manifest.abiVersion != kKernelAbiVersion)
    fail("abi_version", std::to_string(manifest.abiVersion) +
                            ", but this runtime speaks kernel ABI version " +
                            std::to_string(kKernelAbiVersion));
  manifest.compilerVersion =
      getString(member(root, "", "compiler_version"), "compiler_version");
  const std::string &expectedVersion = options.expectedCompilerVersion;
  if (manifest.compilerVersion != expectedVersion)
    fail("compiler_version",
         quote(manifest.compilerVersion) + " does not match the runtime's " +
             quote(expectedVersion) +
             " (recompile the spec with this version of moegen)");

  manifest.specName = getString(member(root, "", "spec_name"), "spec_name");
  if (manifest.specName.empty())
    fail("spec_name", "must not be empty");
  manifest.specHash = getString(member(root, "", "spec_hash"), "spec_hash");
  if (manifest.specHash.size() != 16 ||
      !std::all_of(manifest.specHash.begin(), manifest.specHash.end(),
                   [](char c) {
                     return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                   }))
    fail("spec_hash", quote(manifest.specHash) +
                          " must be 16 lowercase hex digits (FNV-1a 64 of "
                          "the normalized spec)");

  manifest.archText = getString(member(root, "", "arch"), "arch");
  std::optional<Arch> arch = parseArch(manifest.archText);
  if (!arch)
    fail("arch", quote(manifest.archText) +
                     " is not an architecture like sm_80, sm_90a or sm_100");
  manifest.arch = *arch;

  if (auto it = root.find("ptx_target"); it != root.end()) {
    manifest.ptxTarget = getString(*it, "ptx_target");
    if (!parseArch(manifest.ptxTarget))
      fail("ptx_target", quote(manifest.ptxTarget) +
                             " is not an architecture like sm_80 or sm_90");
  }
  manifest.cubinPath = getBinary(root, "cubin", manifest.cubinFile);
  manifest.ptxPath = getBinary(root, "ptx", manifest.ptxFile);
  if (manifest.cubinPath.empty() && manifest.ptxPath.empty())
    fail("cubin", "missing, and so is ptx (the manifest names no binary)");

  manifest.numExperts = getInt(member(root, "", "num_experts"), "num_experts",
                               1, std::numeric_limits<int32_t>::max() - 1);
  manifest.topK =
      getInt(member(root, "", "top_k"), "top_k", 1, manifest.numExperts);
  manifest.logitsDType =
      getDType(member(root, "", "logits_dtype"), "logits_dtype");
  if (manifest.logitsDType != DType::F32 &&
      manifest.logitsDType != DType::BF16 && manifest.logitsDType != DType::F16)
    fail("logits_dtype",
         quote(toString(manifest.logitsDType)) + " must be f32, bf16 or f16");
  if (auto it = root.find("capture_dtype"); it != root.end()) {
    manifest.captureDType = getDType(*it, "capture_dtype");
    DType want = captureDType(manifest.numExperts);
    if (*manifest.captureDType != want)
      fail("capture_dtype",
           quote(toString(*manifest.captureDType)) + " must be " +
               quote(toString(want)) +
               " for num_experts = " + std::to_string(manifest.numExperts) +
               " (i16 when num_experts <= 32767, else i32)");
  }

  if (auto it = root.find("hidden_dtype"); it != root.end()) {
    manifest.hiddenDType = getDType(*it, "hidden_dtype");
    if (*manifest.hiddenDType != DType::F32 &&
        *manifest.hiddenDType != DType::BF16 &&
        *manifest.hiddenDType != DType::F16)
      fail("hidden_dtype", quote(toString(*manifest.hiddenDType)) +
                               " must be f32, bf16 or f16");
    manifest.hiddenSize =
        getInt(member(root, "", "hidden_size"), "hidden_size", 1,
               std::numeric_limits<int32_t>::max());
  }

  if (auto it = root.find("unused_slots"); it != root.end()) {
    if (!it->is_boolean())
      fail("unused_slots", "must be true or false, got " + describe(*it));
    manifest.unusedSlots = it->get<bool>();
  }
  if (auto it = root.find("capacity_factor"); it != root.end()) {
    if (!it->is_number())
      fail("capacity_factor", "must be a number, got " + describe(*it));
    double f = it->get<double>();
    if (!(f >= 1.1754944e-38 && f <= 3.4028234e38))
      fail("capacity_factor", it->dump() + " must be a normal f32 value > 0");
    manifest.capacityFactor = f;
  }

  // Optional: the compiler may state the record size; it must be ours.
  if (auto it = root.find("error_record_words"); it != root.end())
    getInt(*it, "error_record_words", moegen::kGpuKernelErrorWords,
           moegen::kGpuKernelErrorWords);

  const Json &kernels = member(root, "", "kernels");
  if (!kernels.is_array())
    fail("kernels", "must be an array, got " + describe(kernels));
  if (kernels.empty())
    fail("kernels", "must name at least one kernel");
  for (size_t i = 0; i < kernels.size(); ++i) {
    const std::string key = "kernels[" + std::to_string(i) + "]";
    Kernel kernel;
    parseKernel(kernels[i], key, kernel);
    for (size_t j = 0; j < manifest.kernels.size(); ++j) {
      const Kernel &other = manifest.kernels[j];
      if (other.entry == kernel.entry && other.minTokens == kernel.minTokens &&
          (other.fusedDispatchMaxSlots > 0) ==
              (kernel.fusedDispatchMaxSlots > 0))
        fail(key + ".entry",
             quote(toString(kernel.entry)) + " appears twice (also kernels[" +
                 std::to_string(j) + "])" +
                 (kernel.minTokens
                      ? " with min_tokens " + std::to_string(kernel.minTokens)
                      : ""));

      if (manifest.kernels[j].symbol == kernel.symbol)
        fail(key + ".symbol", quote(kernel.symbol) +
                                  " appears twice (also kernels[" +
                                  std::to_string(j) + "])");
    }
    manifest.kernels.push_back(std::move(kernel));
  }
  for (size_t i = 0; i < manifest.kernels.size(); ++i) {
    const Kernel &kernel = manifest.kernels[i];
    if (kernel.minTokens > 0 && !manifest.find(kernel.entry))
      fail("kernels[" + std::to_string(i) + "].min_tokens",
           "the " + std::string(toString(kernel.entry)) +
               " entry point has no kernel without min_tokens, for the "
               "smallest token counts");
    // The dispatch kernel serves the calls past a fused kernel's slots.
    if (kernel.fusedDispatchMaxSlots > 0 && !manifest.find(EntryKind::Dispatch))
      fail("kernels[" + std::to_string(i) + "].fused_dispatch_max_slots",
           "the manifest has no dispatch kernel for calls of more slots");
    if (kernel.fusedDispatchMaxSlots > 0 && !manifest.find(kernel.entry))
      fail("kernels[" + std::to_string(i) + "].fused_dispatch_max_slots",
           "the " + std::string(toString(kernel.entry)) +
               " entry point has no plain kernel beside the fused one");
    // The runtime checks a call against the plain kernel's parameters
    // (bias, capture, shared gate) and may launch the fused one: they
    // must take the same, but for the dispatch's.
    if (kernel.fusedDispatchMaxSlots > 0) {
      Kernel routeOnly = kernel;
      std::erase_if(routeOnly.params, [&](const Param &param) {
        const std::string &owner =
            param.kind == ParamKind::Size
                ? kernel.params.at(size_t(param.ofParam)).name
                : param.name;
        const ArgSpec *spec = findArg(kernel.entry, owner);
        return spec && spec->fusedDispatchOnly;
      });
      // Sizes name their pointer by index: renumber after the erasure.
      for (Param &param : routeOnly.params)
        if (param.kind == ParamKind::Size)
          param.ofParam = routeOnly.findParam(
              kernel.params.at(size_t(param.ofParam)).name);
      if (!sameParams(*manifest.find(kernel.entry), routeOnly))
        fail("kernels[" + std::to_string(i) + "].params",
             "differ from those of the plain " +
                 std::string(toString(kernel.entry)) +
                 " kernel beyond the dispatch's (a kernel with a fused "
                 "dispatch takes the same route parameters)");
    }
    // A kernel per token bucket takes the parameters of the entry point's
    // kernel for the fewest tokens.
    const Kernel *first = manifest.find(kernel.entry);
    if (first && kernel.minTokens > 0 && !sameParams(*first, kernel))
      fail("kernels[" + std::to_string(i) + "].params",
           "differ from those of the " + std::string(toString(kernel.entry)) +
               " kernel for fewer tokens (a kernel per token bucket takes "
               "the same parameters)");
  }
  return std::move(manifest);
}

} // namespace

std::string_view toString(ParamKind kind) {
  switch (kind) {
  case ParamKind::Pointer:
    return "pointer";
  case ParamKind::Size:
    return "size";
  case ParamKind::Scalar:
    return "scalar";
  }
  return "?";
}

std::optional<Dim::Symbol> parseDimSymbol(std::string_view text) {
  for (Dim::Symbol symbol :
       {Dim::Symbol::T, Dim::Symbol::V, Dim::Symbol::L, Dim::Symbol::TK,
        Dim::Symbol::H})
    if (toString(Dim{symbol, 0}) == text)
      return symbol;
  return std::nullopt;
}

std::string toString(const Dim &dim) {
  switch (dim.symbol) {
  case Dim::Symbol::None:
    return std::to_string(dim.extent);
  case Dim::Symbol::T:
    return "T";
  case Dim::Symbol::V:
    return "V";
  case Dim::Symbol::L:
    return "L";
  case Dim::Symbol::TK:
    return "T*k";
  case Dim::Symbol::H:
    return "H";
  }
  return "?";
}

int Kernel::findParam(std::string_view name) const {
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].name == name)
      return int(i);
  return -1;
}

std::string Arch::toString() const {
  std::string text = "sm_" + std::to_string(major) + std::to_string(minor);
  if (suffix)
    text += suffix;
  return text;
}

bool Arch::cubinRunsOn(int deviceMajor, int deviceMinor) const {
  if (deviceMajor != major)
    return false;
  return suffix == 'a' ? deviceMinor == minor : deviceMinor >= minor;
}

bool Arch::ptxRunsOn(int deviceMajor, int deviceMinor) const {
  if (suffix == 'a')
    return deviceMajor == major && deviceMinor == minor;
  if (suffix == 'f')
    return deviceMajor == major && deviceMinor >= minor;
  return deviceMajor > major || (deviceMajor == major && deviceMinor >= minor);
}

std::optional<Arch> parseArch(std::string_view text) {
  if (!text.starts_with("sm_"))
    return std::nullopt;
  text.remove_prefix(3);
  Arch arch;
  if (!text.empty() && (text.back() == 'a' || text.back() == 'f')) {
    arch.suffix = text.back();
    text.remove_suffix(1);
  }
  // Two or three digits: sm_80, sm_90, sm_100, sm_120; no leading zero.
  if (text.size() < 2 || text.size() > 3 || text[0] == '0' ||
      !std::all_of(text.begin(), text.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  int number = std::stoi(std::string(text));
  arch.major = number / 10;
  arch.minor = number % 10;
  return arch;
}

const Kernel *Manifest::find(EntryKind entry) const {
  for (const Kernel &kernel : kernels)
    if (kernel.entry == entry && kernel.minTokens == 0 &&
        kernel.fusedDispatchMaxSlots == 0)
      return &kernel;
  return nullptr;
}

const Kernel *Manifest::findFused(EntryKind entry) const {
  for (const Kernel &kernel : kernels)
    if (kernel.entry == entry && kernel.fusedDispatchMaxSlots > 0)
      return &kernel;
  return nullptr;
}

const Kernel *Manifest::findFor(EntryKind entry, int64_t tokens) const {
  const Kernel *best = nullptr;
  for (const Kernel &kernel : kernels)
    if (kernel.entry == entry && kernel.fusedDispatchMaxSlots == 0 &&
        kernel.minTokens <= tokens && (!best || kernel.minTokens > best->minTokens))
      best = &kernel;
  return best;
}

Manifest parseManifest(std::string_view jsonText, const std::string &path,
                       const ManifestOptions &options) {
  return Parser(path, options).parse(jsonText);
}

std::string writeManifest(const Manifest &manifest) {
  // nlohmann's ordered_json keeps the keys in the order written, so the
  // file reads top-down as docs/kernel-abi.md shows it.
  using Ordered = nlohmann::ordered_json;
  Ordered kernels = Ordered::array();
  for (const Kernel &kernel : manifest.kernels) {
    Ordered params = Ordered::array();
    for (const Param &param : kernel.params) {
      Ordered object{{"name", param.name}, {"kind", toString(param.kind)}};
      switch (param.kind) {
      case ParamKind::Pointer: {
        object["dtype"] = toString(param.dtype);
        Ordered shape = Ordered::array();
        for (const Dim &dim : param.shape) {
          if (dim.isDynamic())
            shape.push_back(toString(dim));
          else
            shape.push_back(dim.extent);
        }
        object["shape"] = std::move(shape);
        object["access"] = toString(param.access);
        break;
      }
      case ParamKind::Size:
        object["of"] = kernel.params.at(size_t(param.ofParam)).name;
        object["dim"] = param.dim;
        break;
      case ParamKind::Scalar:
        object["dtype"] = toString(param.dtype);
        break;
      }
      params.push_back(std::move(object));
    }
    const LaunchRule &launch = kernel.launch;
    Ordered object{
        {"entry", toString(kernel.entry)},
        {"symbol", kernel.symbol},
        {"params", std::move(params)},
        {"launch",
         {{"block_dim", launch.blockDim},
          {"tokens_per_block", launch.tokensPerBlock},
          {"grid_dim", launch.cooperative ? std::string("cooperative")
                       : launch.tokensPerBlock > 0
                           ? "ceil_div(T, " +
                                 std::to_string(launch.tokensPerBlock) + ")"
                           : std::string("1")}}}};
    if (launch.cooperative) {
      object["launch"]["max_grid_dim"] = launch.maxGridDim;
      object["launch"]["slots_per_block"] = launch.slotsPerBlock;
    } else if (launch.lanesPerToken > 0) {
      object["launch"]["lanes_per_token"] = launch.lanesPerToken;
    }
    object["launch"]["dynamic_shared_memory_bytes"] =
        launch.dynamicSharedMemoryBytes;
    if (!kernel.topk.empty())
      object["topk"] = kernel.topk;
    if (!kernel.scheduleSource.empty())
      object["schedule_source"] = kernel.scheduleSource;
    if (kernel.minTokens > 0)
      object["min_tokens"] = kernel.minTokens;
    if (kernel.fusedDispatchMaxSlots > 0)
      object["fused_dispatch_max_slots"] = kernel.fusedDispatchMaxSlots;
    if (kernel.registers)
      object["registers"] = *kernel.registers;
    if (kernel.spillStoreBytes)
      object["spill_store_bytes"] = *kernel.spillStoreBytes;
    kernels.push_back(std::move(object));
  }
  Ordered root{{"format", kManifestFormat},
               {"abi_version", kKernelAbiVersion},
               {"compiler_version", manifest.compilerVersion},
               {"spec_name", manifest.specName},
               {"spec_hash", manifest.specHash},
               {"arch", manifest.arch.toString()}};
  if (!manifest.ptxTarget.empty())
    root["ptx_target"] = manifest.ptxTarget;
  if (!manifest.ptxFile.empty())
    root["ptx"] = manifest.ptxFile;
  if (!manifest.cubinFile.empty())
    root["cubin"] = manifest.cubinFile;
  root["num_experts"] = manifest.numExperts;
  root["top_k"] = manifest.topK;
  root["logits_dtype"] = toString(manifest.logitsDType);
  if (manifest.captureDType)
    root["capture_dtype"] = toString(*manifest.captureDType);
  if (manifest.hiddenDType) {
    root["hidden_dtype"] = toString(*manifest.hiddenDType);
    root["hidden_size"] = manifest.hiddenSize;
  }
  if (manifest.unusedSlots)
    root["unused_slots"] = true;
  if (manifest.capacityFactor > 0)
    root["capacity_factor"] = manifest.capacityFactor;
  root["error_record_words"] = kGpuKernelErrorWords;
  root["kernels"] = std::move(kernels);
  return root.dump(2) + "\n";
}

} // namespace moegen::abi
