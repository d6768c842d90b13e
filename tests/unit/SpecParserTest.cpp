//===- SpecParserTest.cpp - Routing specs from YAML -----------------------===//
//
// The YAML front end of the spec language: every key lands in its field,
// defaults apply when a key is absent, every bad value is one diagnostic line
// "FILE:LINE:COL: error: MESSAGE" at the offending value, the templates
// parse to their models, printRoutingSpec round-trips, and
// validateRoutingSpec states the value rules for specs built in code.
//
// Tests named DISABLED_* pin down parser bugs that are known and reported;
// they fail against the current parser.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/Program.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/spec/RoutingSpec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

using namespace moegen;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

const std::string kBuf = "spec.yaml";
const std::string kTemplatesDir = MOEGEN_SOURCE_DIR "/templates";

/// The smallest valid spec: the four required keys, lines 1-4.
const std::string kBase = "name: r\n"
                          "num_experts: 8\n"
                          "top_k: 2\n"
                          "scoring: softmax\n";

/// A spec that gives every key a non-default value where it can.
const std::string kFullBlockSpec = "# every key\n"
                                   "name: deepseek_v3\n"
                                   "num_experts: 256\n"
                                   "top_k: 8\n"
                                   "scoring: sigmoid\n"
                                   "selection: topk\n"
                                   "score_bias: true\n"
                                   "groups: 8\n"
                                   "topk_groups: 4\n"
                                   "group_score: top2_sum\n"
                                   "normalize: true\n"
                                   "scaling_factor: 2.5\n"
                                   "replay: true\n"
                                   "dispatch: true\n"
                                   "capture: true\n"
                                   "logits_dtype: f32\n";
const std::string kFlowSpec =
    "{name: 'hash_layer', num_experts: \"256\", top_k: 6,\n"
    " scoring: sqrtsoftplus, selection: hash, normalize: True,\n"
    " scaling_factor: 1.5, dispatch: FALSE}  # flow\n";

/// Value of an entry that removes a required key from specText().
const std::string kOmit = "<omit>";

using Entries = std::vector<std::pair<std::string, std::string>>;

/// The four required keys on lines 1-4 (name r, num_experts 8, top_k 2,
/// scoring softmax), each replaced by an entry of the same key (kOmit drops
/// it), then the other entries in order, one per line.
std::string specText(const Entries &entries) {
  std::vector<std::pair<std::string, std::string>> required = {
      {"name", "r"},
      {"num_experts", "8"},
      {"top_k", "2"},
      {"scoring", "softmax"}};
  std::string out;
  for (auto &[key, value] : required) {
    std::string v = value;
    for (auto &[k, given] : entries)
      if (k == key)
        v = given;
    if (v != kOmit)
      out += key + ": " + v + "\n";
  }
  for (const auto &entry : entries) {
    bool isRequired =
        std::any_of(required.begin(), required.end(),
                    [&](const auto &r) { return r.first == entry.first; });
    if (!isRequired && entry.second != kOmit)
      out += entry.first + ": " + entry.second + "\n";
  }
  return out;
}

/// 1-based line on which `key:` starts in `text`, or 0.
int lineOfKey(const std::string &text, const std::string &key) {
  int line = 1;
  size_t start = 0;
  while (start <= text.size()) {
    if (text.compare(start, key.size() + 1, key + ":") == 0)
      return line;
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos)
      return 0;
    start = nl + 1;
    ++line;
  }
  return 0;
}

/// "spec.yaml:LINE:COL: error: "
std::string at(int line, int column, const std::string &buf = kBuf) {
  return buf + ":" + std::to_string(line) + ":" + std::to_string(column) +
         ": error: ";
}

/// The input, with control characters escaped, for failure messages.
std::string escaped(const std::string &text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c >= 0x7f) {
      char hex[8];
      snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else
      out += static_cast<char>(c);
  }
  return out;
}

/// The contract of every diagnostic: non-empty, a single line, and
/// "BUF:...: error: ..." naming the buffer first.
::testing::AssertionResult isOneLineDiagnostic(const std::string &error,
                                               const std::string &buf = kBuf) {
  if (error.empty())
    return ::testing::AssertionFailure() << "the error is empty";
  if (error.find('\n') != std::string::npos ||
      error.find('\r') != std::string::npos)
    return ::testing::AssertionFailure()
           << "the error spans lines: '" << escaped(error) << "'";
  if (error.rfind(buf + ":", 0) != 0)
    return ::testing::AssertionFailure() << "the error does not start with '"
                                         << buf << ":': '" << error << "'";
  if (error.find(": error: ") == std::string::npos)
    return ::testing::AssertionFailure()
           << "the error has no ': error: ': '" << error << "'";
  return ::testing::AssertionSuccess();
}

/// Parses `text`, expecting failure; returns the error.
std::string parseError(const std::string &text, const std::string &buf = kBuf) {
  std::string error = "stale";
  std::optional<RoutingSpec> spec = parseRoutingSpec(text, buf, error);
  EXPECT_FALSE(spec.has_value()) << "expected an error for:\n"
                                 << text << "\nprinted:\n"
                                 << (spec ? printRoutingSpec(*spec) : "");
  EXPECT_TRUE(isOneLineDiagnostic(error, buf)) << "input: " << escaped(text);
  return error;
}

/// Parses `text`, expecting success.
RoutingSpec parseOk(const std::string &text) {
  std::string error = "stale";
  std::optional<RoutingSpec> spec = parseRoutingSpec(text, kBuf, error);
  EXPECT_TRUE(spec.has_value()) << "input:\n" << text << "\nerror: " << error;
  EXPECT_EQ(error, "") << "a successful parse leaves no error";
  return spec.value_or(RoutingSpec());
}

bool startsWith(const std::string &s, const std::string &prefix) {
  return s.rfind(prefix, 0) == 0;
}

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

/// Field-wise equality, naming the first differing field.
::testing::AssertionResult sameSpec(const RoutingSpec &a,
                                    const RoutingSpec &b) {
#define MOEGEN_CMP(field)                                                      \
  if (!(a.field == b.field))                                                   \
    return ::testing::AssertionFailure() << "field " #field " differs";
  MOEGEN_CMP(name)
  MOEGEN_CMP(numExperts)
  MOEGEN_CMP(topK)
  MOEGEN_CMP(scoring)
  MOEGEN_CMP(selection)
  MOEGEN_CMP(scoreBias)
  MOEGEN_CMP(groups)
  MOEGEN_CMP(topkGroups)
  MOEGEN_CMP(groupScore)
  MOEGEN_CMP(normalize)
  MOEGEN_CMP(scalingFactor)
  MOEGEN_CMP(replay)
  MOEGEN_CMP(dispatch)
  MOEGEN_CMP(capture)
  MOEGEN_CMP(logitsDType)
#undef MOEGEN_CMP
  return ::testing::AssertionSuccess();
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string templatePath(const std::string &stem) {
  return kTemplatesDir + "/" + stem + ".yaml";
}

RoutingSpec parseTemplate(const std::string &stem) {
  std::string error;
  std::optional<RoutingSpec> spec =
      parseRoutingSpecFile(templatePath(stem), error);
  EXPECT_TRUE(spec.has_value()) << error;
  EXPECT_EQ(error, "");
  return spec.value_or(RoutingSpec());
}

std::vector<std::string> templateFiles() {
  std::vector<std::string> files;
  for (const auto &entry : std::filesystem::directory_iterator(kTemplatesDir))
    if (entry.is_regular_file() && entry.path().extension() == ".yaml")
      files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

const std::vector<std::string> kTemplateStems = {
    "deepseek-v3", "deepseek-v4-flash", "deepseek-v4-flash-hash",
    "kimi-k2",     "qwen3-30b-a3b",     "mixtral-8x7b",
    "gpt-oss-120b"};

/// A valid spec built in code: name r, 8 experts, top-2, all else default.
RoutingSpec smallSpec() {
  return RoutingSpec{.name = "r", .numExperts = 8, .topK = 2};
}

/// A valid grouped spec built in code (DeepSeek-V3's shape).
RoutingSpec groupedSpec() {
  RoutingSpec s{.name = "g", .numExperts = 256, .topK = 8};
  s.scoring = Scoring::Sigmoid;
  s.scoreBias = true;
  s.groups = 8;
  s.topkGroups = 4;
  s.normalize = true;
  s.scalingFactor = 2.5;
  return s;
}

//===----------------------------------------------------------------------===//
// SpecParserKeys: every key into its field, defaults, spellings
//===----------------------------------------------------------------------===//

TEST(SpecParserKeys, MinimalSpecRequiredKeys) {
  RoutingSpec s = parseOk(kBase);
  EXPECT_EQ(s.name, "r");
  EXPECT_EQ(s.numExperts, 8);
  EXPECT_EQ(s.topK, 2);
  EXPECT_EQ(s.scoring, Scoring::Softmax);
}

TEST(SpecParserKeys, DefaultSelectionIsTopK) {
  EXPECT_EQ(parseOk(kBase).selection, Selection::TopK);
}
TEST(SpecParserKeys, DefaultScoreBiasIsFalse) {
  EXPECT_FALSE(parseOk(kBase).scoreBias);
}
TEST(SpecParserKeys, DefaultGroupsIsOne) {
  EXPECT_EQ(parseOk(kBase).groups, 1);
}
TEST(SpecParserKeys, DefaultTopkGroupsIsOne) {
  EXPECT_EQ(parseOk(kBase).topkGroups, 1);
}
TEST(SpecParserKeys, DefaultGroupScoreIsTop2Sum) {
  EXPECT_EQ(parseOk(kBase).groupScore, GroupScore::Top2Sum);
}
TEST(SpecParserKeys, DefaultNormalizeIsFalse) {
  EXPECT_FALSE(parseOk(kBase).normalize);
}
TEST(SpecParserKeys, DefaultScalingFactorIsOne) {
  EXPECT_EQ(parseOk(kBase).scalingFactor, 1.0);
}
TEST(SpecParserKeys, DefaultReplayIsFalse) {
  EXPECT_FALSE(parseOk(kBase).replay);
}
TEST(SpecParserKeys, DefaultDispatchIsFalse) {
  EXPECT_FALSE(parseOk(kBase).dispatch);
}
TEST(SpecParserKeys, DefaultCaptureIsFalse) {
  EXPECT_FALSE(parseOk(kBase).capture);
}
TEST(SpecParserKeys, DefaultLogitsDTypeIsF32) {
  EXPECT_EQ(parseOk(kBase).logitsDType, LogitsDType::F32);
}

TEST(SpecParserKeys, DefaultsEqualDefaultConstructedSpec) {
  RoutingSpec expected;
  expected.name = "r";
  expected.numExperts = 8;
  expected.topK = 2;
  EXPECT_TRUE(sameSpec(parseOk(kBase), expected));
}

TEST(SpecParserKeys, EveryKeyIntoItsField) {
  RoutingSpec s = parseOk("name: Every_key_9\n"
                          "num_experts: 64\n"
                          "top_k: 4\n"
                          "scoring: sigmoid\n"
                          "selection: topk\n"
                          "score_bias: true\n"
                          "groups: 8\n"
                          "topk_groups: 2\n"
                          "group_score: max\n"
                          "normalize: true\n"
                          "scaling_factor: 2.25\n"
                          "replay: true\n"
                          "dispatch: true\n"
                          "capture: true\n"
                          "logits_dtype: bf16\n");
  EXPECT_EQ(s.name, "Every_key_9");
  EXPECT_EQ(s.numExperts, 64);
  EXPECT_EQ(s.topK, 4);
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
  EXPECT_EQ(s.selection, Selection::TopK);
  EXPECT_TRUE(s.scoreBias);
  EXPECT_EQ(s.groups, 8);
  EXPECT_EQ(s.topkGroups, 2);
  EXPECT_EQ(s.groupScore, GroupScore::Max);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 2.25);
  EXPECT_TRUE(s.replay);
  EXPECT_TRUE(s.dispatch);
  EXPECT_TRUE(s.capture);
  EXPECT_EQ(s.logitsDType, LogitsDType::BF16);
}

TEST(SpecParserKeys, NameIntoName) {
  EXPECT_EQ(parseOk(specText({{"name", "_My_Router2"}})).name, "_My_Router2");
}
TEST(SpecParserKeys, NumExpertsIntoNumExperts) {
  EXPECT_EQ(parseOk(specText({{"num_experts", "384"}})).numExperts, 384);
}
TEST(SpecParserKeys, TopKIntoTopK) {
  EXPECT_EQ(parseOk(specText({{"top_k", "7"}})).topK, 7);
}
TEST(SpecParserKeys, ScoreBiasTrue) {
  EXPECT_TRUE(parseOk(specText({{"score_bias", "true"}})).scoreBias);
}
TEST(SpecParserKeys, ScoreBiasExplicitFalse) {
  EXPECT_FALSE(parseOk(specText({{"score_bias", "false"}})).scoreBias);
}
TEST(SpecParserKeys, GroupsAndTopkGroups) {
  RoutingSpec s = parseOk(
      specText({{"num_experts", "32"}, {"groups", "4"}, {"topk_groups", "3"}}));
  EXPECT_EQ(s.groups, 4);
  EXPECT_EQ(s.topkGroups, 3);
  EXPECT_TRUE(s.isGrouped());
  EXPECT_EQ(s.expertsPerGroup(), 8);
}
TEST(SpecParserKeys, ExplicitGroupsOneNeedsNoTopkGroups) {
  RoutingSpec s = parseOk(specText({{"groups", "1"}}));
  EXPECT_EQ(s.groups, 1);
  EXPECT_EQ(s.topkGroups, 1);
}
TEST(SpecParserKeys, NormalizeTrue) {
  EXPECT_TRUE(parseOk(specText({{"normalize", "true"}})).normalize);
}
TEST(SpecParserKeys, ScalingFactorDecimal) {
  EXPECT_EQ(parseOk(specText({{"scaling_factor", "2.827"}})).scalingFactor,
            2.827);
}
TEST(SpecParserKeys, ScalingFactorInteger) {
  EXPECT_EQ(parseOk(specText({{"scaling_factor", "3"}})).scalingFactor, 3.0);
}
TEST(SpecParserKeys, ScalingFactorExponent) {
  EXPECT_EQ(parseOk(specText({{"scaling_factor", "2.5e-1"}})).scalingFactor,
            0.25);
}
TEST(SpecParserKeys, ScalingFactorLeadingDot) {
  EXPECT_EQ(parseOk(specText({{"scaling_factor", ".5"}})).scalingFactor, 0.5);
}
TEST(SpecParserKeys, ScalingFactorNormalF32Bounds) {
  // The bounds the rule prints are accepted: the weights are scaled in f32.
  EXPECT_EQ(
      parseOk(specText({{"scaling_factor", "1.1754944e-38"}})).scalingFactor,
      1.1754944e-38);
  EXPECT_EQ(
      parseOk(specText({{"scaling_factor", "3.4028234e38"}})).scalingFactor,
      3.4028234e38);
}
TEST(SpecParserKeys, ScalingFactorYamlCoreFloatSpellings) {
  for (auto [text, value] : {std::pair{"5.", 5.0}, std::pair{"+2.5", 2.5},
                             std::pair{"1.e1", 10.0}, std::pair{"25E-1", 2.5},
                             std::pair{"0.5e+1", 5.0}, std::pair{"007", 7.0}})
    EXPECT_EQ(parseOk(specText({{"scaling_factor", text}})).scalingFactor,
              value)
        << text;
}
TEST(SpecParserKeys, ScalingFactorLongestLiteral) {
  // 64 characters is the cap, inclusive.
  std::string literal = "1." + std::string(62, '0');
  EXPECT_EQ(parseOk(specText({{"scaling_factor", literal}})).scalingFactor,
            1.0);
}
TEST(SpecParserKeys, ReplayTrue) {
  EXPECT_TRUE(parseOk(specText({{"replay", "true"}})).replay);
}
TEST(SpecParserKeys, DispatchTrue) {
  EXPECT_TRUE(parseOk(specText({{"dispatch", "true"}})).dispatch);
}
TEST(SpecParserKeys, CaptureTrue) {
  EXPECT_TRUE(parseOk(specText({{"capture", "true"}})).capture);
}
TEST(SpecParserKeys, EntryPointFlagsAreIndependent) {
  RoutingSpec s = parseOk(specText(
      {{"replay", "false"}, {"dispatch", "true"}, {"capture", "false"}}));
  EXPECT_FALSE(s.replay);
  EXPECT_TRUE(s.dispatch);
  EXPECT_FALSE(s.capture);
}

// Every enumerator of every enum key, by its YAML spelling.
TEST(SpecParserKeys, ScoringSoftmax) {
  EXPECT_EQ(parseOk(specText({{"scoring", "softmax"}})).scoring,
            Scoring::Softmax);
}
TEST(SpecParserKeys, ScoringSigmoid) {
  EXPECT_EQ(parseOk(specText({{"scoring", "sigmoid"}})).scoring,
            Scoring::Sigmoid);
}
TEST(SpecParserKeys, ScoringSqrtSoftplus) {
  EXPECT_EQ(parseOk(specText({{"scoring", "sqrtsoftplus"}})).scoring,
            Scoring::SqrtSoftplus);
}
TEST(SpecParserKeys, SelectionTopK) {
  EXPECT_EQ(parseOk(specText({{"selection", "topk"}})).selection,
            Selection::TopK);
}
TEST(SpecParserKeys, SelectionHash) {
  EXPECT_EQ(parseOk(specText({{"selection", "hash"}})).selection,
            Selection::Hash);
}
TEST(SpecParserKeys, GroupScoreTop2Sum) {
  RoutingSpec s = parseOk(specText(
      {{"groups", "2"}, {"topk_groups", "1"}, {"group_score", "top2_sum"}}));
  EXPECT_EQ(s.groupScore, GroupScore::Top2Sum);
}
TEST(SpecParserKeys, GroupScoreMax) {
  RoutingSpec s = parseOk(specText(
      {{"groups", "2"}, {"topk_groups", "1"}, {"group_score", "max"}}));
  EXPECT_EQ(s.groupScore, GroupScore::Max);
}
TEST(SpecParserKeys, GroupScoreWithoutGroupsIsKept) {
  EXPECT_EQ(parseOk(specText({{"group_score", "max"}})).groupScore,
            GroupScore::Max);
}
TEST(SpecParserKeys, LogitsDTypeF32) {
  EXPECT_EQ(parseOk(specText({{"logits_dtype", "f32"}})).logitsDType,
            LogitsDType::F32);
}
TEST(SpecParserKeys, LogitsDTypeBF16) {
  EXPECT_EQ(parseOk(specText({{"logits_dtype", "bf16"}})).logitsDType,
            LogitsDType::BF16);
}
TEST(SpecParserKeys, LogitsDTypeF16) {
  EXPECT_EQ(parseOk(specText({{"logits_dtype", "f16"}})).logitsDType,
            LogitsDType::F16);
}

TEST(SpecParserKeys, EnumSpellingsMatchToString) {
  for (Scoring v : {Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus})
    EXPECT_EQ(parseScoring(toString(v)), v) << toString(v);
  for (Selection v : {Selection::TopK, Selection::Hash})
    EXPECT_EQ(parseSelection(toString(v)), v) << toString(v);
  for (GroupScore v : {GroupScore::Top2Sum, GroupScore::Max})
    EXPECT_EQ(parseGroupScore(toString(v)), v) << toString(v);
  for (LogitsDType v : {LogitsDType::F32, LogitsDType::BF16, LogitsDType::F16})
    EXPECT_EQ(parseLogitsDType(toString(v)), v) << toString(v);
  EXPECT_EQ(toString(Scoring::SqrtSoftplus), "sqrtsoftplus");
  EXPECT_EQ(toString(GroupScore::Top2Sum), "top2_sum");
  EXPECT_EQ(toString(LogitsDType::BF16), "bf16");
  EXPECT_FALSE(parseScoring("Softmax"));
  EXPECT_FALSE(parseSelection(""));
  EXPECT_FALSE(parseGroupScore("top2sum"));
  EXPECT_FALSE(parseLogitsDType("fp32"));
}

// Boolean spellings of the YAML 1.2 core schema, for every bool key.
struct BoolSpelling {
  const char *text;
  bool value;
};
// GoogleTest would print the raw bytes, padding included.
[[maybe_unused]] void PrintTo(const BoolSpelling &spelling, std::ostream *os) {
  *os << spelling.text;
}
class SpecParserBoolSpelling : public ::testing::TestWithParam<BoolSpelling> {};

TEST_P(SpecParserBoolSpelling, EveryBoolKey) {
  const BoolSpelling &p = GetParam();
  for (const char *key :
       {"score_bias", "normalize", "replay", "dispatch", "capture"}) {
    RoutingSpec s = parseOk(specText({{key, p.text}}));
    bool got = std::string(key) == "score_bias"  ? s.scoreBias
               : std::string(key) == "normalize" ? s.normalize
               : std::string(key) == "replay"    ? s.replay
               : std::string(key) == "dispatch"  ? s.dispatch
                                                 : s.capture;
    EXPECT_EQ(got, p.value) << key << ": " << p.text;
  }
}

INSTANTIATE_TEST_SUITE_P(
    SpecParser, SpecParserBoolSpelling,
    ::testing::Values(BoolSpelling{"true", true}, BoolSpelling{"True", true},
                      BoolSpelling{"TRUE", true}, BoolSpelling{"false", false},
                      BoolSpelling{"False", false},
                      BoolSpelling{"FALSE", false},
                      BoolSpelling{"\"true\"", true},
                      BoolSpelling{"'False'", false}),
    [](const ::testing::TestParamInfo<BoolSpelling> &info) {
      std::string name;
      for (char c : std::string(info.param.text))
        if (std::isalnum(static_cast<unsigned char>(c)))
          name += c;
      return name + (info.param.text[0] == '"'    ? "_dq"
                     : info.param.text[0] == '\'' ? "_sq"
                                                  : "");
    });

TEST(SpecParserKeys, DoubleQuotedValues) {
  RoutingSpec s = parseOk("name: \"q\"\n"
                          "num_experts: \"16\"\n"
                          "top_k: \"4\"\n"
                          "scoring: \"sigmoid\"\n"
                          "normalize: \"true\"\n"
                          "scaling_factor: \"1.5\"\n"
                          "logits_dtype: \"f16\"\n");
  EXPECT_EQ(s.name, "q");
  EXPECT_EQ(s.numExperts, 16);
  EXPECT_EQ(s.topK, 4);
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 1.5);
  EXPECT_EQ(s.logitsDType, LogitsDType::F16);
}

