//===- Manifest.cpp - Parse and validate manifest.json --------------------===//
//
// Every check names the file and the key ("kernels[1].params[3].dtype") and
// says what was expected. Unknown keys are ignored (reserved for
// information such as the kernel configuration); everything the runtime
// uses is checked against the rules of docs/runtime.md.
//
//===----------------------------------------------------------------------===//

#include "runtime/Manifest.h"
#include "runtime/Error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace moegen::rt {

namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

/// `text` for a one-line message: quoted, control characters escaped, cut.
std::string quote(std::string_view text, size_t maxLength = 40) {
  std::string out = "'";
  size_t n = 0;
  for (char c : text) {
    if (n++ == maxLength) {
      out += "...";
      break;
    }
    auto u = static_cast<unsigned char>(c);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "'";
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

constexpr std::array<std::string_view, 6> kDTypeNames = {"f32", "bf16", "f16",
                                                         "i16", "i32",  "i64"};

struct ExpectedTensor {
  std::string_view name;
  /// Shape in terms of T, V, L, T*k, E ("E"), E + 1 ("E+1") and k ("k").
  std::vector<std::string_view> shape;
  /// "logits" and "capture" take the manifest's dtypes.
  std::optional<DType> dtype;
  Access access;
  bool required;
};

std::vector<ExpectedTensor> expectedTensors(EntryKind entry) {
  const ExpectedTensor logits{
      "logits", {"T", "E"}, std::nullopt, Access::Read, true};
  const ExpectedTensor capture{
      "capture", {"T", "L", "k"}, std::nullopt, Access::ReadWrite, false};
  const ExpectedTensor ids{
      "topk_ids", {"T", "k"}, DType::I32, Access::Write, true};
  const ExpectedTensor weights{
      "topk_weights", {"T", "k"}, DType::F32, Access::Write, true};
  const ExpectedTensor error{
      "error", {"6"}, DType::I64, Access::ReadWrite, true};
  switch (entry) {
  case EntryKind::Route:
    return {logits,  {"bias", {"E"}, DType::F32, Access::Read, false},
            capture, ids,
            weights, error};
  case EntryKind::RouteHash:
    return {logits,
            {"token_ids", {"T"}, DType::I32, Access::Read, true},
            {"hash_table", {"V", "k"}, DType::I32, Access::Read, true},
            capture,
            ids,
            weights,
            error};
  case EntryKind::Replay:
    return {logits,
            {"forced_ids", {"T", "k"}, DType::I32, Access::Read, true},
            ids,
            weights,
            error};
  case EntryKind::Dispatch:
    return {{"topk_ids", {"T", "k"}, DType::I32, Access::Read, true},
            {"expert_counts", {"E"}, DType::I32, Access::Write, true},
            {"expert_offsets", {"E+1"}, DType::I32, Access::Write, true},
            {"sorted_slots", {"T*k"}, DType::I32, Access::Write, true},
            {"slot_positions", {"T*k"}, DType::I32, Access::Write, true},
            error};
  }
  return {};
}

/// Whether the entry has a `layer` scalar (exactly when it has a capture).
bool entryMayCapture(EntryKind entry) {
  return entry == EntryKind::Route || entry == EntryKind::RouteHash;
}

std::string_view toString(Access access) {
  switch (access) {
  case Access::Read:
    return "read";
  case Access::Write:
    return "write";
  case Access::ReadWrite:
    return "readwrite";
  }
  return "?";
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
    throw Error(Error::Kind::Manifest,
                path + ": " + (key.empty() ? "" : key + ": ") + message);
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
  std::string getBinary(const Json &root, const char *name);

  Dim parseDim(const Json &value, const std::string &key);
  std::vector<Dim> expectedShape(const ExpectedTensor &tensor);
  void parseKernel(const Json &value, const std::string &key, Kernel &kernel);
  void parseLaunch(const Json &value, const std::string &key,
                   LaunchRule &launch);

  const std::string &path;
  const ManifestOptions &options;
  Manifest manifest;
};

Dim Parser::parseDim(const Json &value, const std::string &key) {
  Dim dim;
  if (value.is_string()) {
    std::string text = stripSpaces(value.get<std::string>());
    if (text == "T")
      dim.symbol = Dim::Symbol::T;
    else if (text == "V")
      dim.symbol = Dim::Symbol::V;
    else if (text == "L")
      dim.symbol = Dim::Symbol::L;
    else if (text == "T*k")
      dim.symbol = Dim::Symbol::TK;
    else
      fail(key, "unknown symbolic dimension " +
                    quote(value.get<std::string>()) +
                    " (expected \"T\", \"V\", \"L\", \"T*k\" or an integer)");
    return dim;
  }
  if (!value.is_number_integer())
    fail(key, "must be an integer or a symbol (\"T\", \"V\", \"L\", \"T*k\"), "
              "got " +
                  describe(value));
  dim.extent = getInt(value, key, 0, std::numeric_limits<int32_t>::max());
  return dim;
}

std::vector<Dim> Parser::expectedShape(const ExpectedTensor &tensor) {
  std::vector<Dim> shape;
  for (std::string_view text : tensor.shape) {
    Dim dim;
    if (text == "T")
      dim.symbol = Dim::Symbol::T;
    else if (text == "V")
      dim.symbol = Dim::Symbol::V;
    else if (text == "L")
      dim.symbol = Dim::Symbol::L;
    else if (text == "T*k")
      dim.symbol = Dim::Symbol::TK;
    else if (text == "E")
      dim.extent = manifest.numExperts;
    else if (text == "E+1")
      dim.extent = manifest.numExperts + 1;
    else if (text == "k")
      dim.extent = manifest.topK;
    else
      dim.extent = std::stoll(std::string(text));
    shape.push_back(dim);
  }
  return shape;
}

void Parser::parseLaunch(const Json &value, const std::string &key,
                         LaunchRule &launch) {
  if (!value.is_object())
    fail(key, "must be an object, got " + describe(value));
  launch.blockDim =
      getInt(member(value, key, "block_dim"), key + ".block_dim", 1, 1024);
  launch.tokensPerBlock =
      getInt(member(value, key, "tokens_per_block"), key + ".tokens_per_block",
             0, std::numeric_limits<int32_t>::max());
  launch.gridDim = getString(member(value, key, "grid_dim"), key + ".grid_dim");
  const std::string expected =
      launch.tokensPerBlock > 0
          ? "ceil_div(T," + std::to_string(launch.tokensPerBlock) + ")"
          : "1";
  if (stripSpaces(launch.gridDim) != expected)
    fail(key + ".grid_dim",
         quote(launch.gridDim) + " does not match tokens_per_block = " +
             std::to_string(launch.tokensPerBlock) + " (expected " +
             (launch.tokensPerBlock > 0
                  ? "\"ceil_div(T, " + std::to_string(launch.tokensPerBlock) +
                        ")\""
                  : std::string("\"1\"")) +
             ")");
  launch.dynamicSharedMemoryBytes =
      getInt(member(value, key, "dynamic_shared_memory_bytes"),
             key + ".dynamic_shared_memory_bytes", 0,
             std::numeric_limits<int32_t>::max());
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

  const std::vector<ExpectedTensor> expected = expectedTensors(kernel.entry);
  std::string expectedNames;
  for (const ExpectedTensor &tensor : expected)
    expectedNames += std::string(expectedNames.empty() ? "" : ", ") +
                     std::string(tensor.name);
  if (entryMayCapture(kernel.entry))
    expectedNames += ", layer";

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
      auto it = std::find_if(expected.begin(), expected.end(),
                             [&](const ExpectedTensor &tensor) {
                               return tensor.name == param.name;
                             });
      if (it == expected.end())
        fail(pkey + ".name", quote(param.name) + " is not a tensor of a " +
                                 entryName + " kernel (expected one of " +
                                 expectedNames + ")");
      param.dtype = getDType(member(p, pkey, "dtype"), pkey + ".dtype");
      std::optional<DType> want = it->dtype;
      std::string source = "for " + param.name;
      if (param.name == "logits") {
        want = manifest.logitsDType;
        source = "as logits_dtype";
      } else if (param.name == "capture") {
        if (!manifest.captureDType)
          fail("capture_dtype",
               "missing, but " + pkey + " is a capture buffer");
        want = manifest.captureDType;
        source = "as capture_dtype";
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
      if (accessText == "read")
        param.access = Access::Read;
      else if (accessText == "write")
        param.access = Access::Write;
      else if (accessText == "readwrite")
        param.access = Access::ReadWrite;
      else
        fail(pkey + ".access", "unknown access " + quote(accessText) +
                                   " (expected read, write or readwrite)");
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
      const std::string wantName = pointer.name + ".size" + std::to_string(dim);
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
  for (const ExpectedTensor &tensor : expected)
    if (tensor.required && kernel.findParam(tensor.name) < 0)
      fail(paramsKey, "missing " + quote(tensor.name) + " (a " + entryName +
                          " kernel takes " + expectedNames + ")");
  bool hasCapture = kernel.findParam("capture") >= 0;
  bool hasLayer = kernel.findParam("layer") >= 0;
  if (hasCapture != hasLayer)
    fail(paramsKey, hasCapture ? "has 'capture' but no 'layer'"
                               : "has 'layer' but no 'capture'");

  parseLaunch(member(value, key, "launch"), key + ".launch", kernel.launch);
}

std::string Parser::getBinary(const Json &root, const char *name) {
  auto it = root.find(name);
  if (it == root.end())
    return {};
  std::string file = getString(*it, name);
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
  const std::string expectedVersion = options.expectedCompilerVersion.empty()
                                          ? runtimeVersion()
                                          : options.expectedCompilerVersion;
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

  manifest.cubinPath = getBinary(root, "cubin");
  manifest.ptxPath = getBinary(root, "ptx");
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
    DType want = manifest.numExperts <= 32767 ? DType::I16 : DType::I32;
    if (*manifest.captureDType != want)
      fail("capture_dtype",
           quote(toString(*manifest.captureDType)) + " must be " +
               quote(toString(want)) +
               " for num_experts = " + std::to_string(manifest.numExperts) +
               " (i16 when num_experts <= 32767, else i32)");
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
      if (manifest.kernels[j].entry == kernel.entry)
        fail(key + ".entry", quote(toString(kernel.entry)) +
                                 " appears twice (also kernels[" +
                                 std::to_string(j) + "])");
      if (manifest.kernels[j].symbol == kernel.symbol)
        fail(key + ".symbol", quote(kernel.symbol) +
                                  " appears twice (also kernels[" +
                                  std::to_string(j) + "])");
    }
    manifest.kernels.push_back(std::move(kernel));
  }
  return std::move(manifest);
}

} // namespace

