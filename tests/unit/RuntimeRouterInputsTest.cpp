//===- RuntimeRouterInputsTest.cpp - RouterInputs, HostRouter, support ----===//
//
// The .npy input checks shared by moegen run, moegen-gpu-check and the
// sample, against a recording HostRouter (no backend needed), and the
// support file's quoting and atomic publish. Messages are the ones the lit
// tests of moegen run check (tests/lit/CLI/run-errors.test).
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestUtil.h"

#include "runtime/HostRouter.h"
#include "runtime/RouterInputs.h"
#include "support/AtomicFile.h"
#include "support/Quote.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>

namespace {

namespace rt = moegen::rt;
namespace npy = moegen::npy;
namespace support = moegen::support;
using rttest::TempDir;

rt::RouterFacts topkFacts() {
  rt::RouterFacts facts;
  facts.name = "test";
  facts.numExperts = 4;
  facts.topK = 2;
  facts.scoreBias = true;
  facts.capture = true;
  facts.replay = true;
  facts.dispatch = true;
  return facts;
}

template <typename T>
npy::Array makeArray(npy::DType dtype, std::vector<int64_t> shape,
                     std::vector<T> values) {
  npy::Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(values.size() * sizeof(T));
  if (!values.empty())
    std::memcpy(array.data.data(), values.data(), array.data.size());
  return array;
}

/// The message of the InputError `body` throws, as a tool prints it.
std::string inputError(const std::function<void()> &body) {
  try {
    body();
  } catch (const rt::InputError &e) {
    return e.format("moegen");
  }
  return "(no error)";
}

/// A HostRouter that records its call and answers with fixed outputs.
class RecordingRouter final : public rt::HostRouter {
public:
  explicit RecordingRouter(rt::RouterFacts facts) : routerFacts(facts) {}
  const rt::RouterFacts &facts() const override { return routerFacts; }
  std::string_view backendName() const override { return "recording"; }
  std::string run(const rt::HostRouteCall &call) override {
    calls.push_back(call);
    if (!call.forcedIds && !answer.empty())
      return answer;
    int64_t slots = call.numTokens * routerFacts.topK;
    for (int64_t i = 0; i < slots; ++i) {
      call.topkIds[i] = static_cast<int32_t>(i % routerFacts.numExperts);
      call.topkWeights[i] = 0.5f;
    }
    if (call.forcedIds) {
      std::string forced;
      for (int64_t i = 0; i < slots && forced.empty(); ++i)
        if (call.forcedIds[i] < 0)
          forced = "forced_ids[" + std::to_string(i / routerFacts.topK) + "][" +
                   std::to_string(i % routerFacts.topK) +
                   "] = " + std::to_string(call.forcedIds[i]) +
                   ": must be in [0, num_experts = 4)";
      return forced;
    }
    return "";
  }
  // RouterInputs feeds routing calls only.
  std::string permute(const rt::HostPermuteCall &) override {
    ADD_FAILURE() << "permute called";
    return "unexpected";
  }
  std::string combine(const rt::HostCombineCall &) override {
    ADD_FAILURE() << "combine called";
    return "unexpected";
  }
  std::string updateBias(const rt::HostUpdateBiasCall &) override {
    ADD_FAILURE() << "updateBias called";
    return "unexpected";
  }