TEST(SpecParserKeys, SingleQuotedValues) {
  RoutingSpec s = parseOk("name: 'q'\n"
                          "num_experts: '16'\n"
                          "top_k: '4'\n"
                          "scoring: 'sqrtsoftplus'\n"
                          "selection: 'hash'\n"
                          "dispatch: 'TRUE'\n");
  EXPECT_EQ(s.name, "q");
  EXPECT_EQ(s.numExperts, 16);
  EXPECT_EQ(s.topK, 4);
  EXPECT_EQ(s.scoring, Scoring::SqrtSoftplus);
  EXPECT_EQ(s.selection, Selection::Hash);
  EXPECT_TRUE(s.dispatch);
}

TEST(SpecParserKeys, QuotedKeys) {
  RoutingSpec s = parseOk("\"name\": r\n"
                          "'num_experts': 8\n"
                          "top_k: 2\n"
                          "\"scoring\": sigmoid\n");
  EXPECT_EQ(s.name, "r");
  EXPECT_EQ(s.numExperts, 8);
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
}

TEST(SpecParserKeys, Comments) {
  RoutingSpec s = parseOk("# a router\n"
                          "\n"
                          "name: r # trailing comment\n"
                          "# between keys\n"
                          "num_experts: 8   # eight\n"
                          "top_k: 2\n"
                          "    # indented comment\n"
                          "scoring: sigmoid #sigmoid\n"
                          "# at the end\n");
  EXPECT_EQ(s.name, "r");
  EXPECT_EQ(s.numExperts, 8);
  EXPECT_EQ(s.topK, 2);
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
}

TEST(SpecParserKeys, FlowMapping) {
  RoutingSpec s = parseOk("{name: x, num_experts: 16, top_k: 3, scoring: "
                          "sigmoid, normalize: true}");
  EXPECT_EQ(s.name, "x");
  EXPECT_EQ(s.numExperts, 16);
  EXPECT_EQ(s.topK, 3);
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
  EXPECT_TRUE(s.normalize);
}

TEST(SpecParserKeys, FlowMappingOverSeveralLines) {
  RoutingSpec s = parseOk("{name: x,\n"
                          " num_experts: 16,\n"
                          " top_k: 3,\n"
                          " scoring: softmax,\n"
                          " logits_dtype: bf16}\n");
  EXPECT_EQ(s.numExperts, 16);
  EXPECT_EQ(s.logitsDType, LogitsDType::BF16);
}

TEST(SpecParserKeys, KeyOrderIsFree) {
  RoutingSpec s = parseOk("logits_dtype: f16\n"
                          "scoring: sigmoid\n"
                          "top_k: 3\n"
                          "num_experts: 16\n"
                          "name: z\n");
  EXPECT_EQ(s.name, "z");
  EXPECT_EQ(s.numExperts, 16);
  EXPECT_EQ(s.topK, 3);
  EXPECT_EQ(s.logitsDType, LogitsDType::F16);
}

TEST(SpecParserKeys, DocumentMarkersAndDirective) {
  EXPECT_EQ(parseOk("---\n" + kBase).numExperts, 8);
  EXPECT_EQ(parseOk(kBase + "...\n").numExperts, 8);
  EXPECT_EQ(parseOk("---\n" + kBase + "...\n").numExperts, 8);
  EXPECT_EQ(parseOk("%YAML 1.2\n---\n" + kBase).numExperts, 8);
}

TEST(SpecParserKeys, CrLfLineEndings) {
  RoutingSpec s =
      parseOk("name: r\r\nnum_experts: 8\r\ntop_k: 2\r\nscoring: sigmoid\r\n");
  EXPECT_EQ(s.name, "r");
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
}

TEST(SpecParserKeys, NoFinalNewline) {
  RoutingSpec s =
      parseOk("name: r\nnum_experts: 8\ntop_k: 2\nscoring: sigmoid");
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
}

TEST(SpecParserKeys, ExtraSpacesAroundValues) {
  RoutingSpec s = parseOk("name:    r\nnum_experts:  8   \ntop_k:\t2\n"
                          "scoring: softmax\n");
  EXPECT_EQ(s.name, "r");
  EXPECT_EQ(s.numExperts, 8);
  EXPECT_EQ(s.topK, 2);
}

TEST(SpecParserKeys, ExplicitDefaultsEqualOmittedDefaults) {
  RoutingSpec implicit = parseOk(kBase);
  RoutingSpec explicitSpec = parseOk(kBase + "selection: topk\n"
                                             "score_bias: false\n"
                                             "groups: 1\n"
                                             "topk_groups: 1\n"
                                             "group_score: top2_sum\n"
                                             "normalize: false\n"
                                             "scaling_factor: 1.0\n"
                                             "replay: false\n"
                                             "dispatch: false\n"
                                             "capture: false\n"
                                             "logits_dtype: f32\n");
  EXPECT_TRUE(sameSpec(implicit, explicitSpec));
}

TEST(SpecParserKeys, SuccessClearsAStaleError) {
  std::string error = "left over";
  EXPECT_TRUE(parseRoutingSpec(kBase, kBuf, error).has_value());
  EXPECT_EQ(error, "");
}

TEST(SpecParserKeys, RoutingSpecKeysInDocumentedOrder) {
  std::vector<std::string> keys;
  for (llvm::StringRef key : routingSpecKeys())
    keys.push_back(key.str());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "name", "num_experts", "top_k", "scoring", "selection",
                      "score_bias", "groups", "topk_groups", "group_score",
                      "normalize", "scaling_factor", "replay", "dispatch",
                      "capture", "logits_dtype", "permute", "hidden_dtype",
                      "hidden_size", "normalize_epsilon", "temperature",
                      "logit_softcap", "shared_expert_gate", "program"}));
}

//===----------------------------------------------------------------------===//
// SpecParserLimits: values at the edges of what is allowed
//===----------------------------------------------------------------------===//

TEST(SpecParserLimits, NumExpertsTwo) {
  EXPECT_EQ(parseOk(specText({{"num_experts", "2"}})).numExperts, 2);
}
TEST(SpecParserLimits, NumExpertsMax) {
  EXPECT_EQ(parseOk(specText({{"num_experts", "8192"}})).numExperts,
            kMaxExperts);
}
TEST(SpecParserLimits, TopKEqualsNumExperts) {
  RoutingSpec s = parseOk(specText({{"num_experts", "2"}, {"top_k", "2"}}));
  EXPECT_EQ(s.topK, 2);
}
TEST(SpecParserLimits, TopKOne) {
  EXPECT_EQ(parseOk(specText({{"top_k", "1"}})).topK, 1);
}
TEST(SpecParserLimits, TopKSixtyFour) {
  EXPECT_EQ(parseOk(specText({{"num_experts", "8192"}, {"top_k", "64"}})).topK,
            kMaxTopK);
}
TEST(SpecParserLimits, GroupsEqualNumExpertsWithMax) {
  RoutingSpec s = parseOk(specText(
      {{"groups", "8"}, {"topk_groups", "2"}, {"group_score", "max"}}));
  EXPECT_EQ(s.groups, 8);
  EXPECT_EQ(s.expertsPerGroup(), 1);
}
TEST(SpecParserLimits, TopkGroupsEqualsGroups) {
  RoutingSpec s = parseOk(specText({{"groups", "4"}, {"topk_groups", "4"}}));
  EXPECT_EQ(s.topkGroups, 4);
}
TEST(SpecParserLimits, TopKEqualsSelectableExperts) {
  // 4 groups of 2, keep 1: exactly 2 experts selectable.
  RoutingSpec s = parseOk(
      specText({{"top_k", "2"}, {"groups", "4"}, {"topk_groups", "1"}}));
  EXPECT_EQ(s.topK, 2);
}
TEST(SpecParserLimits, Top2SumWithTwoExpertsPerGroup) {
  RoutingSpec s = parseOk(specText(
      {{"groups", "4"}, {"topk_groups", "2"}, {"group_score", "top2_sum"}}));
  EXPECT_EQ(s.expertsPerGroup(), 2);
}
TEST(SpecParserLimits, NameOf128Characters) {
  std::string name = "n" + std::string(127, 'x');
  EXPECT_EQ(parseOk(specText({{"name", name}})).name, name);
}
TEST(SpecParserLimits, NameUnderscoreOnly) {
  EXPECT_EQ(parseOk(specText({{"name", "_"}})).name, "_");
}
TEST(SpecParserLimits, HashWithGroupsOneAndTopkGroupsOne) {
  RoutingSpec s = parseOk(specText({{"selection", "hash"},
                                    {"groups", "1"},
                                    {"topk_groups", "1"},
                                    {"score_bias", "false"}}));
  EXPECT_EQ(s.selection, Selection::Hash);
}

