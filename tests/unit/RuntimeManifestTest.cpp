//===- RuntimeManifestTest.cpp - manifest.json parsing and validation -----===//
//
// The good manifest of docs/runtime.md parses into what it says, and every
// broken rule gives exactly one line naming the file and the key.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/HostRouter.h"
#include "runtime/Manifest.h"
#include "tests/unit/RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <functional>
#include <tuple>

#include <sys/stat.h>

using namespace moegen::rt;
using nlohmann::json;
using rttest::TempDir;

namespace {

class RuntimeManifestTest : public ::testing::Test {
protected:
  /// Writes `manifest` into the temporary directory and returns the message
  /// of the Error loading it throws ("" when it loads).
  std::string loadError(const json &manifest) {
    rttest::writeKernelDir(dir.path(), manifest);
    try {
      loadManifest(dir.path());
    } catch (const Error &e) {
      EXPECT_EQ(e.kind(), Error::Kind::Manifest) << e.what();
      return e.what();
    }
    return "";
  }
  std::string path() const { return dir / "manifest.json"; }
  static std::pair<Error::Kind, std::string>
  loadErrorOf(const std::string &file) {
    try {
      loadManifest(file);
    } catch (const Error &e) {
      return {e.kind(), e.what()};
    }
    return {Error::Kind::Io, "<no error>"};
  }
  TempDir dir;
};

TEST_F(RuntimeManifestTest, GoodManifest) {
  rttest::writeKernelDir(dir.path(), rttest::exampleManifest());
  Manifest m = loadManifest(dir.path());
  EXPECT_EQ(m.path, path());
  EXPECT_EQ(m.directory, dir.path());
  EXPECT_EQ(m.abiVersion, 1);
  EXPECT_EQ(m.compilerVersion, runtimeVersion());
  EXPECT_EQ(m.specName, "deepseek-v3");
  EXPECT_EQ(m.specHash, "9f3c2a0011223344");
  EXPECT_EQ(m.arch.major, 9);
  EXPECT_EQ(m.arch.minor, 0);
  EXPECT_EQ(m.arch.suffix, 0);
  EXPECT_EQ(m.cubinPath, dir / "kernels.cubin");
  EXPECT_EQ(m.ptxPath, dir / "kernels.ptx");
  EXPECT_EQ(m.numExperts, 256);
  EXPECT_EQ(m.topK, 8);
  EXPECT_EQ(m.logitsDType, DType::F32);
  ASSERT_TRUE(m.captureDType);
  EXPECT_EQ(*m.captureDType, DType::I16);
  ASSERT_EQ(m.kernels.size(), 2u);

  const Kernel *route = m.find(EntryKind::Route);
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->symbol, "route");
  ASSERT_EQ(route->params.size(), 12u);
  EXPECT_EQ(route->params[0].kind, ParamKind::Pointer);
  EXPECT_EQ(route->params[0].shape.size(), 2u);
  EXPECT_EQ(route->params[0].shape[0].symbol, Dim::Symbol::T);
  EXPECT_EQ(route->params[0].shape[1].extent, 256);
  EXPECT_EQ(route->params[1].kind, ParamKind::Size);
  EXPECT_EQ(route->params[1].ofParam, 0);
  EXPECT_EQ(route->params[1].dim, 0);
  EXPECT_EQ(route->params[5].ofParam, 3);
  EXPECT_EQ(route->params[5].dim, 1);
  EXPECT_EQ(route->params[6].kind, ParamKind::Scalar);
  EXPECT_EQ(route->params[3].access, Access::ReadWrite);
  EXPECT_EQ(route->findParam("error"), 11);
  EXPECT_EQ(route->launch.blockDim, 128);
  EXPECT_EQ(route->launch.tokensPerBlock, 4);
  EXPECT_EQ(route->launch.dynamicSharedMemoryBytes, 12288);
  // Optional information: absent here, as from older compilers.
  EXPECT_EQ(route->topk, "");
  EXPECT_EQ(route->scheduleSource, "");

