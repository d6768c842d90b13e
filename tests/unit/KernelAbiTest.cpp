//===- KernelAbiTest.cpp - The catalogue, its documentation, its JSON -----===//
//
// The kernel ABI is stated once (abi/KernelAbi.h); docs/kernel-abi.md's table
// must say the same, and a manifest written by abi::writeManifest must read
// back through abi::parseManifest as what was written.
//
//===----------------------------------------------------------------------===//

#include "abi/KernelAbi.h"
#include "abi/Manifest.h"
#include "runtime/Manifest.h"
#include "tests/unit/RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

using namespace moegen::abi;

namespace {

std::string dtypeText(const ArgSpec &arg) {
  switch (arg.dtypeRule) {
  case DTypeRule::Logits:
    return "logits";
  case DTypeRule::Capture:
    return "capture";
  case DTypeRule::Hidden:
    return "hidden";
  case DTypeRule::Fixed:
    break;
  }
  return std::string(toString(arg.dtype));
}

std::string shapeText(const ArgSpec &arg) {
  if (arg.rank == 0)
    return "";
  std::string text = "[";
  for (int d = 0; d < arg.rank; ++d)
    text += (d ? ", " : "") + std::string(toString(arg.dims[d]));
  return text + "]";
}

/// The catalogue as the rows of docs/kernel-abi.md's table.
std::vector<std::string> catalogueRows() {
  std::vector<std::string> rows;
  for (EntryKind entry : kEntryKinds)
    for (const ArgSpec &arg : entrySignature(entry))
      rows.push_back("| " + std::string(toString(entry)) + " | " +
                     std::string(arg.name) + " | " +
                     std::string(toString(arg.role)) + " | " + shapeText(arg) +
                     " | " + dtypeText(arg) + " | " +
                     std::string(toString(arg.access)) + " | " +
                     (arg.required ? "yes" : "no") + " |");
  return rows;
}

TEST(KernelAbiTest, DocumentedTableMatchesTheCatalogue) {
  std::ifstream doc(std::string(MOEGEN_SOURCE_DIR) + "/docs/kernel-abi.md");
  ASSERT_TRUE(doc) << "docs/kernel-abi.md";
  std::vector<std::string> documented;
  bool inTable = false;
  for (std::string line; std::getline(doc, line);) {
    if (line.starts_with("| entry | argument |")) {
      inTable = true;
      continue;
    }
    if (inTable && line.starts_with("|---"))
      continue;
    if (inTable && !line.starts_with("| ")) {
      inTable = false;
      continue;
    }
    if (inTable) {
      // Empty cells may be written with one space or two.
      std::string squeezed;
      for (char c : line)
        if (!(c == ' ' && !squeezed.empty() && squeezed.back() == ' '))
          squeezed += c;
      documented.push_back(squeezed);
    }
  }
  std::vector<std::string> expected;
  for (std::string row : catalogueRows()) {
    std::string squeezed;
    for (char c : row)
      if (!(c == ' ' && !squeezed.empty() && squeezed.back() == ' '))
        squeezed += c;
    expected.push_back(squeezed);
  }
  EXPECT_EQ(documented, expected);
}

TEST(KernelAbiTest, CatalogueRules) {
  for (EntryKind entry : kEntryKinds) {
    SCOPED_TRACE(std::string(toString(entry)));
    std::set<std::string_view> names;
    int errorRecords = 0, tokenRange = 0;
    for (const ArgSpec &arg : entrySignature(entry)) {
      EXPECT_TRUE(names.insert(arg.name).second) << arg.name << " twice";
      EXPECT_EQ(findArg(entry, arg.name), &arg);
      errorRecords += arg.role == ArgRole::ErrorRecord;
      tokenRange += arg.role == ArgRole::TokenBegin ||
                    arg.role == ArgRole::TokenEnd;
      if (arg.role != ArgRole::Tensor && arg.role != ArgRole::ErrorRecord &&
          arg.role != ArgRole::Scratch) {
        EXPECT_EQ(arg.rank, 0) << arg.name;
      }
    }
    EXPECT_EQ(errorRecords, 1);
    // Dispatch spans all tokens and update_bias all experts; row kernels
    // take a host task's range.
    EXPECT_EQ(tokenRange, entry == EntryKind::Dispatch ||
                                  entry == EntryKind::UpdateBias
                              ? 0
                              : 2);
    // Capture and its layer come together.
    EXPECT_EQ(findArg(entry, "capture") != nullptr,
              findArg(entry, "layer") != nullptr);
  }
  EXPECT_EQ(findArg(EntryKind::Replay, "capture"), nullptr)
      << "replay re-runs recorded ids; it never captures";
  EXPECT_EQ(findArg(EntryKind::Dispatch, "topk_ids")->access, Access::Read);
  EXPECT_EQ(findArg(EntryKind::Route, "topk_ids")->access, Access::Write);
  EXPECT_EQ(sizeParamName("logits", 0), "logits.size0");
}

TEST(KernelAbiTest, WrittenManifestReadsBackAsWritten) {
  // rttest::exampleManifest() is a compiler-shaped DeepSeek-V3 manifest.
  rttest::TempDir dir;
  rttest::writeKernelDir(dir.path(), rttest::exampleManifest());
  Manifest original = moegen::rt::loadManifest(dir.path());
  original.kernels[0].registers = 40;
  original.kernels[0].spillStoreBytes = 0;

  std::string text = writeManifest(original);
  ManifestOptions options;
  options.expectedCompilerVersion = original.compilerVersion;
  options.checkFilesExist = false;
  Manifest back = parseManifest(text, original.path, options);
  EXPECT_EQ(writeManifest(back), text);
  EXPECT_EQ(back.specName, original.specName);
  EXPECT_EQ(back.arch.toString(), original.arch.toString());
  EXPECT_EQ(back.cubinFile, "kernels.cubin");
  EXPECT_EQ(back.ptxFile, "kernels.ptx");
  ASSERT_EQ(back.kernels.size(), original.kernels.size());
  for (size_t k = 0; k < back.kernels.size(); ++k) {
    const Kernel &a = original.kernels[k], &b = back.kernels[k];
    EXPECT_EQ(a.symbol, b.symbol);
    EXPECT_EQ(a.launch.blockDim, b.launch.blockDim);
    EXPECT_EQ(a.launch.tokensPerBlock, b.launch.tokensPerBlock);
    EXPECT_EQ(a.launch.lanesPerToken, b.launch.lanesPerToken);
    EXPECT_EQ(a.launch.dynamicSharedMemoryBytes,
              b.launch.dynamicSharedMemoryBytes);
    EXPECT_EQ(a.registers, b.registers);
    EXPECT_EQ(a.spillStoreBytes, b.spillStoreBytes);
    ASSERT_EQ(a.params.size(), b.params.size());
    for (size_t p = 0; p < a.params.size(); ++p) {
      EXPECT_EQ(a.params[p].name, b.params[p].name);
      EXPECT_EQ(a.params[p].kind, b.params[p].kind);
      EXPECT_EQ(a.params[p].dtype, b.params[p].dtype);
      EXPECT_EQ(a.params[p].ofParam, b.params[p].ofParam);
      EXPECT_EQ(a.params[p].dim, b.params[p].dim);
      ASSERT_EQ(a.params[p].shape.size(), b.params[p].shape.size());
      for (size_t d = 0; d < a.params[p].shape.size(); ++d)
        EXPECT_EQ(toString(a.params[p].shape[d]),
                  toString(b.params[p].shape[d]));
    }
  }
}

TEST(KernelAbiTest, ReaderRefusesWhatTheCatalogueForbids) {
  rttest::TempDir dir;
  auto manifest = rttest::exampleManifest();
  // A tensor the catalogue does not list for route.
  manifest["kernels"][0]["params"][0]["name"] = "forced_ids";
  ManifestOptions options;
  options.expectedCompilerVersion = manifest["compiler_version"];
  options.checkFilesExist = false;
  try {
    parseManifest(manifest.dump(), "m.json", options);
    FAIL() << "accepted forced_ids in a route kernel";
  } catch (const ManifestError &e) {
    EXPECT_NE(std::string(e.what()).find("'forced_ids' is not a tensor of a "
                                         "route kernel"),
              std::string::npos)
        << e.what();
  }
}

} // namespace