//===----------------------------------------------------------------------===//
// SpecParserErrors: exact diagnostics for a representative set
//===----------------------------------------------------------------------===//

TEST(SpecParserErrors, NumExpertsOne) {
  EXPECT_EQ(parseError(specText({{"num_experts", "1"}})),
            at(2, 14) + "'num_experts' = 1 must be in [2, 8192]");
}
TEST(SpecParserErrors, NumExperts8193) {
  EXPECT_EQ(parseError(specText({{"num_experts", "8193"}})),
            at(2, 14) + "'num_experts' = 8193 must be in [2, 8192]");
}
TEST(SpecParserErrors, TopKZero) {
  EXPECT_EQ(parseError(specText({{"top_k", "0"}})),
            at(3, 8) + "'top_k' = 0 must be in [1, 8] (at most min(64, "
                       "num_experts = 8))");
}
TEST(SpecParserErrors, TopK65) {
  EXPECT_EQ(parseError(specText({{"num_experts", "128"}, {"top_k", "65"}})),
            at(3, 8) + "'top_k' = 65 must be in [1, 64] (at most min(64, "
                       "num_experts = 128))");
}
TEST(SpecParserErrors, TopKAboveNumExperts) {
  EXPECT_EQ(parseError(specText({{"top_k", "9"}})),
            at(3, 8) + "'top_k' = 9 must be in [1, 8] (at most min(64, "
                       "num_experts = 8))");
}
TEST(SpecParserErrors, GroupsZero) {
  EXPECT_EQ(parseError(specText({{"groups", "0"}})),
            at(5, 9) + "'groups' = 0 must be in [1, 8] (at most num_experts)");
}
TEST(SpecParserErrors, GroupsAboveNumExperts) {
  EXPECT_EQ(parseError(specText({{"groups", "16"}, {"topk_groups", "1"}})),
            at(5, 9) + "'groups' = 16 must be in [1, 8] (at most num_experts)");
}
TEST(SpecParserErrors, GroupsNotDividing) {
  EXPECT_EQ(parseError(specText({{"groups", "3"}, {"topk_groups", "1"}})),
            at(5, 9) + "'groups' = 3 must divide num_experts = 8 into equal "
                       "contiguous groups");
}
TEST(SpecParserErrors, TopkGroupsZero) {
  EXPECT_EQ(parseError(specText({{"groups", "2"}, {"topk_groups", "0"}})),
            at(6, 14) + "'topk_groups' = 0 must be in [1, groups = 2]");
}
TEST(SpecParserErrors, TopkGroupsAboveGroups) {
  EXPECT_EQ(parseError(specText({{"groups", "2"}, {"topk_groups", "3"}})),
            at(6, 14) + "'topk_groups' = 3 must be in [1, groups = 2]");
}
TEST(SpecParserErrors, TopkGroupsWithoutGroups) {
  EXPECT_EQ(parseError(specText({{"topk_groups", "2"}})),
            at(5, 14) + "'topk_groups' = 2 must be in [1, groups = 1]");
}
TEST(SpecParserErrors, TopKAboveSelectableExperts) {
  EXPECT_EQ(parseError(specText(
                {{"top_k", "3"}, {"groups", "4"}, {"topk_groups", "1"}})),
            at(3, 8) + "'top_k' = 3 exceeds the 2 experts in the topk_groups "
                       "= 1 kept groups of 2 (top_k <= topk_groups * "
                       "num_experts / groups)");
}
TEST(SpecParserErrors, Top2SumWithOneExpertPerGroup) {
  EXPECT_EQ(parseError(specText({{"groups", "8"},
                                 {"topk_groups", "2"},
                                 {"group_score", "top2_sum"}})),
            at(7, 14) + "'group_score' = top2_sum needs at least 2 experts "
                        "per group, but num_experts / groups = 1 (use 'max' "
                        "or fewer groups)");
}
TEST(SpecParserErrors, DefaultTop2SumWithOneExpertPerGroupAtGroups) {
  // group_score is not in the file: the rule is reported at 'groups', the
  // key that brought it in.
  EXPECT_EQ(parseError(specText({{"groups", "8"}, {"topk_groups", "2"}})),
            at(5, 9) + "'group_score' = top2_sum needs at least 2 experts "
                       "per group, but num_experts / groups = 1 (use 'max' "
                       "or fewer groups)");
}
TEST(SpecParserErrors, ScalingFactorZero) {
  EXPECT_EQ(parseError(specText({{"scaling_factor", "0"}})),
            at(5, 17) + "'scaling_factor' = 0 must be finite and > 0");
}
TEST(SpecParserErrors, ScalingFactorMinusOne) {
  EXPECT_EQ(parseError(specText({{"scaling_factor", "-1"}})),
            at(5, 17) + "'scaling_factor' = -1 must be finite and > 0");
}
TEST(SpecParserErrors, ScalingFactorInf) {
  EXPECT_EQ(parseError(specText({{"scaling_factor", "inf"}})),
            at(5, 17) + "'scaling_factor' = inf must be finite and > 0");
}
TEST(SpecParserErrors, ScalingFactorNan) {
  EXPECT_EQ(parseError(specText({{"scaling_factor", "nan"}})),
            at(5, 17) + "'scaling_factor' = nan must be finite and > 0");
}
TEST(SpecParserErrors, ScalingFactorYamlInf) {
  EXPECT_EQ(parseError(specText({{"scaling_factor", ".inf"}})),
            at(5, 17) +
                "'scaling_factor' must be a finite number > 0, got '.inf'");
}
TEST(SpecParserErrors, ScalingFactorOverflowsToInf) {
  EXPECT_EQ(parseError(specText({{"scaling_factor", "1e400"}})),
            at(5, 17) + "'scaling_factor' = inf must be finite and > 0");
}
TEST(SpecParserErrors, ScalingFactorText) {
  EXPECT_EQ(parseError(specText({{"scaling_factor", "big"}})),
            at(5, 17) +
                "'scaling_factor' must be a finite number > 0, got 'big'");
}
TEST(SpecParserErrors, ScalingFactorOverflowsF32) {
  // Finite as a double, infinite weights in f32.
  EXPECT_EQ(parseError(specText({{"scaling_factor", "1e300"}})),
            at(5, 17) + "'scaling_factor' = 1e+300 must be a normal f32 "
                        "value, in [1.1754944e-38, 3.4028234e38] (the "
                        "weights are scaled in f32)");
  EXPECT_NE(parseError(specText({{"scaling_factor", "3.5e38"}})), "");
}
TEST(SpecParserErrors, ScalingFactorUnderflowsF32) {
  // Non-zero as a double, zero or denormal weights in f32.
  for (const char *v : {"1e-300", "1e-39", "1e-45", "1.1754943e-38"})
    EXPECT_NE(parseError(specText({{"scaling_factor", v}}))
                  .find("'scaling_factor' = "),
              std::string::npos)
        << v;
  EXPECT_NE(parseError(specText({{"scaling_factor", "1e-300"}}))
                .find("must be a normal f32 value"),
            std::string::npos);
}
TEST(SpecParserErrors, ScalingFactorMalformedNumbers) {
  // The grammar is exact: no empty exponent, no bare point, no hex floats,
  // no separators, no spaces inside.
  for (const char *v :
       {"1e",     "1E",   "2.5e-", "2.5e+", "1.e",   "1e+-1",    ".",
        "-.",     "+",    "e5",    ".e5",   "0x1p3", "0x10",     "1_000",
        "1 000",  "1.5.", "--1",   "+-1",   "1e5.0", "INFINITY", "NaN",
        "nan(1)", "0b1",  "1f",    "1d"}) {
    std::string error = parseError(specText({{"scaling_factor", v}}));
    EXPECT_EQ(error, at(5, 17) +
                         "'scaling_factor' must be a finite number "
                         "> 0, got '" +
                         v + "'")
        << v;
  }
}
TEST(SpecParserErrors, NumberLiteralTooLong) {
  // Tens of thousands of digits once crashed the float conversion; anything
  // past 64 characters is refused before conversion, with its length.
  for (size_t digits : {65u, 1000u, 40000u, 200000u}) {
    std::string literal = "1." + std::string(digits - 2, '1');
    EXPECT_EQ(parseError(specText({{"scaling_factor", literal}})),
              at(5, 17) +
                  "'scaling_factor' must be a finite number > 0, got "
                  "a value of " +
                  std::to_string(digits) +
                  " characters (numbers have at most 64)")
        << digits;
    EXPECT_EQ(parseError(specText({{"num_experts", std::string(digits, '9')}})),
              at(2, 14) +
                  "'num_experts' must be an integer in [2, 8192], "
                  "got a value of " +
                  std::to_string(digits) +
                  " characters (numbers have at most 64)")
        << digits;
  }
  // Quoted, the literal is still a number literal.
  std::string quoted = "\"" + std::string(50000, '7') + "\"";
  EXPECT_NE(parseError(specText({{"top_k", quoted}}))
                .find("(numbers have at "
                      "most 64)"),
            std::string::npos);
}
TEST(SpecParserErrors, IntegerStrictDecimal) {
  for (const char *v :
       {"+8", "0x8", "8.0", "8e0", "1_0", "0o10", "0b10", "'8 '"})
    EXPECT_NE(parseError(specText({{"num_experts", v}}))
                  .find("'num_experts' must be an integer in [2, 8192]"),
              std::string::npos)
        << v;
}
TEST(SpecParserErrors, ScoringBadSpelling) {
  EXPECT_EQ(parseError(specText({{"scoring", "Softmax"}})),
            at(4, 10) + "'scoring' must be one of softmax, sigmoid, "
                        "sqrtsoftplus, got 'Softmax'");
}
TEST(SpecParserErrors, SelectionBadSpelling) {
  EXPECT_EQ(parseError(specText({{"selection", "top_k"}})),
            at(5, 12) + "'selection' must be one of topk, hash, got 'top_k'");
}
TEST(SpecParserErrors, GroupScoreBadSpelling) {
  EXPECT_EQ(parseError(specText({{"group_score", "top2sum"}})),
            at(5, 14) +
                "'group_score' must be one of top2_sum, max, got 'top2sum'");
}
TEST(SpecParserErrors, LogitsDTypeBadSpelling) {
  EXPECT_EQ(parseError(specText({{"logits_dtype", "fp32"}})),
            at(5, 15) +
                "'logits_dtype' must be one of f32, bf16, f16, got 'fp32'");
}
TEST(SpecParserErrors, BoolYes) {
  EXPECT_EQ(parseError(specText({{"normalize", "yes"}})),
            at(5, 12) + "'normalize' must be true or false, got 'yes'");
}
TEST(SpecParserErrors, BoolOne) {
  EXPECT_EQ(parseError(specText({{"score_bias", "1"}})),
            at(5, 13) + "'score_bias' must be true or false, got '1'");
}
TEST(SpecParserErrors, NameEmptyQuoted) {
  EXPECT_EQ(parseError(specText({{"name", "\"\""}})),
            at(1, 7) + "'name' = '' must be an identifier ([A-Za-z_]"
                       "[A-Za-z0-9_]*, at most 128 characters)");
}
TEST(SpecParserErrors, NameStartsWithDigit) {
  EXPECT_EQ(parseError(specText({{"name", "3way"}})),
            at(1, 7) + "'name' = '3way' must be an identifier ([A-Za-z_]"
                       "[A-Za-z0-9_]*, at most 128 characters)");
}
TEST(SpecParserErrors, NameWithDash) {
  EXPECT_EQ(parseError(specText({{"name", "deepseek-v3"}})),
            at(1, 7) + "'name' = 'deepseek-v3' must be an identifier "
                       "([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)");
}
TEST(SpecParserErrors, NameOf129Characters) {
  std::string name = "n" + std::string(128, 'x');
  EXPECT_EQ(parseError(specText({{"name", name}})),
            at(1, 7) + "'name' = '" + name.substr(0, 40) +
                "...' must be an identifier ([A-Za-z_][A-Za-z0-9_]*, at most "
                "128 characters)");
}
TEST(SpecParserErrors, NameSequence) {
  std::string error = parseError(specText({{"name", "[a, b]"}}));
  EXPECT_TRUE(startsWith(error, kBuf + ":1:")) << error;
  EXPECT_TRUE(
      contains(error, "error: 'name' must be an identifier, got a sequence"))
      << error;
}
TEST(SpecParserErrors, IntegerText) {
  EXPECT_EQ(parseError(specText({{"num_experts", "eight"}})),
            at(2, 14) +
                "'num_experts' must be an integer in [2, 8192], got 'eight'");
}
TEST(SpecParserErrors, IntegerFloat) {
  EXPECT_EQ(parseError(specText({{"top_k", "2.0"}})),
            at(3, 8) + "'top_k' must be an integer in [1, min(64, "
                       "num_experts)], got '2.0'");
}
TEST(SpecParserErrors, IntegerHex) {
  EXPECT_EQ(parseError(specText({{"num_experts", "0x10"}})),
            at(2, 14) +
                "'num_experts' must be an integer in [2, 8192], got '0x10'");
}
TEST(SpecParserErrors, IntegerTooLargeForInt64) {
  EXPECT_EQ(parseError(specText({{"num_experts", "99999999999999999999"}})),
            at(2, 14) + "'num_experts' must be an integer in [2, 8192], got "
                        "'99999999999999999999'");
}
TEST(SpecParserErrors, IntegerNegative) {
  EXPECT_EQ(parseError(specText({{"num_experts", "-8"}})),
            at(2, 14) + "'num_experts' = -8 must be in [2, 8192]");
}
TEST(SpecParserErrors, GroupsSequence) {
  EXPECT_TRUE(contains(parseError(specText({{"groups", "[2]"}})),
                       "error: 'groups' must be an integer dividing "
                       "num_experts, got a sequence"));
}
TEST(SpecParserErrors, GroupsMapping) {
  EXPECT_TRUE(contains(parseError(specText({{"groups", "{a: 2}"}})),
                       "error: 'groups' must be an integer dividing "
                       "num_experts, got a mapping"));
}
TEST(SpecParserErrors, BlockSequenceValue) {
  EXPECT_EQ(parseError(kBase + "groups:\n  - 2\n"),
            at(5, 1) + "'groups' must be an integer dividing num_experts, "
                       "got a sequence");
}
TEST(SpecParserErrors, BlockMappingValue) {
  EXPECT_EQ(parseError(kBase + "scoring_extra:\n  a: 1\n"),
            at(5, 1) + "unknown key 'scoring_extra'; allowed keys: name, "
                       "num_experts, top_k, scoring, selection, score_bias, "
                       "groups, topk_groups, group_score, normalize, "
                       "scaling_factor, replay, dispatch, capture, "
                       "logits_dtype, permute, hidden_dtype, hidden_size, "
                       "normalize_epsilon, temperature, logit_softcap, "
                       "shared_expert_gate, program");
  EXPECT_EQ(parseError("name:\n  a: 1\nnum_experts: 8\ntop_k: 2\n"
                       "scoring: softmax\n"),
            at(1, 1) + "'name' must be an identifier, got a mapping");
}
TEST(SpecParserErrors, HashWithScoreBias) {
  EXPECT_EQ(
      parseError(specText({{"selection", "hash"}, {"score_bias", "true"}})),
      at(6, 13) + "'score_bias' = true has no effect with selection: "
                  "hash (the bias only steers top-k selection); "
                  "remove it");
}
TEST(SpecParserErrors, HashWithGroups) {
  EXPECT_EQ(
      parseError(specText(
          {{"selection", "hash"}, {"groups", "2"}, {"topk_groups", "1"}})),
      at(6, 9) + "'groups' = 2 has no effect with selection: hash "
                 "(groups only restrict top-k selection); remove it");
}
TEST(SpecParserErrors, GroupsWithoutTopkGroupsAtGroupsValue) {
  EXPECT_EQ(parseError(specText({{"groups", "2"}})),
            at(5, 9) + "'groups' = 2 needs 'topk_groups' (how many groups to "
                       "keep, in [1, groups])");
}
TEST(SpecParserErrors, GroupsWithoutTopkGroupsBeforeOtherKeys) {
  // Reported at groups' value even when more keys follow.
  EXPECT_EQ(parseError(specText({{"groups", "4"}, {"normalize", "true"}})),
            at(5, 9) + "'groups' = 4 needs 'topk_groups' (how many groups to "
                       "keep, in [1, groups])");
}
TEST(SpecParserErrors, HashWithGroupsWithoutTopkGroups) {
  std::string error =
      parseError(specText({{"selection", "hash"}, {"groups", "2"}}));
  EXPECT_TRUE(startsWith(error, at(6, 9))) << error;
  EXPECT_TRUE(contains(error, "'groups' = 2")) << error;
}
TEST(SpecParserErrors, ParserMessageIsValidateMessage) {
  RoutingSpec s = smallSpec();
  s.topK = 9;
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  ASSERT_TRUE(v);
  EXPECT_EQ(parseError(specText({{"top_k", "9"}})), at(3, 8) + v->message);
}
TEST(SpecParserErrors, BufferNameIsUsedVerbatim) {
  const std::string buf = "some dir/my spec.yaml";
  EXPECT_EQ(parseError(specText({{"top_k", "0"}}), buf),
            at(3, 8, buf) + "'top_k' = 0 must be in [1, 8] (at most min(64, "
                            "num_experts = 8))");
}
TEST(SpecParserErrors, StaleErrorIsReplaced) {
  std::string error = "old: error: stale";
  EXPECT_FALSE(parseRoutingSpec(specText({{"top_k", "0"}}), kBuf, error));
  EXPECT_TRUE(startsWith(error, at(3, 8))) << error;
}
TEST(SpecParserErrors, FirstBadKeyInFileOrderWins) {
  // Value errors stop the walk at the first bad value in the file.
  EXPECT_TRUE(startsWith(
      parseError(kBase + "normalize: maybe\nlogits_dtype: f64\n"), at(5, 12)));
}