  const Kernel *dispatch = m.find(EntryKind::Dispatch);
  ASSERT_NE(dispatch, nullptr);
  EXPECT_EQ(dispatch->params[4].shape[0].symbol, Dim::Symbol::TK);
  EXPECT_EQ(dispatch->params[3].shape[0].extent, 257);
  EXPECT_EQ(dispatch->launch.tokensPerBlock, 0);
  EXPECT_EQ(m.find(EntryKind::Replay), nullptr);
}

TEST_F(RuntimeManifestTest, UnusedSlotsAndCapacity) {
  // Absent: neither; present: both reach the router's facts and survive a
  // write and a parse.
  rttest::writeKernelDir(dir.path(), rttest::exampleManifest());
  Manifest plain = loadManifest(dir.path());
  EXPECT_FALSE(plain.unusedSlots);
  EXPECT_EQ(plain.capacityFactor, 0.0);
  json manifest = rttest::exampleManifest();
  manifest["unused_slots"] = true;
  manifest["capacity_factor"] = 1.25;
  rttest::writeKernelDir(dir.path(), manifest);
  Manifest m = loadManifest(dir.path());
  EXPECT_TRUE(m.unusedSlots);
  EXPECT_EQ(m.capacityFactor, 1.25);
  RouterFacts facts = routerFactsOf(m);
  EXPECT_TRUE(facts.unusedSlots);
  EXPECT_EQ(facts.capacityFactor, 1.25);
  json written = json::parse(writeManifest(m));
  EXPECT_EQ(written["unused_slots"], true);
  EXPECT_EQ(written["capacity_factor"], 1.25);
  EXPECT_FALSE(json::parse(writeManifest(plain)).contains("unused_slots"));
}

TEST_F(RuntimeManifestTest, ManifestFileOrDirectory) {
  rttest::writeKernelDir(dir.path(), rttest::exampleManifest());
  EXPECT_EQ(loadManifest(path()).path, path());
  EXPECT_EQ(loadManifest(dir.path()).path, path());
}

TEST_F(RuntimeManifestTest, OtherEntryPointsAndDTypes) {
  json m = rttest::exampleManifest();
  m["logits_dtype"] = "bf16";
  m["kernels"][0]["params"][0]["dtype"] = "bf16";
  // replay: logits, forced_ids, outputs, error.
  json replay = {{"entry", "replay"}, {"symbol", "replay_kernel"}};
  replay["params"] = json::array();
  for (int i : {0, 1})
    replay["params"].push_back(m["kernels"][0]["params"][i]);
  replay["params"].push_back({{"name", "forced_ids"},
                              {"kind", "pointer"},
                              {"dtype", "i32"},
                              {"shape", {"T", 8}},
                              {"access", "read"}});
  replay["params"].push_back({{"name", "forced_ids.size0"},
                              {"kind", "size"},
                              {"of", "forced_ids"},
                              {"dim", 0}});
  for (int i : {7, 8, 9, 10, 11})
    replay["params"].push_back(m["kernels"][0]["params"][i]);
  replay["launch"] = {{"block_dim", 256},
                      {"tokens_per_block", 1},
                      {"grid_dim", "ceil_div(T,1)"},
                      {"dynamic_shared_memory_bytes", 65536}};
  m["kernels"].push_back(replay);
  // route_hash in a manifest of its own.
  ASSERT_EQ(loadError(m), "");
  Manifest parsed = loadManifest(dir.path());
  EXPECT_EQ(parsed.logitsDType, DType::BF16);
  ASSERT_NE(parsed.find(EntryKind::Replay), nullptr);
  EXPECT_EQ(parsed.find(EntryKind::Replay)->symbol, "replay_kernel");

  json hash = rttest::exampleManifest();
  json &params = hash["kernels"][0]["params"];
  hash["kernels"][0]["entry"] = "route_hash";
  params.erase(2); // bias
  auto param = [](const char *name, const char *kind) {
    json p = json::object();
    p["name"] = name;
    p["kind"] = kind;
    return p;
  };
  json tokenIds = param("token_ids", "pointer");
  tokenIds["dtype"] = "i32";
  tokenIds["shape"] = {"T"};
  tokenIds["access"] = "read";
  json tokenIdsSize = param("token_ids.size0", "size");
  tokenIdsSize["of"] = "token_ids";
  tokenIdsSize["dim"] = 0;
  json table = param("hash_table", "pointer");
  table["dtype"] = "i32";
  table["shape"] = {"V", 8};
  table["access"] = "read";
  json tableSize = param("hash_table.size0", "size");
  tableSize["of"] = "hash_table";
  tableSize["dim"] = 0;
  params.insert(params.begin() + 2, tokenIds);
  params.insert(params.begin() + 3, tokenIdsSize);
  params.insert(params.begin() + 4, table);
  params.insert(params.begin() + 5, tableSize);
  EXPECT_EQ(loadError(hash), "");
}

