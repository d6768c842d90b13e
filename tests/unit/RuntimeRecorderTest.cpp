//===- RuntimeRecorderTest.cpp - Capture buffers for router replay --------===//

#include "runtime/Error.h"
#include "runtime/Recorder.h"
#include "tests/unit/RuntimeTestUtil.h"

#include <gtest/gtest.h>

using namespace moegen;
using namespace moegen::rt;
using rttest::TempDir;

namespace {

/// A capture of distinct ids: token t, layer l, slot j -> (t + 3l + 5j) % E.
Recorder filled(int64_t tokens, int64_t layers, int64_t k, int64_t experts) {
  Recorder recorder(tokens, layers, k, experts);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t l = 0; l < layers; ++l)
      for (int64_t j = 0; j < k; ++j)
        recorder.set(t, l, j, int32_t((t + 3 * l + 5 * j) % experts));
  return recorder;
}

template <typename F> std::string errorOf(F &&f) {
  try {
    f();
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

TEST(RuntimeRecorderTest, LayoutAndDType) {
  Recorder small(4, 3, 8, 256);
  EXPECT_EQ(small.dtype(), npy::DType::I16);
  EXPECT_EQ(small.sizeBytes(), 4u * 3 * 8 * 2);
  Recorder edge(1, 1, 2, 32767);
  EXPECT_EQ(edge.dtype(), npy::DType::I16);
  Recorder large(4, 3, 8, 32768);
  EXPECT_EQ(large.dtype(), npy::DType::I32);
  EXPECT_EQ(large.sizeBytes(), 4u * 3 * 8 * 4);

  // [tokens, layers, k], row-major: element (t, l, j) at (t * L + l) * k + j.
  Recorder r = filled(4, 3, 8, 256);
  auto *raw = static_cast<const int16_t *>(r.data());
  EXPECT_EQ(raw[(2 * 3 + 1) * 8 + 5], (2 + 3 + 25) % 256);
  EXPECT_EQ(r.at(2, 1, 5), (2 + 3 + 25) % 256);
  EXPECT_EQ(r.npyArray().shape, (std::vector<int64_t>{4, 3, 8}));
}

TEST(RuntimeRecorderTest, NpyRoundTrip) {
  TempDir dir;
  for (int64_t experts : {int64_t(256), int64_t(40000)}) {
    Recorder r = filled(5, 4, 6, experts);
    r.set(3, 2, 1, int32_t(experts - 1));
    const std::string path =
        dir / ("capture-" + std::to_string(experts) + ".npy");
    r.save(path);
    Recorder loaded = Recorder::load(path, experts);
    EXPECT_EQ(loaded.numTokens(), 5);
    EXPECT_EQ(loaded.numLayers(), 4);
    EXPECT_EQ(loaded.topK(), 6);
    EXPECT_EQ(loaded.dtype(), r.dtype());
    EXPECT_EQ(loaded.sourceName(), path);
    EXPECT_EQ(loaded.npyArray().data, r.npyArray().data);
    EXPECT_EQ(loaded.at(3, 2, 1), experts - 1);
    // The bytes are exactly np.save's.
    std::string error;
    std::optional<npy::Array> array = npy::readNpy(path, error);
    ASSERT_TRUE(array) << error;
    EXPECT_EQ(npy::serializeNpy(*array), npy::serializeNpy(r.npyArray()));
  }
  // Zero tokens round-trip too.
  Recorder empty(0, 2, 8, 256);
  empty.save(dir / "empty.npy");
  EXPECT_EQ(Recorder::load(dir / "empty.npy", 256).numTokens(), 0);
}

TEST(RuntimeRecorderTest, LayerViewFeedsReplay) {
  Recorder r = filled(3, 4, 8, 256);
  LayerView view = r.layer(2);
  EXPECT_EQ(view.layer(), 2);
  EXPECT_EQ(view.numTokens(), 3);
  EXPECT_EQ(view.topK(), 8);
  std::vector<int32_t> ids = view.forcedIds();
  ASSERT_EQ(ids.size(), 24u);
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t j = 0; j < 8; ++j) {
      EXPECT_EQ(ids[size_t(t * 8 + j)], r.at(t, 2, j));
      EXPECT_EQ(view.at(t, j), (t + 6 + 5 * j) % 256);
    }
  EXPECT_EQ(errorOf([&] { r.layer(4); }),
            "capture: layer 4 outside the capture's layers [0, 4)");
}

TEST(RuntimeRecorderTest, ValidationNamesFileLayerTokenValue) {
  TempDir dir;
  const std::string path = dir / "bad.npy";
  // Out of range (written through the raw buffer, as a device copy would).
  Recorder r = filled(4, 3, 8, 256);
  static_cast<int16_t *>(r.data())[(2 * 3 + 1) * 8 + 0] = 300;
  r.save(path);
  EXPECT_EQ(errorOf([&] { Recorder::load(path, 256); }),
            path + ": layer 1, token 2: expert id 300 at position 0 outside "
                   "[0, 256)");
  EXPECT_EQ(errorOf([&] { r.layer(1).forcedIds(); }),
            "capture: layer 1, token 2: expert id 300 at position 0 outside "
            "[0, 256)");
  // Layer 0 is fine.
  EXPECT_EQ(r.layer(0).forcedIds().size(), 32u);

  // Negative and repeated ids.
  Recorder negative = filled(2, 2, 4, 64);
  static_cast<int16_t *>(negative.data())[(1 * 2 + 0) * 4 + 3] = -1;
  EXPECT_EQ(errorOf([&] { negative.validate(); }),
            "capture: layer 0, token 1: expert id -1 at position 3 outside "
            "[0, 64)");
  Recorder repeated = filled(2, 2, 4, 64);
  repeated.set(0, 1, 2, repeated.at(0, 1, 0));
  repeated.setSource("rollout-7.npy");
  EXPECT_EQ(errorOf([&] { repeated.validate(); }),
            "rollout-7.npy: layer 1, token 0: expert id 3 at position 2 "
            "repeats position 0");

  EXPECT_EQ(errorOf([&] { repeated.set(0, 0, 0, 64); }),
            "rollout-7.npy: layer 0, token 0: expert id 64 outside [0, 64)");
  EXPECT_EQ(errorOf([&] { repeated.set(2, 0, 0, 1); }),
            "rollout-7.npy: index [2, 0, 0] outside the capture's shape");
}

TEST(RuntimeRecorderTest, TopPCapturesHoldUnusedSlots) {
  // A top-p router's capture: -1 in unused slots, accepted (and kept out
  // of the repeat check) only when the recorder is told so.
  TempDir dir;
  const std::string path = dir / "topp.npy";
  Recorder r = filled(2, 2, 4, 64);
  EXPECT_EQ(errorOf([&] { r.set(1, 0, 2, -1); }),
            "capture: layer 0, token 1: expert id -1 outside [0, 64)");
  r.setUnusedSlots(true);
  EXPECT_TRUE(r.unusedSlots());
  r.set(1, 0, 2, -1);
  r.set(1, 0, 3, -1);
  r.validate();
  std::vector<int32_t> ids = r.layer(0).forcedIds();
  EXPECT_EQ(ids[6], -1);
  EXPECT_EQ(ids[7], -1);
  EXPECT_EQ(errorOf([&] { r.set(1, 0, 1, -2); }),
            "capture: layer 0, token 1: expert id -2 outside [0, 64)");
  r.save(path);
  EXPECT_EQ(errorOf([&] { Recorder::load(path, 64); }),
            path + ": layer 0, token 1: expert id -1 at position 2 outside "
                   "[0, 64)");
  Recorder loaded = Recorder::load(path, 64, /*unusedSlots=*/true);
  EXPECT_EQ(loaded.at(1, 0, 3), -1);
  // A valid id after an unused slot is still checked for repeats.
  loaded.set(1, 0, 3, loaded.at(1, 0, 0));
  EXPECT_EQ(errorOf([&] { loaded.validate(); }),
            path + ": layer 0, token 1: expert id " +
                std::to_string(loaded.at(1, 0, 0)) +
                " at position 3 repeats position 0");
}

TEST(RuntimeRecorderTest, LoadChecksDTypeAndShape) {
  TempDir dir;
  std::string error;
  npy::Array wide;
  wide.dtype = npy::DType::I32;
  wide.shape = {2, 1, 2};
  wide.data.assign(16, std::byte{0});
  reinterpret_cast<int32_t *>(wide.data.data())[1] = 1;
  reinterpret_cast<int32_t *>(wide.data.data())[3] = 1;
  ASSERT_TRUE(npy::writeNpy(dir / "wide.npy", wide, error)) << error;
  EXPECT_EQ(errorOf([&] { Recorder::load(dir / "wide.npy", 256); }),
            dir / "wide.npy" +
                ": capture dtype '<i4' must be int16 ('<i2') for 256 experts "
                "(int16 when num_experts <= 32767, else int32)");
  EXPECT_EQ(Recorder::load(dir / "wide.npy", 40000).numLayers(), 1);

  npy::Array flat;
  flat.dtype = npy::DType::I16;
  flat.shape = {4, 2};
  flat.data.assign(16, std::byte{0});
  ASSERT_TRUE(npy::writeNpy(dir / "flat.npy", flat, error)) << error;
  EXPECT_EQ(errorOf([&] { Recorder::load(dir / "flat.npy", 256); }),
            dir / "flat.npy" +
                ": capture must have 3 dimensions [tokens, layers, k], got 2");

  npy::Array wideK;
  wideK.dtype = npy::DType::I16;
  wideK.shape = {1, 1, 9};
  wideK.data.assign(18, std::byte{0});
  ASSERT_TRUE(npy::writeNpy(dir / "k.npy", wideK, error)) << error;
  EXPECT_EQ(errorOf([&] { Recorder::load(dir / "k.npy", 8); }),
            dir / "k.npy" + ": capture shape [1, 1, 9]: need at least one "
                            "layer and 1 <= k <= 8");

  const std::string missing = dir / "missing.npy";
  try {
    Recorder::load(missing, 256);
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::Io);
    EXPECT_EQ(std::string(e.what()).rfind(missing + ": ", 0), 0u) << e.what();
  }
}

TEST(RuntimeRecorderTest, InvalidSizes) {
  EXPECT_EQ(errorOf([] { Recorder(4, 0, 8, 256); }),
            "capture buffer: invalid sizes: tokens = 4, layers = 0, k = 8, "
            "experts = 256 (need tokens >= 0, layers >= 1, 1 <= k <= experts)");
  EXPECT_NE(errorOf([] { Recorder(4, 2, 9, 8); }), "");
  EXPECT_NE(errorOf([] { Recorder(-1, 2, 2, 8); }), "");
}

} // namespace