// Every bad value of every key: the message and its line and column.
struct BadValue {
  Entries entries;     // passed to specText
  std::string key;     // the key whose value is reported
  std::string message; // a substring of the message
  bool exactColumn;    // the column is the value's first character
};

void PrintTo(const BadValue &p, std::ostream *os) {
  *os << p.key << " with";
  for (auto &[k, v] : p.entries)
    *os << " " << k << "=" << v;
}

class SpecParserBadValue : public ::testing::TestWithParam<BadValue> {};

TEST_P(SpecParserBadValue, ReportedAtTheValue) {
  const BadValue &p = GetParam();
  std::string text = specText(p.entries);
  std::string error = parseError(text);
  int line = lineOfKey(text, p.key);
  ASSERT_GT(line, 0) << text;
  std::string lineStr = kBuf + ":" + std::to_string(line) + ":";
  EXPECT_TRUE(startsWith(error, lineStr)) << error << "\n" << text;
  if (p.exactColumn) {
    int column = static_cast<int>(p.key.size()) + 3;
    EXPECT_TRUE(startsWith(error, at(line, column))) << error << "\n" << text;
  }
  EXPECT_TRUE(contains(error, p.message)) << error;
  EXPECT_TRUE(contains(error, "'" + p.key + "'")) << error;
}

std::vector<BadValue> badValues() {
  std::vector<BadValue> out;
  auto add = [&](Entries entries, std::string key, std::string message,
                 bool exact = true) {
    out.push_back(
        {std::move(entries), std::move(key), std::move(message), exact});
  };
  // Integers: wrong types.
  const std::map<std::string, std::string> intAllowed = {
      {"num_experts", "an integer in [2, 8192]"},
      {"top_k", "an integer in [1, min(64, num_experts)]"},
      {"groups", "an integer dividing num_experts"},
      {"topk_groups", "an integer in [1, groups]"}};
  for (auto &[key, allowed] : intAllowed) {
    std::string must = "'" + key + "' must be " + allowed;
    add({{key, "[8]"}}, key, must + ", got a sequence", false);
    add({{key, "{a: 8}"}}, key, must + ", got a mapping", false);
    add({{key, "eight"}}, key, must + ", got 'eight'");
    add({{key, "8.0"}}, key, must + ", got '8.0'");
    add({{key, "2.5"}}, key, must + ", got '2.5'");
    add({{key, "0x8"}}, key, must + ", got '0x8'");
    add({{key, "1e1"}}, key, must + ", got '1e1'");
    add({{key, "+8"}}, key, must + ", got '+8'");
    add({{key, "1_000"}}, key, must + ", got '1_000'");
    add({{key, "\"\""}}, key, must + ", got ''");
    add({{key, "~"}}, key, must + ", got '~'");
    add({{key, "true"}}, key, must + ", got 'true'");
    add({{key, "!!int 8"}}, key,
        "'" + key + "': YAML anchors and tags are not supported",
        false);
  }
  // Integers: out of range.
  add({{"num_experts", "1"}}, "num_experts",
      "'num_experts' = 1 must be in [2, 8192]");
  add({{"num_experts", "0"}}, "num_experts",
      "'num_experts' = 0 must be in [2, 8192]");
  add({{"num_experts", "8193"}}, "num_experts",
      "'num_experts' = 8193 must be in [2, 8192]");
  add({{"num_experts", "-1"}}, "num_experts",
      "'num_experts' = -1 must be in [2, 8192]");
  add({{"top_k", "0"}}, "top_k", "'top_k' = 0 must be in [1, 8]");
  add({{"top_k", "-3"}}, "top_k", "'top_k' = -3 must be in [1, 8]");
  add({{"top_k", "9"}}, "top_k", "'top_k' = 9 must be in [1, 8]");
  add({{"num_experts", "8192"}, {"top_k", "65"}}, "top_k",
      "'top_k' = 65 must be in [1, 64]");
  add({{"num_experts", "2"}, {"top_k", "3"}}, "top_k",
      "'top_k' = 3 must be in [1, 2]");
  add({{"groups", "0"}}, "groups", "'groups' = 0 must be in [1, 8]");
  add({{"groups", "-2"}}, "groups", "'groups' = -2 must be in [1, 8]");
  add({{"groups", "16"}, {"topk_groups", "1"}}, "groups",
      "'groups' = 16 must be in [1, 8]");
  add({{"groups", "3"}, {"topk_groups", "1"}}, "groups",
      "'groups' = 3 must divide num_experts = 8");
  add({{"num_experts", "96"}, {"groups", "7"}, {"topk_groups", "1"}}, "groups",
      "'groups' = 7 must divide num_experts = 96");
  add({{"groups", "2"}}, "groups", "'groups' = 2 needs 'topk_groups'");
  add({{"groups", "4"}, {"topk_groups", "0"}}, "topk_groups",
      "'topk_groups' = 0 must be in [1, groups = 4]");
  add({{"groups", "4"}, {"topk_groups", "5"}}, "topk_groups",
      "'topk_groups' = 5 must be in [1, groups = 4]");
  add({{"topk_groups", "2"}}, "topk_groups",
      "'topk_groups' = 2 must be in [1, groups = 1]");
  add({{"num_experts", "256"},
       {"top_k", "33"},
       {"groups", "8"},
       {"topk_groups", "1"}},
      "top_k", "'top_k' = 33 exceeds the 32 experts in the topk_groups = 1");
  add({{"num_experts", "256"},
       {"top_k", "9"},
       {"groups", "64"},
       {"topk_groups", "2"}},
      "top_k", "'top_k' = 9 exceeds the 8 experts in the topk_groups = 2");
  add({{"groups", "8"}, {"topk_groups", "4"}, {"group_score", "top2_sum"}},
      "group_score",
      "'group_score' = top2_sum needs at least 2 experts per "
      "group, but num_experts / groups = 1");
  // scaling_factor.
  for (const char *v :
       {"0", "-1", "inf", "-inf", "nan", "1e400", "-0.0", "1e-400"})
    add({{"scaling_factor", v}}, "scaling_factor", "must be finite and > 0");
  for (const char *v : {".inf", ".nan", "-.inf", "INF", "big", "1,5", "2.5.1",
                        "\"\"", "~", "true"})
    add({{"scaling_factor", v}}, "scaling_factor",
        "'scaling_factor' must be a finite number > 0, got '");
  add({{"scaling_factor", "[1]"}}, "scaling_factor",
      "'scaling_factor' must be a finite number > 0, got a sequence", false);
  add({{"scaling_factor", "{a: 1}"}}, "scaling_factor",
      "'scaling_factor' must be a finite number > 0, got a mapping", false);
  // Booleans.
  for (const char *key :
       {"score_bias", "normalize", "replay", "dispatch", "capture"}) {
    for (const char *v : {"yes", "no", "on", "off", "1", "0", "y", "n", "tRUE",
                          "fAlse", "t", "\"\"", "~", "null"})
      add({{key, v}}, key,
          std::string("'") + key + "' must be true or false, got '");
    add({{key, "[true]"}}, key,
        std::string("'") + key + "' must be true or false, got a sequence",
        false);
    add({{key, "{a: true}"}}, key,
        std::string("'") + key + "' must be true or false, got a mapping",
        false);
  }
  // Enums: bad spellings list the allowed values.
  const std::map<std::string, std::pair<std::string, std::vector<std::string>>>
      enums = {{"scoring",
                {"softmax, sigmoid, sqrtsoftplus",
                 {"Softmax", "SIGMOID", "sqrt_softplus", "softplus", "relu",
                  "\"\"", "~"}}},
               {"selection",
                {"topk, hash", {"top_k", "TopK", "random", "hashed", "\"\""}}},
               {"group_score",
                {"top2_sum, max", {"top2sum", "sum", "Max", "top2", "\"\""}}},
               {"logits_dtype",
                {"f32, bf16, f16",
                 {"fp32", "float32", "BF16", "f64", "fp8", "\"\""}}}};
  for (auto &[key, spec] : enums) {
    for (const std::string &v : spec.second)
      add({{key, v}}, key,
          "'" + key + "' must be one of " + spec.first + ", got '");
    add({{key, "[a]"}}, key,
        "'" + key + "' must be one of " + spec.first + ", got a sequence",
        false);
    add({{key, "{a: b}"}}, key,
        "'" + key + "' must be one of " + spec.first + ", got a mapping",
        false);
  }
  // Names.
  const std::string ident = "must be an identifier ([A-Za-z_][A-Za-z0-9_]*, at "
                            "most 128 characters)";
  for (const char *v : {"\"\"", "''", "1abc", "9", "a-b", "a.b", "a b",
                        "\"a:b\"", "caf\xc3\xa9", "-x"})
    add({{"name", v}}, "name", ident);
  add({{"name", "n" + std::string(128, 'x')}}, "name", ident);
  add({{"name", "n" + std::string(500, 'x')}}, "name", ident);
  add({{"name", "[a]"}}, "name", "'name' must be an identifier, got a sequence",
      false);
  add({{"name", "{a: b}"}}, "name",
      "'name' must be an identifier, got a mapping", false);
  // Hash selection.
  add({{"selection", "hash"}, {"score_bias", "true"}}, "score_bias",
      "'score_bias' = true has no effect with selection: hash");
  add({{"selection", "hash"}, {"groups", "4"}, {"topk_groups", "2"}}, "groups",
      "'groups' = 4 has no effect with selection: hash");
  add({{"groups", "4"}, {"topk_groups", "2"}, {"selection", "hash"}}, "groups",
      "'groups' = 4 has no effect with selection: hash");
  return out;
}

INSTANTIATE_TEST_SUITE_P(SpecParser, SpecParserBadValue,
                         ::testing::ValuesIn(badValues()));

//===----------------------------------------------------------------------===//
// SpecParserStructure: keys, documents and YAML syntax
//===----------------------------------------------------------------------===//

const std::string kAllowedKeys =
    "name, num_experts, top_k, scoring, selection, score_bias, groups, "
    "topk_groups, group_score, normalize, scaling_factor, replay, dispatch, "
    "capture, logits_dtype, permute, hidden_dtype, hidden_size, "
    "normalize_epsilon, temperature, logit_softcap, shared_expert_gate, "
    "program";

TEST(SpecParserStructure, UnknownKeyCloseSpelling) {
  EXPECT_EQ(parseError(kBase + "num_expert: 8\n"),
            at(5, 1) + "unknown key 'num_expert'; did you mean 'num_experts'?");
}

struct Typo {
  const char *typo;
  const char *meant;
};
[[maybe_unused]] void PrintTo(const Typo &typo, std::ostream *os) {
  *os << typo.typo;
}
class SpecParserTypo : public ::testing::TestWithParam<Typo> {};
TEST_P(SpecParserTypo, DidYouMean) {
  std::string error =
      parseError(kBase + std::string(GetParam().typo) + ": true\n");
  EXPECT_EQ(error, at(5, 1) + "unknown key '" + GetParam().typo +
                       "'; did you mean '" + GetParam().meant + "'?");
}
INSTANTIATE_TEST_SUITE_P(
    SpecParser, SpecParserTypo,
    ::testing::Values(
        Typo{"topk", "top_k"}, Typo{"Name", "name"}, Typo{"group", "groups"},
        Typo{"topk_group", "topk_groups"}, Typo{"score-bias", "score_bias"},
        Typo{"normalise", "normalize"}, Typo{"logit_dtype", "logits_dtype"},
        Typo{"scaling_factr", "scaling_factor"},
        Typo{"selections", "selection"}, Typo{"dispath", "dispatch"},
        Typo{"captur", "capture"}, Typo{"replays", "replay"},
        Typo{"group_scores", "group_score"}, Typo{"scorin", "scoring"},
        Typo{"num-experts", "num_experts"}, Typo{"gruops", "groups"},
        Typo{"topkgroup", "topk_groups"}, Typo{"nmae", "name"},
        Typo{"tpo_k", "top_k"}));