TEST_F(RuntimeManifestTest, CaptureDTypeFollowsExperts) {
  json m = rttest::exampleManifest();
  m["num_experts"] = 40000;
  m["capture_dtype"] = "i32";
  m["kernels"] = json::array({m["kernels"][0]});
  json &params = m["kernels"][0]["params"];
  params[0]["shape"][1] = 40000;
  params[2]["shape"][0] = 40000;
  params[3]["dtype"] = "i32";
  EXPECT_EQ(loadError(m), "");
}

struct BadCase {
  const char *what;
  std::function<void(json &)> mutate;
  /// The message after "PATH: "; "$DIR" stands for the directory.
  std::string expected;
};

TEST_F(RuntimeManifestTest, EachBrokenRuleGivesOneLine) {
  const std::string version = runtimeVersion();
  const std::vector<BadCase> cases = {
      {"unknown dtype",
       [](json &m) { m["kernels"][1]["params"][3]["dtype"] = "f64"; },
       "kernels[1].params[3].dtype: unknown dtype 'f64' (expected one of f32, "
       "bf16, f16, i16, i32, i64)"},
      {"format", [](json &m) { m["format"] = "triton"; },
       "format: 'triton' is not 'moegen-kernels' (not a moegen kernel "
       "manifest)"},
      {"format missing", [](json &m) { m.erase("format"); }, "format: missing"},
      {"abi", [](json &m) { m["abi_version"] = 2; },
       "abi_version: 2, but this runtime speaks kernel ABI version 1"},
      {"abi type", [](json &m) { m["abi_version"] = "1"; },
       "abi_version: must be an integer, got string '1'"},
      {"compiler version", [](json &m) { m["compiler_version"] = "9.9.9"; },
       "compiler_version: '9.9.9' does not match the runtime's '" + version +
           "' (recompile the spec with this version of moegen)"},
      {"arch", [](json &m) { m["arch"] = "sm9"; },
       "arch: 'sm9' is not an architecture like sm_80, sm_90a or sm_100"},
      {"arch suffix", [](json &m) { m["arch"] = "sm_90b"; },
       "arch: 'sm_90b' is not an architecture like sm_80, sm_90a or sm_100"},
      {"spec hash", [](json &m) { m["spec_hash"] = "9F3C"; },
       "spec_hash: '9F3C' must be 16 lowercase hex digits (FNV-1a 64 of the "
       "normalized spec)"},
      {"no binaries",
       [](json &m) {
         m.erase("cubin");
         m.erase("ptx");
       },
       "cubin: missing, and so is ptx (the manifest names no binary)"},
      {"absolute binary", [](json &m) { m["ptx"] = "/tmp/kernels.ptx"; },
       "ptx: '/tmp/kernels.ptx' must be a file name relative to the "
       "manifest's directory"},
      {"num_experts type", [](json &m) { m["num_experts"] = "256"; },
       "num_experts: must be an integer, got string '256'"},
      {"num_experts float", [](json &m) { m["num_experts"] = 256.5; },
       "num_experts: must be an integer, got number 256.5"},
      {"top_k range", [](json &m) { m["top_k"] = 300; },
       "top_k: 300 must be in [1, 256]"},
      {"top_k missing", [](json &m) { m.erase("top_k"); }, "top_k: missing"},
      {"logits dtype", [](json &m) { m["logits_dtype"] = "i32"; },
       "logits_dtype: 'i32' must be f32, bf16 or f16"},
      {"capture dtype", [](json &m) { m["capture_dtype"] = "i32"; },
       "capture_dtype: 'i32' must be 'i16' for num_experts = 256 (i16 when "
       "num_experts <= 32767, else i32)"},
      {"capture dtype missing", [](json &m) { m.erase("capture_dtype"); },
       "capture_dtype: missing, but kernels[0].params[3] is a capture buffer"},
      {"kernels empty", [](json &m) { m["kernels"] = json::array(); },
       "kernels: must name at least one kernel"},
      {"kernels type", [](json &m) { m["kernels"] = json::object(); },
       "kernels: must be an array, got an object"},
      {"entry", [](json &m) { m["kernels"][0]["entry"] = "routes"; },
       "kernels[0].entry: unknown entry point 'routes' (expected route, "
       "route_hash, replay or dispatch)"},
      {"duplicate entry",
       [](json &m) {
         json copy = m["kernels"][0];
         copy["symbol"] = "route2";
         m["kernels"].push_back(copy);
       },
       "kernels[2].entry: 'route' appears twice (also kernels[0])"},
      {"symbol", [](json &m) { m["kernels"][0]["symbol"] = "route kernel"; },
       "kernels[0].symbol: 'route kernel' is not a PTX entry name (an "
       "identifier)"},
      {"missing size", [](json &m) { m["kernels"][0]["params"].erase(1); },
       "kernels[0].params[1]: expected the size parameter 'logits.size0' "
       "here (every dynamic dimension of 'logits' is followed by its size)"},
      {"stray size",
       [](json &m) {
         json size = m["kernels"][1]["params"][1];
         size["name"] = "expert_counts.size0";
         size["of"] = "expert_counts";
         m["kernels"][1]["params"].insert(m["kernels"][1]["params"].begin() + 3,
                                          size);
       },
       "kernels[1].params[3]: size parameter 'expert_counts.size0' does not "
       "follow a pointer with a dynamic dimension still to size"},
      {"size of", [](json &m) { m["kernels"][0]["params"][1]["of"] = "bias"; },
       "kernels[0].params[1].of: 'bias' must be 'logits' (sizes follow their "
       "pointer)"},
      {"size dim", [](json &m) { m["kernels"][0]["params"][5]["dim"] = 2; },
       "kernels[0].params[5].dim: 2 must be 1 (the next dynamic dimension of "
       "'capture', shape [T, L, 8])"},
      {"size name", [](json &m) { m["kernels"][0]["params"][1]["name"] = "T"; },
       "kernels[0].params[1].name: 'T' must be 'logits.size0'"},
      {"shape", [](json &m) { m["kernels"][0]["params"][0]["shape"][1] = 128; },
       "kernels[0].params[0].shape: [T, 128] must be [T, 256] for logits "
       "(num_experts = 256, top_k = 8)"},
      {"shape symbol",
       [](json &m) { m["kernels"][0]["params"][0]["shape"][0] = "N"; },
       "kernels[0].params[0].shape[0]: unknown symbolic dimension 'N' "
       "(expected \"T\", \"V\", \"L\", \"T*k\", \"H\" or an integer)"},
      {"dtype mismatch",
       [](json &m) { m["kernels"][0]["params"][7]["dtype"] = "i64"; },
       "kernels[0].params[7].dtype: 'i64' must be 'i32' for topk_ids"},
      {"logits dtype mismatch",
       [](json &m) { m["kernels"][0]["params"][0]["dtype"] = "f16"; },
       "kernels[0].params[0].dtype: 'f16' must be 'f32' as logits_dtype"},
      {"access",
       [](json &m) { m["kernels"][0]["params"][3]["access"] = "write"; },
       "kernels[0].params[3].access: 'write' must be 'readwrite' for capture "
       "in a route kernel"},
      {"kind", [](json &m) { m["kernels"][0]["params"][0]["kind"] = "tensor"; },
       "kernels[0].params[0].kind: unknown kind 'tensor' (expected pointer, "
       "size or scalar)"},
      {"unknown tensor",
       [](json &m) { m["kernels"][1]["params"][2]["name"] = "bias"; },
       "kernels[1].params[2].name: 'bias' is not a tensor of a dispatch kernel "
       "(expected one of topk_ids, expert_counts, expert_offsets, "
       "sorted_slots, slot_positions, error, scratch)"},
      {"unused_slots not a bool",
       [](json &m) { m["unused_slots"] = 1; },
       "unused_slots: must be true or false, got number 1"},
      {"capacity_factor not positive",
       [](json &m) { m["capacity_factor"] = -1.5; },
       "capacity_factor: -1.5 must be a normal f32 value > 0"},
      {"capacity_factor not a number",
       [](json &m) { m["capacity_factor"] = "1.25"; },
       "capacity_factor: must be a number, got string '1.25'"},
      {"scratch of the wrong size",
       [](json &m) { m["kernels"][1]["params"][9]["shape"] = {1024}; },
       "kernels[1].params[9].shape: [1024] must be [526596] for scratch "
       "(num_experts = 256, top_k = 8)"},
      {"cooperative without scratch",
       [](json &m) { m["kernels"][1]["params"].erase(9); },
       "kernels[1].launch.grid_dim: \"cooperative\" needs a 'scratch' "
       "parameter"},
      {"scratch without a cooperative grid",
       [](json &m) {
         m["kernels"][1]["launch"] = {{"block_dim", 1},
                                      {"tokens_per_block", 0},
                                      {"grid_dim", "1"},
                                      {"dynamic_shared_memory_bytes", 0}};
       },
       "kernels[1].launch.grid_dim: must be \"cooperative\" for a kernel "
       "with 'scratch'"},
      {"cooperative grid cap",
       [](json &m) { m["kernels"][1]["launch"]["max_grid_dim"] = 64; },
       "kernels[1].launch.max_grid_dim: 64 must be 256 for num_experts = 256"},
      {"dispatch without its shared counters",
       [](json &m) {
         m["kernels"][1]["launch"]["dynamic_shared_memory_bytes"] = 0;
       },
       "kernels[1].launch.dynamic_shared_memory_bytes: 0 must be 9252 for "
       "num_experts = 256 (a one-block grid's counters, docs/kernel-abi.md)"},
      {"cooperative block",
       [](json &m) { m["kernels"][1]["launch"]["block_dim"] = 128; },
       "kernels[1].launch.block_dim: 128 must be 256 for a cooperative "
       "launch"},
      {"cooperative slots per block",
       [](json &m) { m["kernels"][1]["launch"].erase("slots_per_block"); },
       "kernels[1].launch.slots_per_block: missing"},
      {"cooperative row kernel",
       [](json &m) { m["kernels"][0]["launch"]["grid_dim"] = "cooperative"; },
       "kernels[0].launch.tokens_per_block: must be 0 for a cooperative "
       "launch, got 4"},
      {"duplicate param",
       [](json &m) {
         m["kernels"][1]["params"].push_back(m["kernels"][1]["params"][2]);
       },
       "kernels[1].params[10].name: 'expert_counts' appears twice"},
      {"scalar dtype",
       [](json &m) { m["kernels"][0]["params"][6]["dtype"] = "i32"; },
       "kernels[0].params[6].dtype: 'i32' must be 'i64' (scalars are int64)"},
      {"missing error", [](json &m) { m["kernels"][0]["params"].erase(11); },
       "kernels[0].params: missing 'error' (a route kernel takes logits, "
       "bias, capture, layer, shared_gate_logits, topk_ids, topk_weights, "
       "shared_gate, expert_counts, expert_offsets, sorted_slots, "
       "slot_positions, dispatch_scratch, error, scratch)"},
      {"fused dispatch without its outputs",
       [](json &m) { m["kernels"][0]["fused_dispatch_max_slots"] = 2048; },
       "kernels[0].params: lacks 'expert_counts', which a kernel with a "
       "fused dispatch takes"},
      {"fused dispatch on the dispatch kernel",
       [](json &m) { m["kernels"][1]["fused_dispatch_max_slots"] = 64; },
       "kernels[1].fused_dispatch_max_slots: only route, route_hash and "
       "replay kernels fuse the dispatch"},
      {"capture without layer",
       [](json &m) { m["kernels"][0]["params"].erase(6); },
       "kernels[0].params: has 'capture' but no 'layer'"},
      {"error shape",
       [](json &m) { m["kernels"][1]["params"][8]["shape"][0] = 5; },
       "kernels[1].params[8].shape: [5] must be [6] for error (num_experts = "
       "256, top_k = 8)"},
      {"grid",
       [](json &m) {
         m["kernels"][0]["launch"]["grid_dim"] = "ceil_div(T, 8)";
       },
       "kernels[0].launch.grid_dim: 'ceil_div(T, 8)' does not match "
       "tokens_per_block = 4 (expected \"ceil_div(T, 4)\")"},
      {"lanes per token",
       [](json &m) { m["kernels"][0]["launch"]["lanes_per_token"] = 8; },
       "kernels[0].launch.lanes_per_token: 8 must be a power of two with "
       "block_dim = tokens_per_block * lanes_per_token (128 = 4 * 8)"},
      {"lanes per token not a power of two",
       [](json &m) { m["kernels"][0]["launch"]["lanes_per_token"] = 3; },
       "kernels[0].launch.lanes_per_token: 3 must be a power of two with "
       "block_dim = tokens_per_block * lanes_per_token (128 = 4 * 3)"},
      {"top-k method",
       [](json &m) { m["kernels"][0]["topk"] = "heap"; },
       "kernels[0].topk: 'heap' must be argmax_passes, insertion, "
       "lane_lists or token_lanes"},
      {"schedule source",
       [](json &m) { m["kernels"][0]["schedule_source"] = ""; },
       "kernels[0].schedule_source: must not be empty"},
      {"block", [](json &m) { m["kernels"][0]["launch"]["block_dim"] = 2048; },
       "kernels[0].launch.block_dim: 2048 must be in [1, 1024]"},
      {"shared",
       [](json &m) {
         m["kernels"][0]["launch"]["dynamic_shared_memory_bytes"] = -1;
       },
       "kernels[0].launch.dynamic_shared_memory_bytes: -1 must be in [0, "
       "2147483647]"},
      {"launch missing", [](json &m) { m["kernels"][0].erase("launch"); },
       "kernels[0].launch: missing"},
      {"error record words", [](json &m) { m["error_record_words"] = 5; },
       "error_record_words: 5 must be in [6, 6]"},
      {"not an object",
       [](json &m) {
         m = json::array({1, 2});
       },
       "must hold a JSON object, got an array"},
  };
  for (const BadCase &c : cases) {
    json manifest = rttest::exampleManifest();
    c.mutate(manifest);
    EXPECT_EQ(loadError(manifest), path() + ": " + c.expected) << c.what;
  }
}