  rt::RouterFacts routerFacts;
  std::vector<rt::HostRouteCall> calls;
  std::string answer;
};

rt::RouterInputMap
inputsOf(std::vector<std::pair<std::string, npy::Array>> arrays) {
  rt::RouterInputMap inputs;
  for (auto &[name, array] : arrays)
    inputs.emplace(name,
                   rt::RouterInput{"in/" + name + ".npy", std::move(array)});
  return inputs;
}

TEST(RouterInputs, ParsesNameEqualsFile) {
  rt::InputPaths paths =
      rt::parseInputArguments({"logits=a.npy", "bias=dir/b=c.npy"});
  EXPECT_EQ(paths.at("logits"), "a.npy");
  EXPECT_EQ(paths.at("bias"), "dir/b=c.npy");
}

TEST(RouterInputs, RejectsBadArguments) {
  EXPECT_EQ(inputError([] { rt::parseInputArguments({"logits"}); }),
            "moegen: error: --in logits: expected NAME=FILE.npy");
  EXPECT_EQ(inputError([] { rt::parseInputArguments({"logits="}); }),
            "moegen: error: --in logits=: expected NAME=FILE.npy");
  EXPECT_EQ(inputError([] { rt::parseInputArguments({"weights=w.npy"}); }),
            "moegen: error: --in weights=w.npy: unknown input 'weights' "
            "(inputs: logits, bias, token_ids, hash_table, forced_ids, "
            "capture, shared_gate_logits, hidden, expert_output, "
            "expert_counts)");
  EXPECT_EQ(inputError([] {
              rt::parseInputArguments({"logits=a.npy", "logits=b.npy"});
            }),
            "moegen: error: --in logits=b.npy: input 'logits' given twice "
            "(first as --in logits=a.npy)");
}

TEST(RouterInputs, RefusesUnusedAndMissingInputs) {
  rt::RouterFacts facts = topkFacts();
  facts.scoreBias = false;
  EXPECT_EQ(inputError([&] {
              rt::checkInputsUsed(facts,
                                  {{"logits", "l.npy"}, {"bias", "b.npy"}},
                                  std::nullopt);
            }),
            "moegen: error: --in bias=b.npy: input 'bias' is not used by "
            "this run: the spec has score_bias: false");
  facts = topkFacts();
  EXPECT_EQ(inputError([&] {
              rt::checkInputsUsed(facts, {{"logits", "l.npy"}}, std::nullopt);
            }),
            "moegen: error: missing input 'bias' ([E] f32, required by "
            "score_bias: true); give --in bias=FILE.npy");
  EXPECT_EQ(inputError([&] {
              rt::checkInputsUsed(
                  facts, {{"logits", "l.npy"}, {"forced_ids", "f.npy"}},
                  int64_t{1});
            }),
            "moegen: error: --layer 1: not used by this run: replay "
            "(forced_ids given) does not capture");
  EXPECT_EQ(inputError([&] {
              rt::checkInputsUsed(
                  facts, {{"logits", "l.npy"}, {"bias", "b.npy"}}, int64_t{2});
            }),
            "moegen: error: --layer 2: without --in capture=FILE.npy the "
            "capture buffer is [T, 1, k], so the layer must be 0");
  // Replay takes the logits and forced ids alone.
  EXPECT_EQ(inputError([&] {
              rt::checkInputsUsed(
                  facts, {{"logits", "l.npy"}, {"forced_ids", "f.npy"}},
                  std::nullopt);
            }),
            "(no error)");
  EXPECT_EQ(rt::whyUnused("token_ids", facts, false),
            "the spec has selection: topk");
}

TEST(RouterInputs, ChecksShapesAndDTypesNamingTheFile) {
  rt::RouterFacts facts = topkFacts();
  auto check = [&](rt::RouterInputMap inputs) {
    return inputError([&] { rt::checkInputs(facts, inputs, 0); });
  };
  EXPECT_EQ(
      check(inputsOf({{"logits", makeArray<double>(npy::DType::F64, {1, 4},
                                                   {0, 0, 0, 0})}})),
      "in/logits.npy: error: logits: dtype '<f8' must be '<f4' "
      "(logits_dtype: f32)");
  EXPECT_EQ(check(inputsOf({{"logits", makeArray<float>(npy::DType::F32, {1, 5},
                                                        {0, 0, 0, 0, 0})}})),
            "in/logits.npy: error: logits: shape (1, 5) must be [T, E] = "
            "[T, 4]: dimension 1 is 5, not E = 4 (num_experts)");
  std::vector<float> logits(8, 0.0f);
  EXPECT_EQ(check(inputsOf(
                {{"logits", makeArray(npy::DType::F32, {2, 4}, logits)},
                 {"bias", makeArray<float>(npy::DType::F32, {3}, {0, 0, 0})}})),
            "in/bias.npy: error: bias: shape (3,) must be [E] = [4]: "
            "dimension 0 is 3, not E = 4 (num_experts)");
  EXPECT_EQ(
      check(inputsOf({{"logits", makeArray(npy::DType::F32, {2, 4}, logits)},
                      {"forced_ids", makeArray<float>(npy::DType::F32, {2, 2},
                                                      {0, 0, 0, 0})}})),
      "in/forced_ids.npy: error: forced_ids: dtype '<f4' must be "
      "'<i4' or '<i8'");
  EXPECT_EQ(
      check(inputsOf({{"logits", makeArray(npy::DType::F32, {2, 4}, logits)},
                      {"capture", makeArray<int32_t>(npy::DType::I32, {2, 1, 2},
                                                     {0, 0, 0, 0})}})),
      "in/capture.npy: error: capture: dtype '<i4' must be '<i2' "
      "(expert ids of num_experts = 4 experts)");
  rt::RouterInputMap good =
      inputsOf({{"logits", makeArray(npy::DType::F32, {2, 4}, logits)},
                {"capture", makeArray<int16_t>(npy::DType::I16, {2, 3, 2},
                                               std::vector<int16_t>(12))}});
  EXPECT_EQ(rt::checkInputs(facts, good, 2), 2);
  EXPECT_EQ(inputError([&] { rt::checkInputs(facts, good, 3); }),
            "in/capture.npy: error: capture: --layer 3 is outside the "
            "buffer's layers [0, 3)");
}

TEST(RouterInputs, ReadsFilesNamingTheTensor) {
  TempDir dir;
  std::string error;
  ASSERT_TRUE(npy::writeNpy(
      dir / "logits.npy",
      makeArray<float>(npy::DType::F32, {1, 4}, {1, 2, 3, 4}), error))
      << error;
  rt::RouterInputMap inputs = rt::readInputs({{"logits", dir / "logits.npy"}});
  EXPECT_EQ(inputs.at("logits").array.shape, (std::vector<int64_t>{1, 4}));
  std::string message = inputError([&] {
    rt::readInputs({{"bias", dir / "missing.npy"}});
  });
  EXPECT_EQ(message.rfind(dir / "missing.npy: error: bias: cannot open for "
                                "reading: ",
                          0),
            0u)
      << message;
}

TEST(RouterInputs, RunsAndNamesTheOutputs) {
  RecordingRouter router(topkFacts());
  std::vector<float> logits(12, 0.0f);
  rt::RouterInputMap inputs = inputsOf(
      {{"logits", makeArray(npy::DType::F32, {3, 4}, logits)},
       {"bias", makeArray<float>(npy::DType::F32, {4}, {0, 0, 0, 0})}});
  rt::HostRunResult result = rt::runOnHost(router, inputs, 0);
  ASSERT_EQ(result.error, "");
  std::vector<std::string> names;
  for (const auto &[name, array] : result.outputs)
    names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"topk_ids", "topk_weights",
                                             "expert_counts", "expert_offsets",
                                             "sorted_slots", "slot_positions",
                                             "capture"}));
  // Without a capture input the buffer is a fresh [T, 1, k] one.
  EXPECT_EQ(result.find("capture")->shape, (std::vector<int64_t>{3, 1, 2}));
  EXPECT_EQ(result.find("expert_offsets")->shape, (std::vector<int64_t>{5}));
  ASSERT_EQ(router.calls.size(), 1u);
  EXPECT_EQ(rt::entryOf(router.calls[0]), rt::HostEntry::Route);
  EXPECT_NE(router.calls[0].bias, nullptr);
  EXPECT_NE(router.calls[0].expertCounts, nullptr);
}

