//===- RuntimeTestUtil.h - Shared helpers of the runtime tests --*- C++ -*-===//

#ifndef MOEGEN_TESTS_UNIT_RUNTIMETESTUTIL_H
#define MOEGEN_TESTS_UNIT_RUNTIMETESTUTIL_H

#include "abi/KernelAbi.h"
#include "runtime/Error.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace rttest {
using moegen::rt::runtimeVersion;

/// A fresh directory under $TMPDIR (or /tmp), removed on destruction.
class TempDir {
public:
  TempDir() {
    const char *base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base && *base ? base : "/tmp") + "/moegen-rt-test-XXXXXX";
    if (!::mkdtemp(pattern.data()))
      std::abort();
    dir = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  const std::string &path() const { return dir; }
  std::string operator/(const std::string &name) const {
    return dir + "/" + name;
  }

private:
  std::string dir;
};

inline void writeText(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

inline std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

/// The manifest of docs/runtime.md: a DeepSeek-V3-like spec (E 256, k 8,
/// f32 logits, bias, capture) with route and dispatch kernels for sm_90.
inline nlohmann::json exampleManifest() {
  using nlohmann::json;
  json route = {{"entry", "route"},
                {"symbol", "route"},
                {"params",
                 {{{"name", "logits"},
                   {"kind", "pointer"},
                   {"dtype", "f32"},
                   {"shape", {"T", 256}},
                   {"access", "read"}},
                  {{"name", "logits.size0"},
                   {"kind", "size"},
                   {"of", "logits"},
                   {"dim", 0}},
                  {{"name", "bias"},
                   {"kind", "pointer"},
                   {"dtype", "f32"},
                   {"shape", {256}},
                   {"access", "read"}},
                  {{"name", "capture"},
                   {"kind", "pointer"},
                   {"dtype", "i16"},
                   {"shape", {"T", "L", 8}},
                   {"access", "readwrite"}},
                  {{"name", "capture.size0"},
                   {"kind", "size"},
                   {"of", "capture"},
                   {"dim", 0}},
                  {{"name", "capture.size1"},
                   {"kind", "size"},
                   {"of", "capture"},
                   {"dim", 1}},
                  {{"name", "layer"}, {"kind", "scalar"}, {"dtype", "i64"}},
                  {{"name", "topk_ids"},
                   {"kind", "pointer"},
                   {"dtype", "i32"},
                   {"shape", {"T", 8}},
                   {"access", "write"}},
                  {{"name", "topk_ids.size0"},
                   {"kind", "size"},
                   {"of", "topk_ids"},
                   {"dim", 0}},
                  {{"name", "topk_weights"},
                   {"kind", "pointer"},
                   {"dtype", "f32"},
                   {"shape", {"T", 8}},
                   {"access", "write"}},
                  {{"name", "topk_weights.size0"},
                   {"kind", "size"},
                   {"of", "topk_weights"},
                   {"dim", 0}},
                  {{"name", "error"},
                   {"kind", "pointer"},
                   {"dtype", "i64"},
                   {"shape", {6}},
                   {"access", "readwrite"}}}},
                {"launch",
                 {{"block_dim", 128},
                  {"tokens_per_block", 4},
                  {"grid_dim", "ceil_div(T, 4)"},
                  {"dynamic_shared_memory_bytes", 12288}}}};
  json dispatch = {{"entry", "dispatch"},
                   {"symbol", "dispatch"},
                   {"params",
                    {{{"name", "topk_ids"},
                      {"kind", "pointer"},
                      {"dtype", "i32"},
                      {"shape", {"T", 8}},
                      {"access", "read"}},
                     {{"name", "topk_ids.size0"},
                      {"kind", "size"},
                      {"of", "topk_ids"},
                      {"dim", 0}},
                     {{"name", "expert_counts"},
                      {"kind", "pointer"},
                      {"dtype", "i32"},
                      {"shape", {256}},
                      {"access", "write"}},
                     {{"name", "expert_offsets"},
                      {"kind", "pointer"},
                      {"dtype", "i32"},
                      {"shape", {257}},
                      {"access", "write"}},
                     {{"name", "sorted_slots"},
                      {"kind", "pointer"},
                      {"dtype", "i32"},
                      {"shape", {"T*k"}},
                      {"access", "write"}},
                     {{"name", "sorted_slots.size0"},
                      {"kind", "size"},
                      {"of", "sorted_slots"},
                      {"dim", 0}},
                     {{"name", "slot_positions"},
                      {"kind", "pointer"},
                      {"dtype", "i32"},
                      {"shape", {"T*k"}},
                      {"access", "write"}},
                     {{"name", "slot_positions.size0"},
                      {"kind", "size"},
                      {"of", "slot_positions"},
                      {"dim", 0}},
                     {{"name", "error"},
                      {"kind", "pointer"},
                      {"dtype", "i64"},
                      {"shape", {6}},
                      {"access", "readwrite"}},
                     {{"name", "scratch"},
                      {"kind", "pointer"},
                      {"dtype", "i32"},
                      {"shape", {moegen::abi::dispatchScratchWords(256)}},
                      {"access", "readwrite"}}}},
                   {"launch",
                    {{"block_dim", 256},
                     {"tokens_per_block", 0},
                     {"grid_dim", "cooperative"},
                     {"max_grid_dim", 256},
                     {"slots_per_block", 2048},
                     {"dynamic_shared_memory_bytes",
                      moegen::abi::dispatchSharedBytes(256)}}}};
  return {{"format", "moegen-kernels"},
          {"abi_version", 1},
          {"compiler_version", runtimeVersion()},
          {"spec_name", "deepseek-v3"},
          {"spec_hash", "9f3c2a0011223344"},
          {"arch", "sm_90"},
          {"cubin", "kernels.cubin"},
          {"ptx", "kernels.ptx"},
          {"num_experts", 256},
          {"top_k", 8},
          {"logits_dtype", "f32"},
          {"capture_dtype", "i16"},
          {"kernels", {route, dispatch}}};
}

/// Writes `manifest` and, for each binary it names, a fake binary (see
/// RuntimeFakeCuda.cpp) listing its kernels.
inline void writeKernelDir(const std::string &dir,
                           const nlohmann::json &manifest) {
  writeText(dir + "/manifest.json", manifest.dump(2));
  if (!manifest.is_object())
    return;
  std::string kernels;
  if (manifest.contains("kernels") && manifest["kernels"].is_array())
    for (const auto &kernel : manifest["kernels"])
      kernels += kernel.value("symbol", std::string("?")) + " " +
                 std::to_string(
                     kernel.contains("params") ? kernel["params"].size() : 0) +
                 "\n";
  const std::string arch = manifest.value("arch", std::string("sm_90"));
  if (manifest.contains("cubin") && manifest["cubin"].is_string())
    writeText(dir + "/" + manifest["cubin"].get<std::string>(),
              "FAKE-CUBIN " + arch + "\n" + kernels);
  if (manifest.contains("ptx") && manifest["ptx"].is_string())
    writeText(dir + "/" + manifest["ptx"].get<std::string>(),
              "FAKE-PTX " + arch + "\n" + kernels);
}

} // namespace rttest

#endif // MOEGEN_TESTS_UNIT_RUNTIMETESTUTIL_H