TEST_F(RuntimeManifestTest, MissingBinary) {
  json m = rttest::exampleManifest();
  rttest::writeKernelDir(dir.path(), m);
  std::filesystem::remove(dir / "kernels.cubin");
  try {
    loadManifest(dir.path());
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(std::string(e.what()), path() + ": cubin: file '" +
                                         (dir / "kernels.cubin") +
                                         "' does not exist");
  }
  // Without the existence check it parses.
  ManifestOptions options;
  options.checkFilesExist = false;
  EXPECT_EQ(loadManifest(dir.path(), options).cubinPath, dir / "kernels.cubin");
}

TEST_F(RuntimeManifestTest, InvalidJsonAndMissingFile) {
  rttest::writeText(path(), "{\"format\": \"moegen-kernels\",");
  try {
    loadManifest(dir.path());
    FAIL() << "expected an error";
  } catch (const Error &e) {
    std::string message = e.what();
    EXPECT_EQ(
        message.rfind(path() + ": invalid JSON: parse error at line 1", 0), 0u)
        << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
  std::filesystem::remove(path());
  try {
    loadManifest(dir.path());
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::Manifest);
    EXPECT_EQ(std::string(e.what()),
              path() + ": cannot read the manifest (no such file; is this a "
                       "`moegen compile --emit=cubin -o DIR` output "
                       "directory?)");
  }
}

