//===- TuningDbTest.cpp - Tuning databases: lookup, merge, refusal --------===//

#include "compiler/tune/TuningDb.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace {

using namespace moegen::tune;

std::string scratchPath(const std::string &name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("moegen-tuning-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / name);
  return (dir / name).string();
}

Origin here() { return {"cpu", "test machine, 2 threads", "0.1.0+codegen.x"}; }

Entry entry(const std::string &hash, int64_t tokens, int64_t width,
            Origin origin = here()) {
  Entry e;
  e.specHash = hash;
  e.specName = "spec_" + hash;
  e.origin = origin;
  e.tokens = tokens;
  e.config = {width, 64, "insertion"};
  e.defaultUs = 10;
  e.tunedUs = 5;
  return e;
}

TEST(TuningDb, MissingFileIsEmpty) {
  std::string error;
  auto db = TuningDb::load(scratchPath("missing.json"), error);
  ASSERT_TRUE(db) << error;
  EXPECT_TRUE(db->entries().empty());
  EXPECT_EQ(db->lookup("h", here(), 64), nullptr);
}

TEST(TuningDb, LookupTakesTheLargestBucketAtOrBelowT) {
  std::string path = scratchPath("buckets.json");
  ASSERT_EQ(TuningDb::merge(path, {entry("h", 16, 4), entry("h", 4096, 16),
                                   entry("h", 256, 8), entry("g", 1, 32)}),
            "");
  std::string error;
  auto db = TuningDb::load(path, error);
  ASSERT_TRUE(db) << error;
  EXPECT_EQ(db->lookup("h", here(), 1)->tokens, 16); // below every bucket
  EXPECT_EQ(db->lookup("h", here(), 16)->tokens, 16);
  EXPECT_EQ(db->lookup("h", here(), 255)->tokens, 16);
  EXPECT_EQ(db->lookup("h", here(), 256)->tokens, 256);
  EXPECT_EQ(db->lookup("h", here(), 1 << 20)->tokens, 4096);
  EXPECT_EQ(db->lookup("h", here(), 4096)->config.vectorWidth, 16);
  EXPECT_EQ(db->lookup("nope", here(), 64), nullptr);
}

TEST(TuningDb, OtherMachinesAndBuildsAreIgnored) {
  std::string path = scratchPath("foreign.json");
  Origin other = here();
  other.machine = "another CPU, 64 threads";
  Origin older = here();
  older.compilerVersion = "0.0.9+codegen.y";
  ASSERT_EQ(TuningDb::merge(path, {entry("h", 64, 8, other),
                                   entry("h", 64, 16, older)}),
            "");
  std::string error;
  auto db = TuningDb::load(path, error);
  ASSERT_TRUE(db) << error;
  EXPECT_EQ(db->lookup("h", here(), 64), nullptr);
  EXPECT_EQ(db->foreignEntries(here()), 2u);
  ASSERT_NE(db->lookup("h", other, 64), nullptr);
  EXPECT_EQ(db->lookup("h", other, 64)->config.vectorWidth, 8);
}

TEST(TuningDb, MergeReplacesTheSameKeyAndKeepsTheRest) {
  std::string path = scratchPath("merge.json");
  ASSERT_EQ(TuningDb::merge(path, {entry("h", 64, 8), entry("h", 128, 8)}), "");
  ASSERT_EQ(TuningDb::merge(path, {entry("h", 64, 32)}), "");
  std::string error;
  auto db = TuningDb::load(path, error);
  ASSERT_TRUE(db) << error;
  ASSERT_EQ(db->entries().size(), 2u);
  EXPECT_EQ(db->lookup("h", here(), 64)->config.vectorWidth, 32);
  EXPECT_EQ(db->lookup("h", here(), 128)->config.vectorWidth, 8);
}

TEST(TuningDb, ConcurrentMergesKeepEveryEntry) {
  // Processes tuning at once: each merge re-reads the file under the lock.
  std::string path = scratchPath("concurrent.json");
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w)
    writers.emplace_back([&, w] {
      for (int i = 0; i < 8; ++i)
        EXPECT_EQ(TuningDb::merge(path, {entry("w" + std::to_string(w), i + 1, 8)}),
                  "");
    });
  for (std::thread &t : writers)
    t.join();
  std::string error;
  auto db = TuningDb::load(path, error);
  ASSERT_TRUE(db) << error;
  EXPECT_EQ(db->entries().size(), 32u);
}