TEST(RouterInputs, GivesWideIdsTheirValueBack) {
  RecordingRouter router(topkFacts());
  std::vector<float> logits(8, 0.0f);
  rt::RouterInputMap inputs =
      inputsOf({{"logits", makeArray(npy::DType::F32, {2, 4}, logits)},
                {"forced_ids", makeArray<int64_t>(npy::DType::I64, {2, 2},
                                                  {0, 1, 5000000000, 2})}});
  rt::HostRunResult result = rt::runOnHost(router, inputs, 0);
  EXPECT_EQ(rt::entryOf(router.calls.at(0)), rt::HostEntry::Replay);
  EXPECT_EQ(result.error, "forced_ids[1][0] = 5000000000: must be in [0, "
                          "num_experts = 4)");
  EXPECT_EQ(rt::locateError(result.error, inputs).format("moegen"),
            "in/forced_ids.npy: error: forced_ids[1][0] = 5000000000: must "
            "be in [0, num_experts = 4)");
  EXPECT_TRUE(result.outputs.empty());
}

TEST(RouterInputs, LocatesErrorsOfOtherTensorsOnTheCommandLine) {
  rt::RouterInputMap inputs;
  EXPECT_EQ(rt::locateError("capture_layer = 3: out of range", inputs)
                .format("moegen"),
            "moegen: error: capture_layer = 3: out of range");
}