TEST_F(RuntimeManifestTest, ReadsAreBounded) {
  // A huge file stops at the 16 MiB cap, with one line.
  rttest::writeText(path(), std::string((16 << 20) + 1, ' '));
  auto [kind, message] = loadErrorOf(path());
  EXPECT_EQ(kind, Error::Kind::Manifest);
  EXPECT_EQ(message, path() + ": cannot read the manifest: it is larger than "
                              "16 MiB, the limit for manifests");
  // A stream is not read at all: /dev/zero never ends, a FIFO would block.
  std::tie(kind, message) = loadErrorOf("/dev/zero");
  EXPECT_EQ(kind, Error::Kind::Manifest);
  EXPECT_EQ(message, "/dev/zero: cannot read the manifest: not a regular file");
  std::filesystem::remove(path());
  ASSERT_EQ(::mkfifo(path().c_str(), 0600), 0);
  std::tie(kind, message) = loadErrorOf(dir.path());
  EXPECT_EQ(message, path() + ": cannot read the manifest: not a regular file");
}

TEST_F(RuntimeManifestTest, ExpectedCompilerVersionOverride) {
  json m = rttest::exampleManifest();
  m["compiler_version"] = "7.0.0";
  rttest::writeKernelDir(dir.path(), m);
  ManifestOptions options;
  options.expectedCompilerVersion = "7.0.0";
  EXPECT_EQ(loadManifest(dir.path(), options).compilerVersion, "7.0.0");
}