TEST(SpecParserStructure, UnknownKeyFarSpellingListsAllowedKeys) {
  EXPECT_EQ(parseError(kBase + "sharpness: 1\n"),
            at(5, 1) +
                "unknown key 'sharpness'; allowed keys: " + kAllowedKeys);
}
TEST(SpecParserStructure, UnknownKeyThreeEditsAwayListsAllowedKeys) {
  // "groupsxyz" is 3 edits from "groups": too far for a suggestion.
  EXPECT_EQ(parseError(kBase + "groupsxyz: 1\n"),
            at(5, 1) +
                "unknown key 'groupsxyz'; allowed keys: " + kAllowedKeys);
}
TEST(SpecParserStructure, UnknownKeyBeforeRequiredKeysReported) {
  EXPECT_EQ(parseError("foo: 1\n" + kBase),
            at(1, 1) + "unknown key 'foo'; allowed keys: " + kAllowedKeys);
}
TEST(SpecParserStructure, UnknownKeyInFlowMapping) {
  EXPECT_EQ(parseError("{name: r, bogus_key: 1}"),
            at(1, 11) +
                "unknown key 'bogus_key'; allowed keys: " + kAllowedKeys);
}
TEST(SpecParserStructure, DuplicateKeyNamesFirstLine) {
  EXPECT_EQ(parseError(kBase + "top_k: 3\n"),
            at(5, 1) + "duplicate key 'top_k' (first given at line 3)");
}
TEST(SpecParserStructure, DuplicateKeySameValue) {
  EXPECT_EQ(
      parseError(kBase + "normalize: true\ndispatch: true\nnormalize: true\n"),
      at(7, 1) + "duplicate key 'normalize' (first given at line 5)");
}
TEST(SpecParserStructure, DuplicateKeyQuotedSpelling) {
  EXPECT_EQ(parseError(kBase + "'name': s\n"),
            at(5, 1) + "duplicate key 'name' (first given at line 1)");
}
TEST(SpecParserStructure, DuplicateKeyInFlowMapping) {
  EXPECT_EQ(parseError("{name: a,\n num_experts: 8,\n num_experts: 8}\n"),
            at(3, 2) + "duplicate key 'num_experts' (first given at line 2)");
}

struct Required {
  const char *key;
  const char *allowed;
};
[[maybe_unused]] void PrintTo(const Required &required, std::ostream *os) {
  *os << required.key;
}
class SpecParserMissingKey : public ::testing::TestWithParam<Required> {};
TEST_P(SpecParserMissingKey, ReportedAtMappingStart) {
  std::string key = GetParam().key;
  EXPECT_EQ(parseError(specText({{key, kOmit}})),
            at(1, 1) + "missing required key '" + key + "' (" +
                GetParam().allowed + ")");
}
TEST_P(SpecParserMissingKey, ReportedAtMappingStartAfterComments) {
  std::string key = GetParam().key;
  EXPECT_EQ(parseError("# comment\n\n" +
                       specText({{key, kOmit}, {"normalize", "true"}})),
            at(3, 1) + "missing required key '" + key + "' (" +
                GetParam().allowed + ")");
}
TEST_P(SpecParserMissingKey, ReportedOnFlowMappingLine) {
  std::string key = GetParam().key;
  std::string flow = "{";
  for (auto [k, v] :
       std::vector<std::pair<std::string, std::string>>{{"name", "r"},
                                                        {"num_experts", "8"},
                                                        {"top_k", "2"},
                                                        {"scoring", "softmax"}})
    if (k != key)
      flow += (flow.size() > 1 ? ", " : "") + k + ": " + v;
  flow += "}\n";
  std::string error = parseError("\n" + flow);
  EXPECT_TRUE(startsWith(error, kBuf + ":2:")) << error;
  EXPECT_TRUE(contains(error, "error: missing required key '" + key + "' (" +
                                  GetParam().allowed + ")"))
      << error;
}
INSTANTIATE_TEST_SUITE_P(
    SpecParser, SpecParserMissingKey,
    ::testing::Values(
        Required{"name", "an identifier"},
        Required{"num_experts", "an integer in [2, 8192]"},
        Required{"top_k", "an integer in [1, min(64, num_experts)]"},
        Required{"scoring", "one of softmax, sigmoid, sqrtsoftplus"}),
    [](const ::testing::TestParamInfo<Required> &info) {
      return std::string(info.param.key);
    });

TEST(SpecParserStructure, MissingSeveralRequiredKeysNamesTheFirst) {
  EXPECT_EQ(parseError("normalize: true\n"),
            at(1, 1) + "missing required key 'name' (an identifier)");
  EXPECT_EQ(parseError("name: r\nscoring: softmax\n"),
            at(1, 1) + "missing required key 'num_experts' (an integer in "
                       "[2, 8192])");
}

const std::string kEmptySpec =
    "empty spec: expected a mapping with at least name, num_experts, top_k and "
    "scoring";

TEST(SpecParserStructure, EmptyFile) {
  EXPECT_EQ(parseError(""), at(1, 1) + kEmptySpec);
}
TEST(SpecParserStructure, OnlyComments) {
  EXPECT_EQ(parseError("# nothing\n# here\n"), at(1, 1) + kEmptySpec);
}
TEST(SpecParserStructure, OnlyWhitespace) {
  EXPECT_EQ(parseError("\n\n   \n"), at(1, 1) + kEmptySpec);
}
TEST(SpecParserStructure, OnlyDocumentMarkers) {
  EXPECT_EQ(parseError("---\n"), at(1, 1) + kEmptySpec);
  EXPECT_EQ(parseError("---\n...\n"), at(1, 1) + kEmptySpec);
}
TEST(SpecParserStructure, TopLevelSequence) {
  EXPECT_EQ(parseError("- name: r\n- num_experts: 8\n"),
            at(1, 1) + "a spec must be a YAML mapping of keys (" +
                kAllowedKeys + ")");
}
TEST(SpecParserStructure, TopLevelFlowSequence) {
  std::string error = parseError("[name, r]\n");
  EXPECT_TRUE(contains(error, "error: a spec must be a YAML mapping of keys ("))
      << error;
}
TEST(SpecParserStructure, TopLevelScalar) {
  EXPECT_EQ(parseError("deepseek_v3\n"),
            at(1, 1) + "a spec must be a YAML mapping of keys (" +
                kAllowedKeys + ")");
}
TEST(SpecParserStructure, TopLevelScalarAfterComment) {
  EXPECT_EQ(parseError("# c\n\"quoted\"\n"),
            at(2, 1) + "a spec must be a YAML mapping of keys (" +
                kAllowedKeys + ")");
}
TEST(SpecParserStructure, TwoDocuments) {
  EXPECT_EQ(parseError(kBase + "---\n" + kBase),
            at(6, 1) + "a spec file holds one YAML document; found a second "
                       "one");
}
TEST(SpecParserStructure, TwoDocumentsAfterDocumentEnd) {
  EXPECT_EQ(parseError(kBase + "...\n---\nfoo: 1\n"),
            at(7, 1) + "a spec file holds one YAML document; found a second "
                       "one");
}
TEST(SpecParserStructure, SecondDocumentEvenIfEmpty) {
  EXPECT_TRUE(contains(parseError(kBase + "---\n"),
                       "error: a spec file holds one YAML document"));
}
TEST(SpecParserStructure, SecondDocumentWithBadSpecStillOneError) {
  // The first document is complete and valid; the second is what is wrong.
  EXPECT_TRUE(contains(parseError(kBase + "---\n[unclosed\n"), "error: "));
}
TEST(SpecParserStructure, UnclosedDoubleQuote) {
  EXPECT_EQ(parseError("name: \"abc\nnum_experts: 8\ntop_k: 2\n"
                       "scoring: softmax\n"),
            at(4, 17) + "Expected quote at end of scalar");
}
TEST(SpecParserStructure, UnclosedSingleQuote) {
  EXPECT_EQ(parseError("name: 'abc\n"),
            at(1, 11) + "Expected quote at end of scalar");
}
TEST(SpecParserStructure, BadIndentation) {
  EXPECT_EQ(
      parseError("name: a\n  num_experts: 8\ntop_k: 2\nscoring: softmax\n"),
      at(2, 14) + "Unexpected token. Expected Key or Block End");
}
TEST(SpecParserStructure, TabIndentation) {
  EXPECT_EQ(
      parseError("name: a\n\tnum_experts: 8\ntop_k: 2\nscoring: softmax\n"),
      at(2, 1) + "Found invalid tab character in indentation");
}
TEST(SpecParserStructure, UnclosedFlowMapping) {
  std::string error = parseError("{name: a, num_experts: 8\n");
  EXPECT_TRUE(startsWith(error, kBuf + ":1:")) << error;
}
TEST(SpecParserStructure, SequenceEntryInsideMapping) {
  EXPECT_EQ(parseError(kBase + "- x\n"),
            at(5, 1) + "Unexpected token. Expected Key or Block End");
}
TEST(SpecParserStructure, NulByte) {
  std::string text = "name: a\nnum_experts: 8";
  text += '\0';
  text += "\ntop_k: 2\nscoring: softmax\n";
  std::string error = parseError(text);
  EXPECT_TRUE(startsWith(error, kBuf + ":2:")) << error;
}
TEST(SpecParserStructure, MalformedYamlErrorsAreOneLine) {
  for (const std::string &text : {std::string("name: \"abc\n"),
                                  std::string("name: 'abc\n"),
                                  std::string("name: a\n  num_experts: 8\n"),
                                  std::string("name: a\n\tnum_experts: 8\n"),
                                  std::string("{name: a, num_experts: 8\n"),
                                  std::string("{name: a, num_experts: 8]\n"),
                                  std::string("[name, a}\n"),
                                  std::string("name: a\n- b\n"),
                                  std::string("name: [a, b\n"),
                                  std::string("name: {a: b\n"),
                                  std::string(": 1\n"),
                                  std::string("name: a: b\n"),
                                  std::string("name: @x\n"),
                                  std::string("name: `x`\n"),
                                  std::string("? \n"),
                                  std::string("---\n---\n"),
                                  std::string("name: \"\\q\"\n"),
                                  std::string("&a\n"),
                                  std::string("*a\n"),
                                  std::string("!tag\n"),
                                  std::string("%YAML\n"),
                                  std::string("name: |\n"),
                                  std::string("name: >-\n  \n")}) {
    std::string error;
    std::optional<RoutingSpec> spec = parseRoutingSpec(text, kBuf, error);
    EXPECT_FALSE(spec.has_value()) << escaped(text);
    EXPECT_TRUE(isOneLineDiagnostic(error)) << escaped(text);
    EXPECT_TRUE(
        error.size() > kBuf.size() + 1 &&
        std::isdigit(static_cast<unsigned char>(error[kBuf.size() + 1])))
        << "FILE:LINE:COL expected: " << error;
  }
}
TEST(SpecParserStructure, AliasRejected) {
  std::string error =
      parseError("name: a\nnum_experts: 8\ntop_k: 2\nscoring: softmax\n"
                 "groups: *n\ntopk_groups: 1\n");
  EXPECT_TRUE(contains(error, "error: 'groups': YAML aliases are not supported "
                              "in specs"))
      << error;
}
TEST(SpecParserStructure, AliasReportedOnItsLine) {
  std::string error =
      parseError("name: a\nnum_experts: 8\ntop_k: 2\nscoring: softmax\n"
                 "groups: *n\ntopk_groups: 1\n");
  EXPECT_TRUE(startsWith(error, kBuf + ":5:")) << error;
}
TEST(SpecParserStructure, AnchorRejectedBeforeItsAlias) {
  // The anchor is the first thing a spec may not contain.
  std::string error =
      parseError(kBase + "logits_dtype: &d f16\nselection: *d\n");
  EXPECT_EQ(error, at(5, 1) + "'logits_dtype': YAML anchors and tags are not "
                              "supported in specs");
}
TEST(SpecParserStructure, TagOnValueRejected) {
  std::string error = parseError(kBase + "scaling_factor: !!float 2\n");
  EXPECT_TRUE(startsWith(error, kBuf + ":5:")) << error;
  EXPECT_TRUE(contains(error, "error: 'scaling_factor': YAML anchors and tags "
                              "are not supported in specs"))
      << error;
}
TEST(SpecParserStructure, LocalTagOnValueRejected) {
  std::string error = parseError(specText({{"name", "!mytag r"}}));
  EXPECT_TRUE(startsWith(error, kBuf + ":1:")) << error;
  EXPECT_TRUE(contains(error, "'name': YAML anchors and tags are not supported"))
      << error;
}
TEST(SpecParserStructure, TagOnQuotedValueRejected) {
  std::string error = parseError(kBase + "normalize: !!bool \"true\"\n");
  EXPECT_TRUE(contains(error, "'normalize': YAML anchors and tags are not supported"))
      << error;
}
TEST(SpecParserStructure, SequenceKeyRejected) {
  EXPECT_EQ(parseError(kBase + "[a]: 1\n"),
            at(5, 2) + "spec keys must be plain scalars");
}
TEST(SpecParserStructure, MappingKeyRejected) {
  std::string error = parseError(kBase + "? {a: 1}\n: 1\n");
  EXPECT_TRUE(startsWith(error, kBuf + ":5:")) << error;
  EXPECT_TRUE(contains(error, "error: spec keys must be plain scalars"))
      << error;
}
TEST(SpecParserStructure, EmptyKeyRejected) {
  std::string error = parseError(kBase + ": 1\n");
  EXPECT_TRUE(startsWith(error, kBuf + ":5:")) << error;
}
TEST(SpecParserStructure, ExplicitScalarKeyAccepted) {
  RoutingSpec s = parseOk(kBase + "? normalize\n: true\n");
  EXPECT_TRUE(s.normalize);
}

// An empty value names its key and what it needs. (Where it is reported:
// see DISABLED_EmptyValueReportedOnItsKeyLine.)
class SpecParserEmptyValue : public ::testing::TestWithParam<std::string> {};
TEST_P(SpecParserEmptyValue, NamesTheKey) {
  const std::string &key = GetParam();
  std::string error = parseError(specText({{key, ""}}));
  EXPECT_TRUE(contains(error, ": error: '" + key + "' needs a value: "))
      << error;
}
TEST_P(SpecParserEmptyValue, NamesTheKeyAsLastLineWithoutNewline) {
  const std::string &key = GetParam();
  std::string text = specText({{key, kOmit}});
  text += key + ":";
  std::string error = parseError(text);
  EXPECT_TRUE(contains(error, ": error: '" + key + "' needs a value: "))
      << error;
}
INSTANTIATE_TEST_SUITE_P(
    SpecParser, SpecParserEmptyValue,
    ::testing::Values("name", "num_experts", "top_k", "scoring", "selection",
                      "score_bias", "groups", "topk_groups", "group_score",
                      "normalize", "scaling_factor", "replay", "dispatch",
                      "capture", "logits_dtype"));

TEST(SpecParserStructure, EmptyValueMessages) {
  EXPECT_TRUE(contains(parseError(specText({{"top_k", ""}})),
                       "error: 'top_k' needs a value: an integer in [1, "
                       "min(64, num_experts)]"));
  EXPECT_TRUE(contains(parseError(specText({{"scoring", ""}})),
                       "error: 'scoring' needs a value: one of softmax, "
                       "sigmoid, sqrtsoftplus"));
  EXPECT_TRUE(contains(parseError(specText({{"capture", ""}})),
                       "error: 'capture' needs a value: true or false"));
  EXPECT_TRUE(contains(parseError(specText({{"name", ""}})),
                       "error: 'name' needs a value: an identifier"));
}

TEST(SpecParserStructure, EmptyValueAtEndOfFileWithoutNewline) {
  EXPECT_EQ(parseError(kBase + "groups:"),
            at(5, 1) + "'groups' needs a value: an integer dividing "
                       "num_experts");
}

//===----------------------------------------------------------------------===//
// SpecParserFile and SpecParserTemplates
//===----------------------------------------------------------------------===//