TEST(TuningDb, MalformedFilesAreRefusedWhole) {
  struct Case {
    const char *text;
    const char *message;
  } cases[] = {
      {"{", "not a moegen tuning database: not valid JSON"},
      {"[]", "not a moegen tuning database (no \"format\""},
      {R"({"format": "moegen-tuning", "version": 2, "entries": []})",
       "tuning database version 2, this moegen reads version 1"},
      {R"({"format": "moegen-tuning", "version": 1, "entries": {}})",
       "\"entries\" must be an array"},
      {R"({"format": "moegen-tuning", "version": 1, "entries": [{"spec_hash": "h"}]})",
       "entries[0]: "},
      {R"({"format": "moegen-tuning", "version": 1, "entries": [{"spec_hash": "h", "backend": "cpu", "machine": "m", "compiler_version": "v", "tokens": 0, "config": {"vector_width": 8, "tokens_per_task": 1, "topk": ""}}]})",
       "entries[0].tokens must be >= 1"},
  };
  for (const Case &c : cases) {
    std::string path = scratchPath("bad.json");
    std::ofstream(path) << c.text;
    std::string error;
    EXPECT_FALSE(TuningDb::load(path, error)) << c.text;
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    // A merge leaves such a file alone.
    EXPECT_NE(TuningDb::merge(path, {entry("h", 1, 8)}), "");
    std::ifstream in(path);
    std::string kept((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(kept, c.text);
  }
}

TEST(TuningDb, ValidityModel) {
  EXPECT_EQ(checkCpuConfig({}), "");
  EXPECT_EQ(checkCpuConfig({16, 64, "lane_lists"}), "");
  EXPECT_NE(checkCpuConfig({3, 0, ""}), "");
  EXPECT_NE(checkCpuConfig({128, 0, ""}), "");
  EXPECT_NE(checkCpuConfig({8, -1, ""}), "");
  EXPECT_NE(checkCpuConfig({8, 0, "bubble"}), "");
  // Lane lists fit rows of any width (sorted up to 16 chunks a lane,
  // streamed past that), so a narrow width is no error.
  EXPECT_EQ(checkCpuConfig({4, 0, "lane_lists"}), "");
}

TEST(TuningDb, GpuValidityModel) {
  EXPECT_EQ(checkGpuConfig({}, 256), "");
  EXPECT_EQ(checkGpuConfig({8, 16, "lane_lists"}, 256), "");
  EXPECT_EQ(checkGpuConfig({32, 0, "argmax_passes"}, 8192), "");
  EXPECT_EQ(checkGpuConfig({0, 32, ""}, 256), "");
  EXPECT_NE(checkGpuConfig({3, 0, ""}, 256), "");
  EXPECT_NE(checkGpuConfig({64, 0, ""}, 256), "");
  EXPECT_NE(checkGpuConfig({0, 33, ""}, 256), "");
  // A block is whole warps of at most 1024 threads.
  EXPECT_NE(checkGpuConfig({8, 3, ""}, 256), "");
  EXPECT_NE(checkGpuConfig({32, 64, ""}, 256), "");
  EXPECT_EQ(checkGpuConfig({1, 1024, ""}, 8), "");
  // The CPU's token lanes are no GPU method.
  EXPECT_NE(checkGpuConfig({8, 16, "token_lanes"}, 256), "");
  // With a shared-memory limit, the block's rows must fit it.
  EXPECT_EQ(checkGpuConfig({32, 1, ""}, 8192, 227 * 1024), "");
  EXPECT_NE(checkGpuConfig({32, 2, ""}, 8192, 227 * 1024), "");
  EXPECT_EQ(checkGpuConfig({32, 2, ""}, 8192), "");
}

// GPU entries keep their own config keys through a merge and a load, and
// are looked up by their device and arch like CPU entries by their machine.
TEST(TuningDb, GpuEntriesRoundTrip) {
  const std::string path = scratchPath("gpu.json");
  Origin h200{"cuda", "NVIDIA H200, sm_90", "0.1.0+codegen.x"};
  Entry gpu = entry("g", 4096, 0, h200);
  gpu.config = {};
  gpu.gpu = {8, 32, "lane_lists"};
  ASSERT_EQ(TuningDb::merge(path, {gpu, entry("g", 4096, 16)}), "");
  std::string error;
  auto db = TuningDb::load(path, error);
  ASSERT_TRUE(db) << error;
  const Entry *found = db->lookup("g", h200, 65536);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->gpu, (GpuConfig{8, 32, "lane_lists"}));
  EXPECT_EQ(db->lookup("g", here(), 4096)->config.vectorWidth, 16);
  EXPECT_EQ(db->lookup("g", {"cuda", "NVIDIA H100, sm_90", "0.1.0+codegen.x"},
                       4096),
            nullptr);
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("\"lanes_per_token\": 8"), std::string::npos);
}

// The autotuners' timing rule: the median of the samples; a candidate
// whose first three samples' median is over 1.5x the best so far stops
// there; the default is kept unless the best beats it by the minimum gain.
TEST(TuningDb, MeasureAndWinner) {
  std::vector<double> next = {5, 1, 4, 2, 3};
  size_t taken = 0;
  auto sample = [&] { return next[taken++]; };
  Measurement all = measure(5, 0, sample);
  EXPECT_EQ(taken, 5u);
  EXPECT_DOUBLE_EQ(all.median, 3);
  EXPECT_FALSE(all.pruned);
  taken = 0;
  next = {10, 11, 12, 1, 1};
  Measurement losing = measure(5, 6.0, sample);
  EXPECT_EQ(taken, 3u);
  EXPECT_TRUE(losing.pruned);
  taken = 0;
  Measurement close = measure(5, 8.0, sample); // 11 <= 1.5 x 8
  EXPECT_EQ(taken, 5u);
  EXPECT_FALSE(close.pruned);
  EXPECT_EQ(winner(4, 97.5, 100.0, 0.03), 0u);
  EXPECT_EQ(winner(4, 96.0, 100.0, 0.03), 4u);
  EXPECT_EQ(winner(0, 100.0, 100.0, 0.03), 0u);
}

} // namespace