TEST(HostRouter, NamedEntryPointsCheckTheCall) {
  RecordingRouter router(topkFacts());
  std::vector<int32_t> ids(2), forced{0, 1};
  std::vector<float> weights(2), logits(4);
  rt::HostRouteCall call;
  call.numTokens = 1;
  call.logits = logits.data();
  call.topkIds = ids.data();
  call.topkWeights = weights.data();
  EXPECT_EQ(router.route(call), "");
  call.forcedIds = forced.data();
  EXPECT_EQ(router.replay(call), "");
  try {
    router.route(call);
    FAIL() << "route ran a replay call";
  } catch (const rt::Error &e) {
    EXPECT_EQ(e.kind(), rt::Error::Kind::InvalidArgument);
    EXPECT_STREQ(e.what(), "route: the call's inputs are those of replay");
  }
}

TEST(SupportQuote, EscapesAndCuts) {
  EXPECT_EQ(support::escape("a'b\\c\nd\x01"), "a\\'b\\\\c\\nd\\x01");
  EXPECT_EQ(support::escape(std::string(50, 'x')),
            std::string(40, 'x') + "...");
  EXPECT_EQ(support::quote("tab\there"), "'tab\\there'");
  support::QuoteStyle binary{std::string::npos, false, true};
  EXPECT_EQ(support::quote("\xc3\xa9\n", binary), "'\\xc3\\xa9\\x0a'");
  EXPECT_EQ(support::quote("\xc3\xa9"), "'\xc3\xa9'");
  std::string longPath(300, 'p');
  EXPECT_EQ(support::quotePath(longPath), longPath);
}