TEST(SpecParserFile, MissingFileNamesThePath) {
  const std::string path = kTemplatesDir + "/no-such-template.yaml";
  std::string error;
  EXPECT_FALSE(parseRoutingSpecFile(path, error).has_value());
  EXPECT_TRUE(isOneLineDiagnostic(error, path)) << error;
  EXPECT_TRUE(startsWith(error, path + ": error: cannot read spec: ")) << error;
}
TEST(SpecParserFile, MissingDirectoryNamesThePath) {
  const std::string path = "/nonexistent-moegen-dir/spec.yaml";
  std::string error = "stale";
  EXPECT_FALSE(parseRoutingSpecFile(path, error).has_value());
  EXPECT_TRUE(startsWith(error, path + ": error: ")) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}
TEST(SpecParserFile, DirectoryIsAnError) {
  std::string error;
  EXPECT_FALSE(parseRoutingSpecFile(kTemplatesDir, error).has_value());
  EXPECT_TRUE(startsWith(error, kTemplatesDir + ": error: ")) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}
TEST(SpecParserFile, ErrorsInAFileNameTheFile) {
  const std::string path =
      ::testing::TempDir() + "/moegen_specparser_bad_spec.yaml";
  {
    std::ofstream out(path, std::ios::binary);
    out << kBase << "top_k: 3\n";
  }
  std::string error;
  EXPECT_FALSE(parseRoutingSpecFile(path, error).has_value());
  EXPECT_EQ(error,
            at(5, 1, path) + "duplicate key 'top_k' (first given at line 3)");
  std::filesystem::remove(path);
}
TEST(SpecParserFile, GoodFileParses) {
  const std::string path =
      ::testing::TempDir() + "/moegen_specparser_good_spec.yaml";
  {
    std::ofstream out(path, std::ios::binary);
    out << kBase << "normalize: true\n";
  }
  std::string error = "stale";
  std::optional<RoutingSpec> spec = parseRoutingSpecFile(path, error);
  ASSERT_TRUE(spec.has_value()) << error;
  EXPECT_EQ(error, "");
  EXPECT_TRUE(spec->normalize);
  std::filesystem::remove(path);
}
TEST(SpecParserFile, FileAndBufferParseEqually) {
  for (const std::string &file : templateFiles()) {
    std::string e1, e2;
    std::optional<RoutingSpec> a = parseRoutingSpecFile(file, e1);
    std::optional<RoutingSpec> b = parseRoutingSpec(readFile(file), file, e2);
    ASSERT_TRUE(a && b) << file << ": " << e1 << " / " << e2;
    EXPECT_TRUE(sameSpec(*a, *b)) << file;
  }
}

TEST(SpecParserTemplates, EveryTemplateParsesAndValidates) {
  std::vector<std::string> files = templateFiles();
  EXPECT_GE(files.size(), kTemplateStems.size());
  for (const std::string &file : files) {
    std::string error;
    std::optional<RoutingSpec> spec = parseRoutingSpecFile(file, error);
    ASSERT_TRUE(spec.has_value()) << error;
    EXPECT_EQ(error, "");
    EXPECT_FALSE(validateRoutingSpec(*spec).has_value()) << file;
  }
}
TEST(SpecParserTemplates, KnownTemplatesExist) {
  for (const std::string &stem : kTemplateStems)
    EXPECT_TRUE(std::filesystem::exists(templatePath(stem))) << stem;
}
TEST(SpecParserTemplates, NamesFollowFileNames) {
  for (const std::string &stem : kTemplateStems) {
    std::string expected = stem;
    std::replace(expected.begin(), expected.end(), '-', '_');
    EXPECT_EQ(parseTemplate(stem).name, expected);
  }
}
TEST(SpecParserTemplates, DeepSeekV3) {
  RoutingSpec s = parseTemplate("deepseek-v3");
  EXPECT_EQ(s.numExperts, 256);
  EXPECT_EQ(s.topK, 8);
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
  EXPECT_EQ(s.selection, Selection::TopK);
  EXPECT_TRUE(s.scoreBias);
  EXPECT_EQ(s.groups, 8);
  EXPECT_EQ(s.topkGroups, 4);
  EXPECT_EQ(s.groupScore, GroupScore::Top2Sum);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 2.5);
  EXPECT_EQ(s.logitsDType, LogitsDType::F32);
}
TEST(SpecParserTemplates, DeepSeekV4Flash) {
  RoutingSpec s = parseTemplate("deepseek-v4-flash");
  EXPECT_EQ(s.numExperts, 256);
  EXPECT_EQ(s.topK, 6);
  EXPECT_EQ(s.scoring, Scoring::SqrtSoftplus);
  EXPECT_EQ(s.selection, Selection::TopK);
  EXPECT_TRUE(s.scoreBias);
  EXPECT_EQ(s.groups, 1);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 1.5);
}
TEST(SpecParserTemplates, DeepSeekV4FlashHash) {
  RoutingSpec s = parseTemplate("deepseek-v4-flash-hash");
  EXPECT_EQ(s.numExperts, 256);
  EXPECT_EQ(s.topK, 6);
  EXPECT_EQ(s.scoring, Scoring::SqrtSoftplus);
  EXPECT_EQ(s.selection, Selection::Hash);
  EXPECT_FALSE(s.scoreBias);
  EXPECT_EQ(s.groups, 1);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 1.5);
}
TEST(SpecParserTemplates, KimiK2) {
  RoutingSpec s = parseTemplate("kimi-k2");
  EXPECT_EQ(s.numExperts, 384);
  EXPECT_EQ(s.topK, 8);
  EXPECT_EQ(s.scoring, Scoring::Sigmoid);
  EXPECT_EQ(s.selection, Selection::TopK);
  EXPECT_TRUE(s.scoreBias);
  EXPECT_EQ(s.groups, 1);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 2.827);
}
TEST(SpecParserTemplates, Qwen3_30B_A3B) {
  RoutingSpec s = parseTemplate("qwen3-30b-a3b");
  EXPECT_EQ(s.numExperts, 128);
  EXPECT_EQ(s.topK, 8);
  EXPECT_EQ(s.scoring, Scoring::Softmax);
  EXPECT_EQ(s.selection, Selection::TopK);
  EXPECT_FALSE(s.scoreBias);
  EXPECT_EQ(s.groups, 1);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 1.0);
}
TEST(SpecParserTemplates, Mixtral8x7B) {
  RoutingSpec s = parseTemplate("mixtral-8x7b");
  EXPECT_EQ(s.numExperts, 8);
  EXPECT_EQ(s.topK, 2);
  EXPECT_EQ(s.scoring, Scoring::Softmax);
  EXPECT_EQ(s.selection, Selection::TopK);
  EXPECT_FALSE(s.scoreBias);
  EXPECT_EQ(s.groups, 1);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 1.0);
}
TEST(SpecParserTemplates, GptOss120B) {
  RoutingSpec s = parseTemplate("gpt-oss-120b");
  EXPECT_EQ(s.numExperts, 128);
  EXPECT_EQ(s.topK, 4);
  EXPECT_EQ(s.scoring, Scoring::Softmax);
  EXPECT_EQ(s.selection, Selection::TopK);
  EXPECT_FALSE(s.scoreBias);
  EXPECT_EQ(s.groups, 1);
  EXPECT_TRUE(s.normalize);
  EXPECT_EQ(s.scalingFactor, 1.0);
}

//===----------------------------------------------------------------------===//
// SpecParserPrint: canonical YAML and round trips
//===----------------------------------------------------------------------===//

TEST(SpecParserPrint, MinimalSpecExactText) {
  EXPECT_EQ(printRoutingSpec(smallSpec()), "name: r\n"
                                           "num_experts: 8\n"
                                           "top_k: 2\n"
                                           "scoring: softmax\n"
                                           "selection: topk\n"
                                           "score_bias: false\n"
                                           "groups: 1\n"
                                           "topk_groups: 1\n"
                                           "group_score: top2_sum\n"
                                           "normalize: false\n"
                                           "scaling_factor: 1\n"
                                           "replay: false\n"
                                           "dispatch: false\n"
                                           "capture: false\n"
                                           "logits_dtype: f32\n");
}
TEST(SpecParserPrint, NonDefaultSpecExactText) {
  RoutingSpec s = groupedSpec();
  s.groupScore = GroupScore::Max;
  s.replay = s.dispatch = s.capture = true;
  s.logitsDType = LogitsDType::F16;
  EXPECT_EQ(printRoutingSpec(s), "name: g\n"
                                 "num_experts: 256\n"
                                 "top_k: 8\n"
                                 "scoring: sigmoid\n"
                                 "selection: topk\n"
                                 "score_bias: true\n"
                                 "groups: 8\n"
                                 "topk_groups: 4\n"
                                 "group_score: max\n"
                                 "normalize: true\n"
                                 "scaling_factor: 2.5\n"
                                 "replay: true\n"
                                 "dispatch: true\n"
                                 "capture: true\n"
                                 "logits_dtype: f16\n");
}
TEST(SpecParserPrint, EveryKeyInDocumentedOrder) {
  // With permute, so that the hidden keys print too.
  RoutingSpec spec = smallSpec();
  spec.dispatch = spec.permute = true;
  spec.normalize = true;
  spec.normalizeEpsilon = 1e-6;
  spec.temperature = 2.0;
  spec.logitSoftcap = 30.0;
  spec.sharedGate = true;
  std::string text = printRoutingSpec(spec);
  size_t pos = 0;
  // Every key but program, which a spec written with keys does not have.
  for (llvm::StringRef key : routingSpecKeys().drop_back()) {
    std::string line = key.str() + ": ";
    size_t found = text.find(line, pos);
    ASSERT_NE(found, std::string::npos) << key.str();
    EXPECT_TRUE(found == 0 || text[found - 1] == '\n') << key.str();
    pos = found + line.size();
  }
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'),
            static_cast<long>(routingSpecKeys().size()) - 1);
}
TEST(SpecParserPrint, TemplatesRoundTrip) {
  for (const std::string &file : templateFiles()) {
    std::string error;
    std::optional<RoutingSpec> spec = parseRoutingSpecFile(file, error);
    ASSERT_TRUE(spec.has_value()) << error;
    std::string printed = printRoutingSpec(*spec);
    std::optional<RoutingSpec> again =
        parseRoutingSpec(printed, "printed.yaml", error);
    ASSERT_TRUE(again.has_value()) << file << ": " << error << "\n" << printed;
    EXPECT_TRUE(sameSpec(*spec, *again)) << file;
    EXPECT_EQ(printRoutingSpec(*again), printed) << file;
  }
}
TEST(SpecParserPrint, CodeBuiltSpecsRoundTrip) {
  std::vector<RoutingSpec> specs;
  specs.push_back(smallSpec());
  specs.push_back(groupedSpec());
  // The extremes of the normal f32 range the weights are scaled in.
  for (double f : {0.1, 2.827, 1.1754944e-38, 3.4028234e38, 1.0 / 3.0,
                   1e-30}) {
    RoutingSpec s = smallSpec();
    s.scalingFactor = f;
    specs.push_back(s);
  }
  RoutingSpec hash = smallSpec();
  hash.selection = Selection::Hash;
  hash.scoring = Scoring::SqrtSoftplus;
  hash.logitsDType = LogitsDType::BF16;
  hash.capture = true;
  specs.push_back(hash);
  RoutingSpec longName = smallSpec();
  longName.name = "N" + std::string(127, '_');
  specs.push_back(longName);
  for (const RoutingSpec &s : specs) {
    ASSERT_FALSE(validateRoutingSpec(s).has_value());
    std::string printed = printRoutingSpec(s);
    std::string error;
    std::optional<RoutingSpec> again = parseRoutingSpec(printed, "p", error);
    ASSERT_TRUE(again.has_value()) << error << "\n" << printed;
    EXPECT_TRUE(sameSpec(s, *again)) << printed;
  }
}
TEST(SpecParserPrint, ScalingFactorPrintsExactly) {
  RoutingSpec s = smallSpec();
  s.scalingFactor = 0.1;
  std::string printed = printRoutingSpec(s);
  std::string error;
  std::optional<RoutingSpec> again = parseRoutingSpec(printed, "p", error);
  ASSERT_TRUE(again.has_value()) << error;
  EXPECT_EQ(again->scalingFactor, 0.1);
}
TEST(SpecParserPrint, DefaultsExplicitOrOmittedPrintEqually) {
  EXPECT_EQ(printRoutingSpec(parseOk(kBase)),
            printRoutingSpec(parseOk(kBase + "selection: topk\n"
                                             "score_bias: false\n"
                                             "groups: 1\n"
                                             "topk_groups: 1\n"
                                             "group_score: top2_sum\n"
                                             "normalize: false\n"
                                             "scaling_factor: 1.0\n"
                                             "replay: false\n"
                                             "dispatch: false\n"
                                             "capture: false\n"
                                             "logits_dtype: f32\n")));
}
TEST(SpecParserPrint, SpellingsOfOneSpecPrintEqually) {
  const std::string canonical = printRoutingSpec(parseOk(kFullBlockSpec));
  const std::vector<std::string> spellings = {
      // Flow style, other order, quoted, other bool and number spellings.
      "{capture: TRUE, dispatch: True, replay: true, name: deepseek_v3,\n"
      " top_k: 8, num_experts: 256, scoring: 'sigmoid', score_bias: true,\n"
      " groups: 8, topk_groups: 4, normalize: true, scaling_factor: 2.50}\n",
      // Block style with comments, explicit defaults, and an exponent.
      "# DeepSeek-V3\n"
      "name: \"deepseek_v3\"   # quoted\n"
      "num_experts: 256\n"
      "top_k: 8\n"
      "scoring: sigmoid\n"
      "selection: topk\n"
      "score_bias: TRUE\n"
      "groups: 8\n"
      "topk_groups: 4\n"
      "group_score: top2_sum\n"
      "normalize: True\n"
      "scaling_factor: 25e-1\n"
      "replay: true\n"
      "dispatch: true\n"
      "capture: true\n"
      "logits_dtype: f32\n"};
  for (const std::string &text : spellings)
    EXPECT_EQ(printRoutingSpec(parseOk(text)), canonical) << text;
}
TEST(SpecParserPrint, EachFieldChangesThePrint) {
  const RoutingSpec base = groupedSpec();
  const std::string basePrint = printRoutingSpec(base);
  std::vector<std::pair<const char *, RoutingSpec>> variants;
  auto variant = [&](const char *what, auto change) {
    RoutingSpec s = base;
    change(s);
    variants.push_back({what, s});
  };
  variant("name", [](RoutingSpec &s) { s.name = "h"; });
  variant("numExperts", [](RoutingSpec &s) { s.numExperts = 128; });
  variant("topK", [](RoutingSpec &s) { s.topK = 6; });
  variant("scoring", [](RoutingSpec &s) { s.scoring = Scoring::Softmax; });
  variant("selection", [](RoutingSpec &s) { s.selection = Selection::Hash; });
  variant("scoreBias", [](RoutingSpec &s) { s.scoreBias = false; });
  variant("groups", [](RoutingSpec &s) { s.groups = 4; });
  variant("topkGroups", [](RoutingSpec &s) { s.topkGroups = 3; });
  variant("groupScore", [](RoutingSpec &s) { s.groupScore = GroupScore::Max; });
  variant("normalize", [](RoutingSpec &s) { s.normalize = false; });
  variant("scalingFactor",
          [](RoutingSpec &s) { s.scalingFactor = std::nextafter(2.5, 3.0); });
  variant("replay", [](RoutingSpec &s) { s.replay = true; });
  variant("dispatch", [](RoutingSpec &s) { s.dispatch = true; });
  variant("capture", [](RoutingSpec &s) { s.capture = true; });
  variant("logitsDType",
          [](RoutingSpec &s) { s.logitsDType = LogitsDType::BF16; });
  variant("temperature", [](RoutingSpec &s) { s.temperature = 0.5; });
  variant("logitSoftcap", [](RoutingSpec &s) { s.logitSoftcap = 30.0; });
  variant("permute", [](RoutingSpec &s) {
    s.dispatch = true;
    s.permute = true;
  });
  variant("sharedGate", [](RoutingSpec &s) { s.sharedGate = true; });
  // The hidden keys change the print of a spec with permute (a spec without
  // it refuses them).
  RoutingSpec permuted = base;
  permuted.dispatch = permuted.permute = true;
  RoutingSpec otherDType = permuted, otherSize = permuted;
  otherDType.hiddenDType = LogitsDType::F16;
  otherSize.hiddenSize = 7168;
  EXPECT_NE(printRoutingSpec(otherDType), printRoutingSpec(permuted));
  EXPECT_NE(printRoutingSpec(otherSize), printRoutingSpec(permuted));
  // So does the epsilon of a normalizing spec (groupedSpec normalizes).
  RoutingSpec otherEpsilon = base;
  otherEpsilon.normalizeEpsilon = 1e-6;
  EXPECT_NE(printRoutingSpec(otherEpsilon), basePrint);
  // A program replaces the keys it expands.
  variant("program", [](RoutingSpec &s) { s = program::programTwin(s); });
  ASSERT_EQ(variants.size() + 3, routingSpecKeys().size());
  for (auto &[what, s] : variants)
    EXPECT_NE(printRoutingSpec(s), basePrint) << what;
}
TEST(SpecParserErrors, PermuteNeedsDispatch) {
  EXPECT_EQ(parseError(kBase + "permute: true\n"),
            at(5, 10) + "'permute' = true needs dispatch: true (permute reads "
                       "dispatch's sorted_slots, combine its slot_positions)");
}
TEST(SpecParserErrors, HiddenKeysNeedPermute) {
  EXPECT_EQ(parseError(kBase + "hidden_size: 7168\n"),
            at(5, 14) + "'hidden_size' = 7168 has no effect without permute: "
                       "true; remove it");
  EXPECT_EQ(parseError(kBase + "hidden_dtype: f32\n"),
            at(5, 15) + "'hidden_dtype' = f32 has no effect without permute: "
                       "true; remove it");
}
TEST(SpecParserErrors, HiddenSizeRange) {
  EXPECT_TRUE(contains(
      parseError(kBase + "dispatch: true\npermute: true\nhidden_size: 0\n"),
      "'hidden_size' = 0 must be in [1, 65536]"));
}
TEST(SpecParserErrors, NormalizeEpsilon) {
  EXPECT_EQ(parseOk(kBase + "normalize: true\nnormalize_epsilon: 1e-6\n")
                .normalizeEpsilon,
            1e-6);
  EXPECT_EQ(parseOk(kBase + "normalize: true\nnormalize_epsilon: 0\n")
                .normalizeEpsilon,
            0.0);
  EXPECT_EQ(parseError(kBase + "normalize_epsilon: 1e-6\n"),
            at(5, 20) + "'normalize_epsilon' = 1e-06 has no effect without "
                        "normalize: true; remove it");
  EXPECT_TRUE(contains(
      parseError(kBase + "normalize: true\nnormalize_epsilon: 1e-40\n"),
      "'normalize_epsilon' = 1e-40 must be 0 or a normal f32 value, in "
      "[1.1754944e-38, 3.4028234e38] (it is added in f32)"));
  EXPECT_TRUE(contains(
      parseError(kBase + "normalize: true\nnormalize_epsilon: -1\n"),
      "'normalize_epsilon' = -1 must be 0 or a normal f32 value"));
}
TEST(SpecParserErrors, TemperatureAndSoftcap) {
  RoutingSpec s = parseOk(kBase + "temperature: 0.5\nlogit_softcap: 30\n");
  EXPECT_EQ(s.temperature, 0.5);
  EXPECT_EQ(s.logitSoftcap, 30.0);
  EXPECT_EQ(parseOk(printRoutingSpec(s)).logitSoftcap, 30.0);
  EXPECT_TRUE(contains(parseError(kBase + "temperature: 0\n"),
                       "'temperature' = 0 must be a normal f32 value > 0"));
  EXPECT_TRUE(contains(parseError(kBase + "temperature: 1e39\n"),
                       "'temperature' = 1e+39 must be a normal f32 value > 0"));
  EXPECT_TRUE(contains(parseError(kBase + "logit_softcap: -30\n"),
                       "'logit_softcap' = -30 must be 0 (none) or a normal "
                       "f32 value > 0"));
  EXPECT_EQ(parseOk(kBase + "logit_softcap: 0\n").logitSoftcap, 0.0);
}
TEST(SpecParserPrint, NormalizeEpsilonRoundTrips) {
  RoutingSpec s =
      parseOk(kBase + "normalize: true\nnormalize_epsilon: 1e-6\n");
  EXPECT_TRUE(contains(printRoutingSpec(s), "normalize_epsilon: 9.9999999999999995e-07\n"));
  EXPECT_EQ(parseOk(printRoutingSpec(s)).normalizeEpsilon, 1e-6);
}
TEST(SpecParserPrint, PermuteRoundTrips) {
  RoutingSpec s = parseOk(kBase + "dispatch: true\npermute: true\n"
                                  "hidden_dtype: f16\nhidden_size: 7168\n");
  EXPECT_TRUE(s.permute);
  EXPECT_EQ(s.hiddenDType, LogitsDType::F16);
  EXPECT_EQ(s.hiddenSize, 7168);
  EXPECT_EQ(printRoutingSpec(parseOk(printRoutingSpec(s))), printRoutingSpec(s));
}
TEST(SpecParserPrint, PrintIsDeterministic) {
  EXPECT_EQ(printRoutingSpec(groupedSpec()), printRoutingSpec(groupedSpec()));
}