TEST_F(RuntimeManifestTest, UnknownKeysAreIgnored) {
  json m = rttest::exampleManifest();
  m["kernel_config"] = {{"topk", "argmax_passes"}};
  m["kernels"][0]["notes"] = "one warp per token";
  EXPECT_EQ(loadError(m), "");
}

TEST_F(RuntimeManifestTest, ScheduleInformationIsReadAndWrittenBack) {
  json m = rttest::exampleManifest();
  m["kernels"][0]["topk"] = "lane_lists";
  m["kernels"][0]["schedule_source"] = "options: lanes_per_token = 4";
  rttest::writeKernelDir(dir.path(), m);
  Manifest manifest = loadManifest(dir.path());
  const Kernel *route = manifest.find(EntryKind::Route);
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->topk, "lane_lists");
  EXPECT_EQ(route->scheduleSource, "options: lanes_per_token = 4");
  const json written = json::parse(writeManifest(manifest));
  EXPECT_EQ(written["kernels"][0]["topk"], "lane_lists");
  EXPECT_EQ(written["kernels"][0]["schedule_source"],
            "options: lanes_per_token = 4");
  EXPECT_FALSE(written["kernels"][1].contains("topk"));
}

/// The example's route with the dispatch fused: its parameters, the
/// dispatch's outputs and dispatch_scratch before the error record.
json withFusedRoute(json m) {
  json fused = m["kernels"][0];
  const json &dispatch = m["kernels"][1];
  json params = json::array();
  for (const json &param : fused["params"]) {
    if (param["name"] == "error") {
      // expert_counts .. slot_positions.size0, then the scratch renamed.
      for (size_t i = 2; i + 2 < dispatch["params"].size(); ++i)
        params.push_back(dispatch["params"][i]);
      json scratch = dispatch["params"].back();
      scratch["name"] = "dispatch_scratch";
      params.push_back(scratch);
    }
    params.push_back(param);
  }
  fused["params"] = params;
  fused["symbol"] = "route_dispatch";
  fused["fused_dispatch_max_slots"] = 2048;
  const int64_t block = fused["launch"]["block_dim"];
  fused["launch"]["dynamic_shared_memory_bytes"] =
      std::max(fused["launch"]["dynamic_shared_memory_bytes"].get<int64_t>(),
               moegen::abi::fusedDispatchSharedBytes(256, block / 32));
  m["kernels"].push_back(fused);
  return m;
}