TEST(SupportQuote, EscapesWhatIsNotValidOrSafeText) {
  using support::escape;
  // Valid printable UTF-8 passes through, up to four bytes long.
  EXPECT_EQ(escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  // Not UTF-8: a stray continuation byte, a bad lead byte, a truncated
  // sequence, an overlong '/', a surrogate, past U+10FFFF; each byte alone.
  EXPECT_EQ(escape("a\x80z"), "a\\x80z");
  EXPECT_EQ(escape("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(escape("end\xe2\x80"), "end\\xe2\\x80");
  EXPECT_EQ(escape("\xc0\xaf"), "\\xc0\\xaf");
  EXPECT_EQ(escape("\xed\xa0\x80"), "\\xed\\xa0\\x80");
  EXPECT_EQ(escape("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");
  // UTF-16 text: its zero bytes and BOM are escaped, the line stays one.
  EXPECT_EQ(escape(std::string_view("\xff\xfe" "a\0\n\0", 6)),
            "\\xff\\xfea\\x00\\n\\x00");
  // C1 controls (NEL ends a line on some terminals).
  EXPECT_EQ(escape("a\xc2\x85" "b\xc2\x9b"), "a\\u{0085}b\\u{009b}");
  // Bidirectional controls and the line and paragraph separators.
  EXPECT_EQ(escape("\xe2\x80\xaa\xe2\x80\xab\xe2\x80\xac\xe2\x80\xad"
                   "\xe2\x80\xae"),
            "\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}");
  EXPECT_EQ(escape("\xe2\x81\xa6\xe2\x81\xa7\xe2\x81\xa8\xe2\x81\xa9"),
            "\\u{2066}\\u{2067}\\u{2068}\\u{2069}");
  EXPECT_EQ(escape("\xe2\x80\x8e\xe2\x80\x8f\xd8\x9c"),
            "\\u{200e}\\u{200f}\\u{061c}");
  EXPECT_EQ(escape("a\xe2\x80\xa8" "b\xe2\x80\xa9"), "a\\u{2028}b\\u{2029}");
  // Neighbours of the escaped ranges pass through.
  EXPECT_EQ(escape("\xc2\xa0\xe2\x80\x8d\xe2\x80\xaf\xe2\x81\xa5"),
            "\xc2\xa0\xe2\x80\x8d\xe2\x80\xaf\xe2\x81\xa5");
  // The cut never splits a character.
  EXPECT_EQ(escape(std::string(39, 'x') + "\xc3\xa9zz"),
            std::string(39, 'x') + "\xc3\xa9...");
  // Paths get the same treatment.
  EXPECT_EQ(support::quotePath("/tmp/a\xe2\x80\xaetxt.yaml"),
            "/tmp/a\\u{202e}txt.yaml");
  // escapeNonAscii (binary headers) still escapes every byte.
  support::QuoteStyle binary{std::string::npos, false, true};
  EXPECT_EQ(escape("\xe2\x80\xae", binary), "\\xe2\\x80\\xae");
}

TEST(SupportAtomicFile, PublishesWholeOrNothing) {
  TempDir dir;
  std::string error;
  ASSERT_TRUE(support::writeFileAtomically(dir / "out.txt", "first", error))
      << error;
  ASSERT_TRUE(support::writeFileAtomically(dir / "out.txt", "second", error))
      << error;
  EXPECT_EQ(rttest::readText(dir / "out.txt"), "second");
  // A directory in the way: the target stays, no temporary is left.
  std::filesystem::create_directory(dir / "taken");
  EXPECT_FALSE(support::writeFileAtomically(dir / "taken", "x", error));
  EXPECT_EQ(error.rfind(dir / "taken: cannot rename temporary file into "
                              "place: ",
                        0),
            0u)
      << error;
  EXPECT_FALSE(
      support::writeFileAtomically(dir / "missing/out.txt", "x", error));
  EXPECT_EQ(error.rfind(dir / "missing/out.txt: cannot create temporary "
                              "file '",
                        0),
            0u)
      << error;
  size_t files = 0;
  for (const auto &entry : std::filesystem::directory_iterator(dir.path()))
    files += entry.is_regular_file();
  EXPECT_EQ(files, 1u);
}

TEST(SupportStagingDirectory, PublishesInOrderAndLeavesNothingBehind) {
  TempDir dir;
  std::string error, failed;
  {
    support::StagingDirectory staging(dir.path(), "test", error);
    ASSERT_FALSE(staging.path().empty()) << error;
    EXPECT_EQ(std::filesystem::path(staging.path()).filename().string().rfind(
                  ".test.tmp-", 0),
              0u);
    std::vector<std::string> names = {"a.txt", "manifest.json"};
    for (const std::string &name : names)
      ASSERT_TRUE(support::writeFileAtomically(staging.pathFor(name), name,
                                               error))
          << error;
    ASSERT_TRUE(staging.publish(names, failed, error)) << error;
  }
  EXPECT_EQ(rttest::readText(dir / "a.txt"), "a.txt");
  EXPECT_EQ(rttest::readText(dir / "manifest.json"), "manifest.json");

  // A directory in the way of the second file: the first is published, the
  // second is named, and the staging directory still goes away.
  std::filesystem::create_directories(dir / "taken/inside");
  {
    support::StagingDirectory staging(dir.path(), "test", error);
    ASSERT_FALSE(staging.path().empty()) << error;
    std::vector<std::string> names = {"b.txt", "taken"};
    for (const std::string &name : names)
      ASSERT_TRUE(support::writeFileAtomically(staging.pathFor(name), "x",
                                               error))
          << error;
    EXPECT_FALSE(staging.publish(names, failed, error));
    EXPECT_EQ(failed, "taken");
  }
  for (const auto &entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_NE(entry.path().filename().string().rfind(".test", 0), 0u)
        << entry.path();

  // No directory to stage in: an error, no exception.
  support::StagingDirectory missing(dir / "missing", "test", error);
  EXPECT_TRUE(missing.path().empty());
  EXPECT_FALSE(error.empty());
}

} // namespace