//===----------------------------------------------------------------------===//
// SpecParserValidate: the value rules on specs built in code
//===----------------------------------------------------------------------===//

std::string violatedKey(const RoutingSpec &s) {
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  return v ? v->key : "";
}

/// The message of the first violation, or "" for a valid spec.
std::string violationMessage(const RoutingSpec &s) {
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  return v ? v->message : "";
}

template <typename Change>
std::string violatedKeyAfter(RoutingSpec s, Change change) {
  change(s);
  return violatedKey(s);
}

TEST(SpecParserValidate, SmallSpecValid) {
  EXPECT_FALSE(validateRoutingSpec(smallSpec()).has_value());
}
TEST(SpecParserValidate, GroupedSpecValid) {
  EXPECT_FALSE(validateRoutingSpec(groupedSpec()).has_value());
}
TEST(SpecParserValidate, DefaultConstructedSpecInvalidAtName) {
  EXPECT_EQ(violatedKey(RoutingSpec()), "name");
}
TEST(SpecParserValidate, TemplateShapesValid) {
  RoutingSpec v4 = smallSpec();
  v4.numExperts = 256;
  v4.topK = 6;
  v4.scoring = Scoring::SqrtSoftplus;
  v4.scoreBias = true;
  v4.normalize = true;
  v4.scalingFactor = 1.5;
  EXPECT_EQ(violatedKey(v4), "");
  RoutingSpec v4hash = v4;
  v4hash.selection = Selection::Hash;
  v4hash.scoreBias = false;
  EXPECT_EQ(violatedKey(v4hash), "");
  RoutingSpec mixtral = smallSpec();
  mixtral.normalize = true;
  mixtral.logitsDType = LogitsDType::BF16;
  EXPECT_EQ(violatedKey(mixtral), "");
}
TEST(SpecParserValidate, NameRules) {
  auto withName = [](std::string name) {
    RoutingSpec s = smallSpec();
    s.name = std::move(name);
    return violatedKey(s);
  };
  EXPECT_EQ(withName(""), "name");
  EXPECT_EQ(withName("1a"), "name");
  EXPECT_EQ(withName("a-b"), "name");
  EXPECT_EQ(withName("a b"), "name");
  EXPECT_EQ(withName("a.b"), "name");
  EXPECT_EQ(withName(std::string("a\0b", 3)), "name");
  EXPECT_EQ(withName("caf\xc3\xa9"), "name");
  EXPECT_EQ(withName("a" + std::string(128, 'b')), "name");
  EXPECT_EQ(withName("a" + std::string(127, 'b')), "");
  EXPECT_EQ(withName("_"), "");
  EXPECT_EQ(withName("Z9_z"), "");
}
TEST(SpecParserValidate, NameMessage) {
  RoutingSpec s = smallSpec();
  s.name = "a-b";
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->message, "'name' = 'a-b' must be an identifier "
                        "([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)");
}
TEST(SpecParserValidate, NumExpertsRules) {
  for (int64_t e : {int64_t(1), int64_t(0), int64_t(-5), int64_t(8193),
                    std::numeric_limits<int64_t>::max(),
                    std::numeric_limits<int64_t>::min()})
    EXPECT_EQ(violatedKeyAfter(smallSpec(),
                               [&](RoutingSpec &s) { s.numExperts = e; }),
              "num_experts")
        << e;
  EXPECT_EQ(
      violatedKeyAfter(smallSpec(), [](RoutingSpec &s) { s.numExperts = 2; }),
      "");
  EXPECT_EQ(violatedKeyAfter(smallSpec(),
                             [](RoutingSpec &s) { s.numExperts = 8192; }),
            "");
}
TEST(SpecParserValidate, NumExpertsMessage) {
  RoutingSpec s = smallSpec();
  s.numExperts = 8193;
  EXPECT_EQ(violationMessage(s), "'num_experts' = 8193 must be in [2, 8192]");
}
TEST(SpecParserValidate, TopKRules) {
  auto withK = [](int64_t experts, int64_t k) {
    RoutingSpec s = smallSpec();
    s.numExperts = experts;
    s.topK = k;
    return violatedKey(s);
  };
  EXPECT_EQ(withK(8, 0), "top_k");
  EXPECT_EQ(withK(8, -1), "top_k");
  EXPECT_EQ(withK(8, 9), "top_k");
  EXPECT_EQ(withK(128, 65), "top_k");
  EXPECT_EQ(withK(8192, 65), "top_k");
  EXPECT_EQ(withK(8, 8), "");
  EXPECT_EQ(withK(128, 64), "");
  EXPECT_EQ(withK(2, 1), "");
}
TEST(SpecParserValidate, TopKMessage) {
  RoutingSpec s = smallSpec();
  s.numExperts = 128;
  s.topK = 65;
  EXPECT_EQ(violationMessage(s),
            "'top_k' = 65 must be in [1, 64] (at most min(64, num_experts = "
            "128))");
}
TEST(SpecParserValidate, GroupsRules) {
  auto withGroups = [](int64_t groups) {
    RoutingSpec s = smallSpec();
    s.topK = 1;
    s.groups = groups;
    s.topkGroups = 1;
    s.groupScore = GroupScore::Max;
    return violatedKey(s);
  };
  EXPECT_EQ(withGroups(0), "groups");
  EXPECT_EQ(withGroups(-1), "groups");
  EXPECT_EQ(withGroups(9), "groups");
  EXPECT_EQ(withGroups(16), "groups");
  EXPECT_EQ(withGroups(3), "groups");
  EXPECT_EQ(withGroups(5), "groups");
  EXPECT_EQ(withGroups(1), "");
  EXPECT_EQ(withGroups(2), "");
  EXPECT_EQ(withGroups(8), "");
}
TEST(SpecParserValidate, GroupsMessages) {
  RoutingSpec s = smallSpec();
  s.groups = 9;
  EXPECT_EQ(violationMessage(s),
            "'groups' = 9 must be in [1, 8] (at most num_experts)");
  s.groups = 3;
  EXPECT_EQ(violationMessage(s),
            "'groups' = 3 must divide num_experts = 8 into equal contiguous "
            "groups");
}
TEST(SpecParserValidate, TopkGroupsRules) {
  RoutingSpec s = groupedSpec();
  EXPECT_EQ(violatedKeyAfter(s, [](RoutingSpec &x) { x.topkGroups = 0; }),
            "topk_groups");
  EXPECT_EQ(violatedKeyAfter(s, [](RoutingSpec &x) { x.topkGroups = -1; }),
            "topk_groups");
  EXPECT_EQ(violatedKeyAfter(s, [](RoutingSpec &x) { x.topkGroups = 9; }),
            "topk_groups");
  EXPECT_EQ(violatedKeyAfter(s, [](RoutingSpec &x) { x.topkGroups = 8; }), "");
  EXPECT_EQ(
      violatedKeyAfter(smallSpec(), [](RoutingSpec &x) { x.topkGroups = 2; }),
      "topk_groups");
  RoutingSpec x = groupedSpec();
  x.topkGroups = 9;
  EXPECT_EQ(violationMessage(x),
            "'topk_groups' = 9 must be in [1, groups = 8]");
}
TEST(SpecParserValidate, Top2SumNeedsTwoExpertsPerGroup) {
  RoutingSpec s = smallSpec();
  s.groups = 8;
  s.topkGroups = 2;
  s.groupScore = GroupScore::Top2Sum;
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->key, "group_score");
  EXPECT_EQ(v->message, "'group_score' = top2_sum needs at least 2 experts "
                        "per group, but num_experts / groups = 1 (use 'max' "
                        "or fewer groups)");
  s.groupScore = GroupScore::Max;
  EXPECT_EQ(violatedKey(s), "");
  s.groupScore = GroupScore::Top2Sum;
  s.groups = 4;
  EXPECT_EQ(violatedKey(s), "");
}
TEST(SpecParserValidate, Top2SumRuleOnlyWhenGrouped) {
  // groups = 1 is not grouped: one group of all experts, no group rule.
  RoutingSpec s = smallSpec();
  s.numExperts = 2;
  s.topK = 1;
  s.groupScore = GroupScore::Top2Sum;
  EXPECT_EQ(violatedKey(s), "");
}
TEST(SpecParserValidate, TopKWithinKeptGroups) {
  RoutingSpec s = groupedSpec(); // 8 groups of 32, keep 4: 128 selectable
  s.topK = 64;
  EXPECT_EQ(violatedKey(s), "");
  s.topkGroups = 1; // 32 selectable
  s.topK = 32;
  EXPECT_EQ(violatedKey(s), "");
  s.topK = 33;
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->key, "top_k");
  EXPECT_EQ(v->message, "'top_k' = 33 exceeds the 32 experts in the "
                        "topk_groups = 1 kept groups of 32 (top_k <= "
                        "topk_groups * num_experts / groups)");
}
TEST(SpecParserValidate, ScalingFactorRules) {
  for (double f :
       {0.0, -0.0, -1.0, -1e-300, std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity(),
        std::numeric_limits<double>::quiet_NaN(),
        // Finite doubles, but infinite, zero or denormal weights in f32.
        std::numeric_limits<double>::denorm_min(),
        std::numeric_limits<double>::max(), 1e300, 1e-300, 1e-39,
        double(std::numeric_limits<float>::denorm_min()), 3.5e38})
    EXPECT_EQ(violatedKeyAfter(smallSpec(),
                               [&](RoutingSpec &s) { s.scalingFactor = f; }),
              "scaling_factor")
        << f;
  for (double f : {1.0, 2.827, 1.1754944e-38, 3.4028234e38, 1e-30, 1e30})
    EXPECT_EQ(violatedKeyAfter(smallSpec(),
                               [&](RoutingSpec &s) { s.scalingFactor = f; }),
              "")
        << f;
}
TEST(SpecParserValidate, ScalingFactorMessage) {
  RoutingSpec s = smallSpec();
  s.scalingFactor = -2;
  EXPECT_EQ(violationMessage(s),
            "'scaling_factor' = -2 must be finite and > 0");
}
TEST(SpecParserValidate, HashWithScoreBias) {
  RoutingSpec s = smallSpec();
  s.selection = Selection::Hash;
  s.scoreBias = true;
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->key, "score_bias");
  EXPECT_EQ(v->message, "'score_bias' = true has no effect with selection: "
                        "hash (the bias only steers top-k selection); remove "
                        "it");
}
TEST(SpecParserValidate, HashWithGroups) {
  RoutingSpec s = groupedSpec();
  s.selection = Selection::Hash;
  s.scoreBias = false;
  std::optional<SpecViolation> v = validateRoutingSpec(s);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->key, "groups");
  EXPECT_EQ(v->message, "'groups' = 8 has no effect with selection: hash "
                        "(groups only restrict top-k selection); remove it");
}
TEST(SpecParserValidate, HashWithoutBiasOrGroupsValid) {
  RoutingSpec s = smallSpec();
  s.selection = Selection::Hash;
  s.normalize = true;
  s.replay = s.dispatch = s.capture = true;
  EXPECT_EQ(violatedKey(s), "");
}
TEST(SpecParserValidate, TopkGroupsNotRequiredInCode) {
  // The parser wants topk_groups spelled out when groups > 1; a spec built
  // in code keeps the default 1 and is valid if top_k fits one group.
  RoutingSpec s = smallSpec();
  s.numExperts = 256;
  s.topK = 8;
  s.groups = 8;
  EXPECT_EQ(violatedKey(s), "");
  EXPECT_TRUE(
      contains(parseError(specText(
                   {{"num_experts", "256"}, {"top_k", "8"}, {"groups", "8"}})),
               "needs 'topk_groups'"));
}
TEST(SpecParserValidate, FirstViolationInKeyOrder) {
  RoutingSpec s = smallSpec();
  s.name = "";
  s.numExperts = 1;
  EXPECT_EQ(violatedKey(s), "name");
  s = smallSpec();
  s.numExperts = 1;
  s.topK = 0;
  EXPECT_EQ(violatedKey(s), "num_experts");
  s = smallSpec();
  s.topK = 0;
  s.groups = 0;
  EXPECT_EQ(violatedKey(s), "top_k");
  s = smallSpec();
  s.groups = 3;
  s.topkGroups = 0;
  EXPECT_EQ(violatedKey(s), "groups");
  s = smallSpec();
  s.scalingFactor = 0;
  s.selection = Selection::Hash;
  s.scoreBias = true;
  EXPECT_EQ(violatedKey(s), "scaling_factor");
  s = smallSpec();
  s.selection = Selection::Hash;
  s.scoreBias = true;
  s.groups = 2;
  EXPECT_EQ(violatedKey(s), "score_bias");
}
TEST(SpecParserValidate, MessagesAreOneLineAndNameTheirKey) {
  std::vector<RoutingSpec> bad;
  auto add = [&](auto change) {
    RoutingSpec s = smallSpec();
    change(s);
    bad.push_back(s);
  };
  add([](RoutingSpec &s) { s.name = "a\nb"; });
  add([](RoutingSpec &s) { s.numExperts = 0; });
  add([](RoutingSpec &s) { s.topK = 0; });
  add([](RoutingSpec &s) { s.groups = 0; });
  add([](RoutingSpec &s) { s.topkGroups = 0; });
  add([](RoutingSpec &s) {
    s.groups = 8;
    s.topkGroups = 2;
  });
  add([](RoutingSpec &s) {
    s.groups = 4;
    s.topkGroups = 1;
    s.topK = 3;
  });
  add([](RoutingSpec &s) { s.scalingFactor = -1; });
  add([](RoutingSpec &s) {
    s.selection = Selection::Hash;
    s.scoreBias = true;
  });
  add([](RoutingSpec &s) {
    s.selection = Selection::Hash;
    s.groups = 2;
  });
  for (const RoutingSpec &s : bad) {
    std::optional<SpecViolation> v = validateRoutingSpec(s);
    ASSERT_TRUE(v);
    EXPECT_TRUE(startsWith(v->message, "'" + v->key + "'")) << v->message;
    if (s.name == "r") { // the bad name is echoed verbatim
      EXPECT_EQ(v->message.find('\n'), std::string::npos) << v->message;
    }
    bool known = false;
    for (llvm::StringRef key : routingSpecKeys())
      known |= key == v->key;
    EXPECT_TRUE(known) << v->key;
  }
}