TEST_F(RuntimeManifestTest, FusedDispatchKernel) {
  json m = withFusedRoute(rttest::exampleManifest());
  rttest::writeKernelDir(dir.path(), m);
  Manifest manifest = loadManifest(dir.path());
  const Kernel *fused = manifest.findFused(EntryKind::Route);
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(fused->symbol, "route_dispatch");
  EXPECT_EQ(fused->fusedDispatchMaxSlots, 2048);
  // The plain kernel serves every call that does not fuse.
  EXPECT_EQ(manifest.find(EntryKind::Route)->symbol, "route");
  EXPECT_EQ(manifest.findFor(EntryKind::Route, 5)->symbol, "route");
  EXPECT_EQ(json::parse(writeManifest(manifest))["kernels"][2]
                ["fused_dispatch_max_slots"],
            2048);

  // Its route parameters are the plain kernel's.
  json other = m;
  json &params = other["kernels"][2]["params"];
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i]["name"] == "bias")
      params.erase(i);
  EXPECT_EQ(loadError(other),
            path() + ": kernels[2].params: differ from those of the plain "
                     "route kernel beyond the dispatch's (a kernel with a "
                     "fused dispatch takes the same route parameters)");
  // Not without a dispatch kernel for larger calls.
  other = m;
  other["kernels"].erase(1);
  EXPECT_EQ(loadError(other),
            path() + ": kernels[1].fused_dispatch_max_slots: the manifest "
                     "has no dispatch kernel for calls of more slots");
  // Nor with too little shared memory for the sort.
  other = m;
  other["kernels"][2]["launch"]["dynamic_shared_memory_bytes"] = 64;
  EXPECT_NE(loadError(other).find("kernels[2].launch.dynamic_shared_memory_"
                                   "bytes: 64 bytes, but the fused dispatch of "
                                   "256 experts"),
            std::string::npos);
  // Nor above one block's slots.
  other = m;
  other["kernels"][2]["fused_dispatch_max_slots"] = 4096;
  EXPECT_NE(loadError(other).find("kernels[2].fused_dispatch_max_slots"),
            std::string::npos);
}