std::string_view toString(DType dtype) {
  return kDTypeNames[static_cast<size_t>(dtype)];
}

std::optional<DType> parseDType(std::string_view text) {
  for (size_t i = 0; i < kDTypeNames.size(); ++i)
    if (kDTypeNames[i] == text)
      return static_cast<DType>(i);
  return std::nullopt;
}

size_t byteSize(DType dtype) {
  switch (dtype) {
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::BF16:
  case DType::F16:
  case DType::I16:
    return 2;
  case DType::I64:
    return 8;
  }
  return 0;
}

std::string_view toString(EntryKind entry) {
  switch (entry) {
  case EntryKind::Route:
    return "route";
  case EntryKind::RouteHash:
    return "route_hash";
  case EntryKind::Replay:
    return "replay";
  case EntryKind::Dispatch:
    return "dispatch";
  }
  return "?";
}

std::optional<EntryKind> parseEntryKind(std::string_view text) {
  for (EntryKind entry : {EntryKind::Route, EntryKind::RouteHash,
                          EntryKind::Replay, EntryKind::Dispatch})
    if (toString(entry) == text)
      return entry;
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
    if (kernel.entry == entry)
      return &kernel;
  return nullptr;
}

Manifest parseManifest(std::string_view jsonText, const std::string &path,
                       const ManifestOptions &options) {
  return Parser(path, options).parse(jsonText);
}

Manifest loadManifest(const std::string &path, const ManifestOptions &options) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec))
    file = (fs::path(path) / "manifest.json").string();
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw Error(Error::Kind::Manifest,
                file + ": cannot read the manifest (" +
                    (fs::exists(file, ec) ? "not readable" : "no such file") +
                    "; is this a `moegen compile --emit=cubin -o DIR` "
                    "output directory?)");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw Error(Error::Kind::Manifest, file + ": cannot read the manifest");
  return parseManifest(text.str(), file, options);
}

} // namespace moegen::rt