//===----------------------------------------------------------------------===//
// SpecParserRobustness: mutated inputs never break the error contract
//===----------------------------------------------------------------------===//

/// xorshift64: the same mutations on every platform and run.
struct Rng {
  uint64_t state;
  uint64_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }
  size_t below(size_t n) { return n ? static_cast<size_t>(next() % n) : 0; }
};

std::string mutate(std::string text, Rng &rng) {
  static const char kAlphabet[] = ":-{}[],#&*!|>'\"\t\n ?%@`~\\0123456789aeksx."
                                  "\xff\x80";
  const size_t alphabetSize = sizeof(kAlphabet) - 1;
  size_t count = 1 + rng.below(4);
  for (size_t m = 0; m < count; ++m) {
    size_t pos = rng.below(text.size() + 1);
    switch (rng.below(6)) {
    case 0: // bit flip
      if (pos < text.size())
        text[pos] = static_cast<char>(text[pos] ^ (1u << rng.below(8)));
      break;
    case 1: // truncation
      text.resize(pos);
      break;
    case 2: // insertion
      text.insert(pos, 1, kAlphabet[rng.below(alphabetSize)]);
      break;
    case 3: // deletion
      if (pos < text.size())
        text.erase(pos, 1 + rng.below(8));
      break;
    case 4: // replacement
      if (pos < text.size())
        text[pos] = kAlphabet[rng.below(alphabetSize)];
      break;
    case 5: // NUL byte
      text.insert(pos, 1, '\0');
      break;
    }
  }
  return text;
}

/// Either a spec that validates and round-trips through print, or a one-line
/// diagnostic naming the buffer.
::testing::AssertionResult keepsContract(const std::string &text) {
  const std::string buf = "mutant.yaml";
  std::string error = "stale";
  std::optional<RoutingSpec> spec = parseRoutingSpec(text, buf, error);
  if (spec) {
    if (!error.empty())
      return ::testing::AssertionFailure()
             << "success with error '" << error << "' for: " << escaped(text);
    if (std::optional<SpecViolation> v = validateRoutingSpec(*spec))
      return ::testing::AssertionFailure()
             << "accepted an invalid spec (" << v->message
             << ") for: " << escaped(text);
    std::string again;
    std::optional<RoutingSpec> round =
        parseRoutingSpec(printRoutingSpec(*spec), "printed", again);
    if (!round || !sameSpec(*spec, *round))
      return ::testing::AssertionFailure()
             << "no round trip (" << again << ") for: " << escaped(text);
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult ok = isOneLineDiagnostic(error, buf);
  if (!ok)
    return ok << " for: " << escaped(text);
  return ::testing::AssertionSuccess();
}

void runMutations(uint64_t seed, int count,
                  const std::vector<std::string> &texts) {
  Rng rng{seed};
  int failures = 0;
  for (int i = 0; i < count && failures < 10; ++i) {
    std::string text = mutate(texts[i % texts.size()], rng);
    ::testing::AssertionResult result = keepsContract(text);
    EXPECT_TRUE(result) << "mutation " << i;
    failures += !result;
  }
}

TEST(SpecParserRobustness, SeedTextsAreValid) {
  EXPECT_TRUE(keepsContract(kFullBlockSpec));
  EXPECT_TRUE(keepsContract(kFlowSpec));
  EXPECT_EQ(parseOk(kFlowSpec).name, "hash_layer");
}
TEST(SpecParserRobustness, MutatedSpecsKeepTheContract) {
  runMutations(0x9E3779B97F4A7C15ull, 400, {kFullBlockSpec, kFlowSpec});
}
TEST(SpecParserRobustness, MutatedTemplatesKeepTheContract) {
  std::vector<std::string> texts;
  for (const std::string &file : templateFiles())
    texts.push_back(readFile(file));
  ASSERT_FALSE(texts.empty());
  runMutations(0x2545F4914F6CDD1Dull, 300, texts);
}
TEST(SpecParserRobustness, EveryPrefixKeepsTheContract) {
  for (size_t n = 0; n <= kFullBlockSpec.size(); ++n)
    EXPECT_TRUE(keepsContract(kFullBlockSpec.substr(0, n))) << n;
  for (size_t n = 0; n <= kFlowSpec.size(); ++n)
    EXPECT_TRUE(keepsContract(kFlowSpec.substr(0, n))) << n;
}
TEST(SpecParserRobustness, EverySingleByteDeletionKeepsTheContract) {
  for (size_t i = 0; i < kFlowSpec.size(); ++i) {
    std::string text = kFlowSpec;
    text.erase(i, 1);
    EXPECT_TRUE(keepsContract(text)) << i;
  }
}
TEST(SpecParserRobustness, GarbageKeepsTheContract) {
  for (const std::string &text :
       {std::string("\xff\xfe\x00\x01", 4), std::string(1000, '{'),
        std::string(1000, '['), std::string(200, '-') + "\n",
        std::string("\xef\xbb\xbf") + kBase, std::string(":::\n"),
        std::string("!!!\n"), std::string("&&&\n"), std::string("***\n"),
        std::string("'''\n"), std::string("? ? ? ?\n"),
        std::string("name: ") + std::string(100000, 'a') + "\n"})
    EXPECT_TRUE(keepsContract(text)) << escaped(text.substr(0, 40));
}

//===----------------------------------------------------------------------===//
// Known parser bugs (reported; fail against the current parser)
//===----------------------------------------------------------------------===//

// Echoed text with a line break makes the diagnostic span lines.
TEST(SpecParserRegressions, EscapedNewlineInValueKeepsErrorOneLine) {
  // scoring: "soft\nmax" -> "...got 'soft<newline>max'"
  parseError(specText({{"scoring", "\"soft\\nmax\""}}));
  parseError(specText({{"num_experts", "\"8\\n9\""}}));
  parseError(specText({{"name", "\"a\\nb\""}}));
  parseError(specText({{"scaling_factor", "\"1\\r5\""}}));
}
TEST(SpecParserRegressions, EscapedNewlineInKeyKeepsErrorOneLine) {
  parseError(kBase + "\"foo\\nbar\": 1\n");
}
TEST(SpecParserRegressions, MultiLinePlainValueKeepsErrorOneLine) {
  // A plain scalar over a blank line folds to "2\nscoring" (flow) and
  // "softmax\nmore" (block).
  parseError("{name: r, num_experts: 8, top_k: 2\n\n scoring: softmax}\n");
  parseError(kBase + "logits_dtype: f32\n\n  more\n");
}
TEST(SpecParserRegressions, MultiLinePlainKeyKeepsErrorOneLine) {
  // A plain scalar over a blank line folds to "foo\nname".
  parseError("foo\n\nname: a\nnum_experts: 8\n");
}

// A '%' line inside the document ends the YAML token stream without a
// scanner error.
TEST(SpecParserRegressions, PercentLineAfterEmptyValueSetsAnError) {
  // Returns nullopt with an EMPTY error string.
  std::string error = "stale";
  EXPECT_FALSE(
      parseRoutingSpec(kBase + "score_bias:\n%groups: 8\n", kBuf, error));
  EXPECT_TRUE(isOneLineDiagnostic(error)) << "'" << error << "'";
}
TEST(SpecParserBugs, DISABLED_PercentLineIsNotASecondDocument) {
  // Reported as "1:1: error: a spec file holds one YAML document; found a
  // second one" although the file has one document.
  std::string error = parseError(kBase + "%\n");
  EXPECT_FALSE(contains(error, "second")) << error;
  EXPECT_TRUE(startsWith(error, kBuf + ":5:")) << error;
}
TEST(SpecParserBugs, DISABLED_UnknownDirectiveIsNotAnEmptySpec) {
  // Reported as "1:1: error: empty spec: ...".
  std::string error = parseError("%FOO bar\n---\n" + kBase);
  EXPECT_FALSE(contains(error, "empty spec")) << error;
}

// Locations.
TEST(SpecParserRegressions, EmptyValueReportedOnItsKeyLine) {
  // "name:\nnum_experts: 8" is reported at 2:1 (the next key), and an empty
  // last value one line past the end of the file.
  for (llvm::StringRef key : routingSpecKeys()) {
    std::string text = specText({{key.str(), ""}});
    int line = lineOfKey(text, key.str());
    EXPECT_TRUE(
        startsWith(parseError(text), kBuf + ":" + std::to_string(line) + ":"))
        << key.str() << ": " << parseError(text);
  }
}
TEST(SpecParserRegressions, FlowCollectionValueReportedAtItsKey) {
  // Was reported inside the brackets ("groups: [2]" at the '2') or past the
  // end of the file ("logits_dtype: {"); non-scalars now point at their key.
  EXPECT_TRUE(startsWith(parseError(specText({{"groups", "[2]"}})), at(5, 1)));
  std::string error = parseError(kBase + "logits_dtype: {\n");
  EXPECT_TRUE(startsWith(error, kBuf + ":5:")) << error;
}

// Block scalars are scalars.
TEST(SpecParserRegressions, BlockScalarIsNotCalledNonScalar) {
  // "name: |\n  a" -> "2:1: error: 'name' must be an identifier, got a
  // non-scalar".
  std::string text =
      "name: |\n  a\nnum_experts: 8\ntop_k: 2\nscoring: softmax\n";
  std::string error;
  std::optional<RoutingSpec> spec = parseRoutingSpec(text, kBuf, error);
  if (!spec) {
    EXPECT_FALSE(contains(error, "non-scalar")) << error;
    EXPECT_TRUE(startsWith(error, kBuf + ":1:")) << error;
  }
}

// Anchors and tags are accepted where the parser rejects aliases and tags.
TEST(SpecParserRegressions, AnchorOnValueRejected) {
  parseError("name: &x a\nnum_experts: 8\ntop_k: 2\nscoring: softmax\n");
}
TEST(SpecParserRegressions, AnchorOnKeyRejected) {
  parseError(kBase + "&k normalize: true\n");
}
TEST(SpecParserRegressions, AnchorOnMappingRejected) {
  parseError("&m\n" + kBase);
}
TEST(SpecParserRegressions, TagOnKeyRejected) {
  parseError(kBase + "!!str normalize: true\n");
}
TEST(SpecParserRegressions, TagOnMappingRejected) {
  parseError("--- !!map\n" + kBase);
}

// A longer run of the robustness test finds the bugs above.
TEST(SpecParserRegressions, ManyMutationsKeepTheContract) {
  std::vector<std::string> texts = {kFullBlockSpec, kFlowSpec};
  for (const std::string &file : templateFiles())
    texts.push_back(readFile(file));
  runMutations(0x243F6A8885A308D3ull, 400000, texts);
}

} // namespace