TEST(RuntimeArchTest, ParseAndCompatibility) {
  auto arch = [](const char *text) {
    std::optional<Arch> parsed = parseArch(text);
    EXPECT_TRUE(parsed) << text;
    return parsed.value_or(Arch{});
  };
  EXPECT_EQ(arch("sm_80").toString(), "sm_80");
  EXPECT_EQ(arch("sm_90a").toString(), "sm_90a");
  EXPECT_EQ(arch("sm_100").major, 10);
  EXPECT_EQ(arch("sm_100f").suffix, 'f');
  EXPECT_EQ(arch("sm_120").major, 12);
  EXPECT_EQ(arch("sm_89").minor, 9);
  for (const char *bad : {"", "sm_", "sm_9", "sm_0", "sm_09", "sm_1000",
                          "compute_90", "sm_90x", "SM_90", "sm_90 "})
    EXPECT_FALSE(parseArch(bad)) << bad;

  EXPECT_TRUE(arch("sm_80").cubinRunsOn(8, 0));
  EXPECT_TRUE(arch("sm_80").cubinRunsOn(8, 6));
  EXPECT_FALSE(arch("sm_86").cubinRunsOn(8, 0));
  EXPECT_FALSE(arch("sm_80").cubinRunsOn(9, 0));
  EXPECT_TRUE(arch("sm_90a").cubinRunsOn(9, 0));
  EXPECT_FALSE(arch("sm_90a").cubinRunsOn(10, 0));

  EXPECT_TRUE(arch("sm_80").ptxRunsOn(9, 0));
  EXPECT_TRUE(arch("sm_80").ptxRunsOn(12, 0));
  EXPECT_FALSE(arch("sm_90").ptxRunsOn(8, 9));
  EXPECT_TRUE(arch("sm_90a").ptxRunsOn(9, 0));
  EXPECT_FALSE(arch("sm_90a").ptxRunsOn(10, 0));
  EXPECT_TRUE(arch("sm_100f").ptxRunsOn(10, 3));
  EXPECT_FALSE(arch("sm_100f").ptxRunsOn(12, 0));
}

TEST(RuntimeDTypeTest, Names) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::I16,
                      DType::I32, DType::I64})
    EXPECT_EQ(parseDType(toString(dtype)), dtype);
  EXPECT_FALSE(parseDType("f64"));
  EXPECT_EQ(byteSize(DType::BF16), 2u);
  EXPECT_EQ(byteSize(DType::I64), 8u);
  EXPECT_EQ(parseEntryKind("route_hash"), EntryKind::RouteHash);
  EXPECT_FALSE(parseEntryKind("Route"));
}

} // namespace
