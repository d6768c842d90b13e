//===- GpuSuiteCheck.cpp - GPU tests that need only the runtime -----------===//
//
// moegen-gpu-check: runs a suite written by tests/gpu/make_gpu_suite.py on
// the GPU and compares every output with the CPU backend's. It links the
// runtime alone (no LLVM, no MLIR), so it runs on GPU machines that have
// no compiler: build and make the suite where the compiler is, copy the
// binary and the suite to the GPU machine, run it there.
//
//   moegen-gpu-check SUITE             check every case, exit 1 on a mismatch
//   moegen-gpu-check --bench KERNELS [--tokens 8192,65536] [--reps 200]
//                                      time route (+ dispatch) of a kernel
//                                      directory on random logits (CUDA
//                                      events, 256 MiB written before each
//                                      call: a cold L2; the median)
//   moegen-gpu-check --tune CANDIDATES --db PATH [--tokens ...] [--reps 50]
//                                      time the schedules of moegen
//                                      autotune --emit-candidates and write
//                                      the winners to a tuning database
//
// Comparison (as GpuBackendTest): ids equal but for at most 0.1% + 1 slots
// (fp32 near-ties: the backends sum in different orders); weights within
// 1e-5 relative where the ids agree; dispatch metadata and the capture
// equal whenever all ids are; invalid forced ids give the CPU's message.
// Cases with permute and combine run them on the GPU's own routing, at
// the spec's hidden size and at one that leaves a tail chunk, against
// their contract computed here (a row copy; an f32 fused-multiply-add
// chain in slot order, rounded once): bit for bit. And the whole MoE
// block, route -> permute -> experts -> combine on the GPU, against the EP
// path (dispatch, experts, combine) over a one-rank NCCL communicator
// (MOEGEN_NCCL_LIBRARY, else libnccl.so.2; skipped, and said so, without
// one), from host buffers and from device buffers (DeviceExpertParallel.h,
// the router's combine kernel): bit for bit, as combine's contract
// promises.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/RouterInputs.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/cuda/CudaHostRouter.h"
#include "runtime/cuda/DeviceTimer.h"
#include "runtime/ep/DeviceExpertParallel.h"
#include "runtime/ep/ExpertParallel.h"
#include "runtime/ep/NcclCommunicator.h"
#include "runtime/npy/HalfFloat.h"
#include "runtime/npy/Npy.h"
#include "tests/gpu/GpuTune.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace rt = moegen::rt;
namespace npy = moegen::npy;

[[noreturn]] void fatal(const std::string &message) {
  throw rt::Error(rt::Error::Kind::Io, message);
}

npy::Array readArray(const fs::path &path) {
  std::string error;
  std::optional<npy::Array> array = npy::readNpy(path.string(), error);
  if (!array)
    fatal(error);
  return std::move(*array);
}

template <typename T> std::vector<T> values(const npy::Array &array) {
  std::vector<T> out(array.data.size() / sizeof(T));
  std::memcpy(out.data(), array.data.data(), out.size() * sizeof(T));
  return out;
}

std::map<std::string, std::string> readCase(const fs::path &file) {
  std::ifstream in(file);
  if (!in)
    fatal(file.string() + ": cannot read");
  std::map<std::string, std::string> facts;
  for (std::string line; std::getline(in, line);) {
    size_t space = line.find(' ');
    if (space != std::string::npos)
      facts[line.substr(0, space)] = line.substr(space + 1);
  }
  return facts;
}

/// Device copies of a benchmark's inputs, kept alive for the calls.
class Uploads {
public:
  explicit Uploads(const rt::CudaRouter &router) : router(router) {}
  CUdeviceptr add(const void *data, size_t bytes) {
    buffers.push_back(router.allocate(std::max<size_t>(bytes, 8)));
    if (data && bytes)
      buffers.back().upload(data, bytes, nullptr);
    return buffers.back().get();
  }

private:
  const rt::CudaRouter &router;
  std::vector<rt::DeviceBuffer> buffers;
};

/// Compares one call with the CPU backend's outputs in `expected`; returns
/// the problems, one per line, or "".
std::string compare(const rt::HostRunResult &gpu, const fs::path &expected,
                    int64_t k) {
  std::ostringstream problems;
  std::vector<int32_t> gpuIds = values<int32_t>(*gpu.find("topk_ids"));
  std::vector<float> gpuWeights = values<float>(*gpu.find("topk_weights"));
  std::vector<int32_t> ids =
      values<int32_t>(readArray(expected / "topk_ids.npy"));
  std::vector<float> weights =
      values<float>(readArray(expected / "topk_weights.npy"));
  size_t differing = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (gpuIds[i] != ids[i]) {
      ++differing;
      continue;
    }
    float tolerance = 1e-5f * std::max(1.0f, std::fabs(weights[i]));
    if (!(std::fabs(gpuWeights[i] - weights[i]) <= tolerance)) {
      problems << "weight of slot " << i << " (token " << i / k << "): GPU "
               << gpuWeights[i] << ", CPU " << weights[i] << "\n";
      break;
    }
  }
  if (differing > ids.size() / 1000 + 1)
    problems << differing << " of " << ids.size()
             << " ids differ from the CPU's (more than near-ties explain)\n";
  // The shared expert's gate: the same sigmoid, approximate on the GPU.
  if (fs::path file = expected / "shared_gate.npy"; fs::exists(file)) {
    std::vector<float> want = values<float>(readArray(file));
    const npy::Array *got = gpu.find("shared_gate");
    std::vector<float> have = got ? values<float>(*got) : std::vector<float>{};
    for (size_t t = 0; t < want.size(); ++t)
      if (have.size() != want.size() ||
          !(std::fabs(have[t] - want[t]) <=
            1e-5f * std::fabs(want[t]) + 1e-30f)) {
        problems << "shared gate of token " << t << ": GPU "
                 << (have.size() == want.size() ? std::to_string(have[t])
                                                : std::string("missing"))
                 << ", CPU " << want[t] << "\n";
        break;
      }
  }
  if (differing != 0)
    return problems.str();
  // Dispatch metadata and the capture follow from the ids: equal whenever
  // all ids are.
  for (const char *name : {"expert_counts", "expert_offsets", "sorted_slots",
                           "slot_positions", "capture"}) {
    fs::path file = expected / (std::string(name) + ".npy");
    if (!fs::exists(file))
      continue;
    const npy::Array *got = gpu.find(name);
    if (!got || got->data != readArray(file).data)
      problems << name << ".npy differs from the CPU's\n";
  }
  return problems.str();
}

/// One call on the inputs in `dir`, through the runtime's checks and host
/// router as `moegen run` makes them: replay with `forcedFile` when given,
/// else route or route_hash with every input the kernels take.
rt::HostRunResult runCall(rt::HostRouter &router, const fs::path &dir,
                          const std::string &forcedFile,
                          const std::string &logitsFile = "logits.npy") {
  const rt::RouterFacts &facts = router.facts();
  rt::InputPaths paths{{"logits", (dir / logitsFile).string()}};
  auto add = [&](const std::string &name, const std::string &file) {
    paths[name] = (dir / file).string();
  };
  if (!forcedFile.empty()) {
    add("forced_ids", forcedFile);
  } else {
    if (facts.scoreBias)
      add("bias", "bias.npy");
    if (facts.hashSelection) {
      add("token_ids", "token_ids.npy");
      add("hash_table", "hash_table.npy");
    }
    if (facts.capture)
      add("capture", "capture.npy");
  }
  if (facts.sharedGate)
    add("shared_gate_logits", "shared_gate_logits.npy");
  rt::checkInputsUsed(facts, paths, std::nullopt);
  rt::RouterInputMap inputs = rt::readInputs(paths);
  rt::checkInputs(facts, inputs, 0);
  return rt::runOnHost(router, inputs, 0);
}

/// Rows of `count` random values of the hidden type, as bytes.
std::vector<uint8_t> randomRows(const rt::RouterFacts &facts, size_t count,
                                std::mt19937 &rng) {
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<uint8_t> bytes(std::max<size_t>(1, count * facts.hiddenBytes()));
  for (size_t i = 0; i < count; ++i) {
    float x = normal(rng);
    if (facts.hidden == rt::RouterFacts::Logits::F32) {
      std::memcpy(&bytes[i * 4], &x, 4);
      continue;
    }
    uint16_t bits = facts.hidden == rt::RouterFacts::Logits::BF16
                        ? npy::floatToBf16(x)
                        : npy::floatToHalf(x);
    std::memcpy(&bytes[i * 2], &bits, 2);
  }
  return bytes;
}

float rowValue(const rt::RouterFacts &facts, const uint8_t *bytes, size_t i) {
  if (facts.hidden == rt::RouterFacts::Logits::F32) {
    float x;
    std::memcpy(&x, bytes + i * 4, 4);
    return x;
  }
  uint16_t bits;
  std::memcpy(&bits, bytes + i * 2, 2);
  return facts.hidden == rt::RouterFacts::Logits::BF16 ? npy::bf16ToFloat(bits)
                                                       : npy::halfToFloat(bits);
}

/// Permute and combine of T tokens on the GPU, by the routing `result`,
/// against their contract; "" or what differs.
std::string checkPermuteCombine(rt::CudaHostRouter &router,
                                const rt::HostRunResult &result, int64_t t,
                                int64_t hidden) {
  const rt::RouterFacts &facts = router.facts();
  const int64_t k = facts.topK;
  const size_t bytes = facts.hiddenBytes(), slots = size_t(t * k);
  const npy::Array *weights = result.find("topk_weights");
  const npy::Array *sorted = result.find("sorted_slots");
  const npy::Array *positions = result.find("slot_positions");
  if (!weights || !sorted || !positions)
    return "the routing gave no weights or dispatch outputs\n";
  const int32_t *sortedSlots = sorted->as<int32_t>();
  const int32_t *slotPositions = positions->as<int32_t>();
  // The GPU's dispatch is checked elsewhere; here its outputs index rows,
  // so a broken one is reported, never followed out of bounds.
  for (size_t s = 0; s < slots; ++s)
    if (sortedSlots[s] < 0 || size_t(sortedSlots[s]) >= slots ||
        slotPositions[s] < 0 || size_t(slotPositions[s]) >= slots)
      return "dispatch: sorted_slots or slot_positions entry " +
             std::to_string(s) + " is outside [0, T*k)\n";
  std::mt19937 rng(uint32_t(t * 31 + hidden));
  std::vector<uint8_t> rows = randomRows(facts, size_t(t * hidden), rng);
  std::vector<uint8_t> permuted(std::max<size_t>(1, slots * hidden * bytes));
  rt::HostPermuteCall permute;
  permute.numTokens = t;
  permute.hiddenSize = hidden;
  permute.hidden = rows.data();
  permute.sortedSlots = sortedSlots;
  permute.permuted = permuted.data();
  if (std::string error = router.permute(permute); !error.empty())
    return "permute: kernel error: " + error + "\n";
  for (size_t p = 0; p < slots; ++p) {
    const size_t token = size_t(sortedSlots[p]) / size_t(k);
    if (std::memcmp(&permuted[p * hidden * bytes],
                    &rows[token * hidden * bytes], hidden * bytes) != 0)
      return "permute: row " + std::to_string(p) + " is not token " +
             std::to_string(token) + "'s\n";
  }

  std::vector<uint8_t> outputs = randomRows(facts, slots * hidden, rng);
  std::vector<uint8_t> combined(std::max<size_t>(1, t * hidden * bytes));
  std::vector<float> weightValues(slots);
  for (size_t s = 0; s < slots; ++s)
    weightValues[s] = weights->as<float>()[s];
  rt::HostCombineCall combine;
  combine.numTokens = t;
  combine.hiddenSize = hidden;
  combine.topkWeights = weightValues.data();
  combine.slotPositions = slotPositions;
  combine.expertOutput = outputs.data();
  combine.combined = combined.data();
  if (std::string error = router.combine(combine); !error.empty())
    return "combine: kernel error: " + error + "\n";
  for (int64_t token = 0; token < t; ++token)
    for (int64_t h = 0; h < hidden; ++h) {
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        const size_t row = size_t(slotPositions[token * k + j]);
        sum = std::fma(weightValues[size_t(token * k + j)],
                       rowValue(facts, outputs.data(), row * hidden + h), sum);
      }
      std::vector<uint8_t> want(bytes);
      if (facts.hidden == rt::RouterFacts::Logits::F32) {
        std::memcpy(want.data(), &sum, 4);
      } else {
        uint16_t bits = facts.hidden == rt::RouterFacts::Logits::BF16
                            ? npy::floatToBf16(sum)
                            : npy::floatToHalf(sum);
        std::memcpy(want.data(), &bits, 2);
      }
      if (std::memcmp(want.data(),
                      &combined[size_t(token * hidden + h) * bytes],
                      bytes) != 0)
        return "combine: combined[" + std::to_string(token) + "][" +
               std::to_string(h) + "] differs from the f32 fma chain\n";
    }
  return "";
}

/// Toy expert e of E on a row of the hidden type, in f32, rounded back.
void toyExpert(const rt::RouterFacts &facts, int64_t e, uint8_t *row,
               int64_t hidden) {
  const float scale = float(e) / float(facts.numExperts);
  for (int64_t h = 0; h < hidden; ++h) {
    float y = rowValue(facts, row, size_t(h)) * (1.0f + scale) + scale;
    if (facts.hidden == rt::RouterFacts::Logits::F32) {
      std::memcpy(row + h * 4, &y, 4);
    } else {
      uint16_t bits = facts.hidden == rt::RouterFacts::Logits::BF16
                          ? npy::floatToBf16(y)
                          : npy::floatToHalf(y);
      std::memcpy(row + h * 2, &bits, 2);
    }
  }
}

/// A one-rank NCCL communicator on GPU 0 from MOEGEN_NCCL_LIBRARY (else
/// libnccl.so.2), or null with the reason in `unavailable`.
std::unique_ptr<rt::ep::NcclCommunicator> oneRankNccl(std::string &unavailable) {
  const char *path = std::getenv("MOEGEN_NCCL_LIBRARY");
  const std::string library =
      path && *path ? path : rt::ep::NcclCommunicator::kDefaultLibrary;
  try {
    return std::make_unique<rt::ep::NcclCommunicator>(
        rt::ep::NcclCommunicator::uniqueId(library), 0, 1, 0, nullptr, library);
  } catch (const rt::Error &error) {
    unavailable = error.what();
    return nullptr;
  }
}

/// The MoE block of T tokens two ways: the generated kernels on the GPU
/// (permute, toy experts over each expert's rows, combine) and the EP
/// operations over a one-rank NCCL communicator. "" when equal, "skip: ..."
/// when NCCL is not there or the row type has no EP form, else what
/// differs.
std::string checkEpOneRank(rt::CudaHostRouter &router,
                           const rt::HostRunResult &result, int64_t t,
                           int64_t hidden) {
  const rt::RouterFacts &facts = router.facts();
  if (facts.hidden == rt::RouterFacts::Logits::F16)
    return "skip: EP moves f32 and bf16 rows, not f16";
  const int64_t k = facts.topK, e = facts.numExperts;
  const size_t bytes = facts.hiddenBytes(), slots = size_t(t * k);
  const npy::Array *ids = result.find("topk_ids");
  const npy::Array *weights = result.find("topk_weights");
  const npy::Array *offsets = result.find("expert_offsets");
  const npy::Array *sorted = result.find("sorted_slots");
  const npy::Array *positions = result.find("slot_positions");
  if (!ids || !weights || !offsets || !sorted || !positions)
    return "the routing gave no ids, weights or dispatch outputs\n";
  const int32_t *offset = offsets->as<int32_t>();
  // Unused (top-p) and dropped (capacity) slots are counted nowhere.
  const bool allSlots = !facts.unusedSlots && facts.capacityFactor == 0;
  bool partition = offset[0] == 0 && size_t(offset[e]) <= slots &&
                   (!allSlots || size_t(offset[e]) == slots);
  for (int64_t x = 0; x < e && partition; ++x)
    partition = offset[x] <= offset[x + 1];
  if (!partition)
    return "dispatch: expert_offsets is not a partition of [0, T*k)\n";
  std::mt19937 rng(uint32_t(t * 17 + hidden));
  std::vector<uint8_t> rows = randomRows(facts, size_t(t * hidden), rng);

  // The generated kernels.
  std::vector<uint8_t> permuted(std::max<size_t>(1, slots * hidden * bytes));
  rt::HostPermuteCall permute;
  permute.numTokens = t;
  permute.hiddenSize = hidden;
  permute.hidden = rows.data();
  permute.sortedSlots = sorted->as<int32_t>();
  permute.permuted = permuted.data();
  if (std::string error = router.permute(permute); !error.empty())
    return "permute: kernel error: " + error + "\n";
  for (int64_t x = 0; x < e; ++x)
    for (int32_t row = offset[x]; row < offset[x + 1]; ++row)
      toyExpert(facts, x, &permuted[size_t(row) * hidden * bytes], hidden);
  std::vector<uint8_t> kernels(std::max<size_t>(1, size_t(t * hidden) * bytes));
  rt::HostCombineCall combine;
  combine.numTokens = t;
  combine.hiddenSize = hidden;
  combine.topkWeights = weights->as<float>();
  combine.slotPositions = positions->as<int32_t>();
  combine.expertOutput = permuted.data();
  combine.combined = kernels.data();
  if (std::string error = router.combine(combine); !error.empty())
    return "combine: kernel error: " + error + "\n";

  // The EP path on one rank; it moves every chosen slot, so it has no
  // counterpart for slots a router leaves unused or a capacity drops.
  if (!allSlots)
    return "skip: EP moves every slot; this router leaves some without a row";
  std::string unavailable;
  std::unique_ptr<rt::ep::NcclCommunicator> comm = oneRankNccl(unavailable);
  if (!comm)
    return "skip: " + unavailable;
  const rt::ep::RowType rowType = facts.hidden == rt::RouterFacts::Logits::F32
                                      ? rt::ep::RowType::F32
                                      : rt::ep::RowType::BF16;
  std::vector<std::byte> ep;
  try {
    rt::ep::ExpertPlacement placement =
        rt::ep::ExpertPlacement::contiguous(e, 1);
    rt::ep::Dispatched dispatched = rt::ep::dispatch(
        *comm,
        std::as_bytes(
            std::span<const uint8_t>(rows.data(), t * hidden * bytes)),
        rowType, hidden, std::span<const int32_t>(ids->as<int32_t>(), slots), t,
        k, placement);
    for (int64_t x = 0; x < e; ++x)
      for (int64_t row = dispatched.expertOffsets[x];
           row < dispatched.expertOffsets[x + 1]; ++row)
        toyExpert(facts, x,
                  reinterpret_cast<uint8_t *>(dispatched.rows.data()) +
                      size_t(row) * hidden * bytes,
                  hidden);
    ep = rt::ep::combine(*comm, dispatched.handle, dispatched.rows,
                         std::span<const float>(weights->as<float>(), slots));
  } catch (const rt::Error &error) {
    return std::string("EP over one NCCL rank: ") + error.what() + "\n";
  }
  if (ep.size() != size_t(t * hidden) * bytes ||
      (t > 0 && std::memcmp(ep.data(), kernels.data(), ep.size()) != 0))
    return "EP over one NCCL rank differs from the generated kernels\n";

  // The same from device buffers (DeviceExpertParallel.h): rows, ids and
  // weights stay on the GPU, the combine is the router's kernel.
  try {
    const rt::CudaRouter &device = router.device();
    auto upload = [&](const void *host, size_t size) {
      rt::DeviceBuffer buffer = device.allocate(std::max<size_t>(1, size));
      if (size)
        buffer.upload(host, size, nullptr);
      return buffer;
    };
    const size_t rowBytes = size_t(hidden) * bytes;
    rt::DeviceBuffer rowsOnDevice = upload(rows.data(), size_t(t) * rowBytes),
                     idsOnDevice = upload(ids->as<int32_t>(), slots * 4),
                     weightsOnDevice = upload(weights->as<float>(), slots * 4),
                     combined = device.allocate(
                         std::max<size_t>(1, size_t(t) * rowBytes));
    rt::ep::DeviceDispatched dispatched = rt::ep::dispatch(
        *comm, rowsOnDevice.get(), rowType, hidden, idsOnDevice.get(), t, k,
        rt::ep::ExpertPlacement::contiguous(e, 1));
    const size_t grouped = size_t(dispatched.handle.groupedRows);
    std::vector<uint8_t> expertRows(std::max<size_t>(1, grouped * rowBytes));
    if (grouped) {
      const rt::CudaDriver &driver = device.driver();
      rt::ScopedContext scope(driver, device.context());
      driver.check(driver.memcpyDtoHAsync(expertRows.data(), dispatched.rows,
                                          grouped * rowBytes, nullptr),
                   "cuMemcpyDtoHAsync(expert rows)");
    }
    for (int64_t x = 0; x < e; ++x)
      for (int64_t row = dispatched.expertOffsets[x];
           row < dispatched.expertOffsets[x + 1]; ++row)
        toyExpert(facts, x, &expertRows[size_t(row) * rowBytes], hidden);
    rt::DeviceBuffer outputs = upload(expertRows.data(), grouped * rowBytes);
    rt::ep::combine(*comm, device, dispatched.handle, outputs.get(),
                    weightsOnDevice.get(), combined.get());
    std::vector<uint8_t> back(std::max<size_t>(1, size_t(t) * rowBytes));
    if (t > 0)
      combined.download(back.data(), size_t(t) * rowBytes, nullptr);
    if (t > 0 && std::memcmp(back.data(), kernels.data(), size_t(t) * rowBytes))
      return "EP on device buffers over one NCCL rank differs from the "
             "generated kernels\n";
  } catch (const rt::Error &error) {
    return std::string("EP on device buffers over one NCCL rank: ") +
           error.what() + "\n";
  }
  return "";
}

/// The update_bias kernel against its definition (docs/semantics.md, "Bias
/// update"), bit for bit, on loads with the mean hit exactly, and its
/// message for a negative load.
std::string checkUpdateBias(rt::HostRouter &router) {
  const int64_t e = router.facts().numExperts;
  std::mt19937 rng{static_cast<uint32_t>(e)};
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::uniform_int_distribution<int32_t> load(0, 40);
  std::vector<float> bias(e), updated(e);
  std::vector<int32_t> counts(e);
  for (float &b : bias)
    b = normal(rng);
  for (int32_t &c : counts)
    c = load(rng);
  // Expert 0: no load and no bias, so that its update is the rate itself.
  counts[0] = 0;
  bias[0] = 0.0f;
  int64_t sum = 0;
  for (int32_t c : counts)
    sum += c;
  // One expert exactly at the mean when the sum allows it.
  if (sum % e == 0)
    counts[1] = int32_t(sum / e);
  sum = 0;
  for (int32_t c : counts)
    sum += c;
  rt::HostUpdateBiasCall call{bias.data(), counts.data(), updated.data()};
  if (std::string error = router.updateBias(call); !error.empty())
    return "update_bias: kernel error: " + error + "\n";
  // The rate, from expert 0: below any mean but an empty one.
  const float rate = updated[0];
  for (int64_t x = 0; x < e; ++x) {
    const int64_t difference = sum - e * int64_t(counts[x]);
    const float want = bias[x] + (difference > 0   ? rate
                                  : difference < 0 ? -rate
                                                   : 0.0f);
    if (std::memcmp(&want, &updated[x], 4) != 0)
      return "update_bias: expert " + std::to_string(x) + " got " +
             std::to_string(updated[x]) + ", expected " + std::to_string(want) +
             "\n";
  }
  counts[e - 1] = -3;
  const std::string expected = "expert_counts[" + std::to_string(e - 1) +
                               "] = -3: a load must not be negative";
  if (std::string error = router.updateBias(call); error != expected)
    return "update_bias: a negative load gives '" + error + "', expected '" +
           expected + "'\n";
  return "";
}

int checkSuite(const fs::path &suite) {
  std::ifstream list(suite / "cases.txt");
  if (!list)
    fatal((suite / "cases.txt").string() +
          ": cannot read (make the suite with tests/gpu/make_gpu_suite.py)");
  const rt::CudaDriver &driver = rt::CudaDriver::get();
  std::printf("moegen-gpu-check: %s, CUDA driver %d\n", suite.c_str(),
              driver.version());
  int failed = 0, calls = 0;
  for (std::string name; std::getline(list, name);) {
    if (name.empty())
      continue;
    const fs::path dir = suite / name;
    std::map<std::string, std::string> facts = readCase(dir / "case.txt");
    rt::CudaHostRouter router(rt::CudaRouter::load((dir / "kernels").string()));
    const int64_t k = router.facts().topK;
    std::string problems;
    std::istringstream tokens(facts.at("tokens"));
    for (std::string t; tokens >> t;) {
      const fs::path inputs = dir / ("t" + t);
      auto check = [&](const std::string &entry, const std::string &forced,
                       const std::string &expected) {
        ++calls;
        rt::HostRunResult result = runCall(router, inputs, forced);
        if (!result.error.empty()) {
          problems +=
              "T=" + t + " " + entry + ": kernel error: " + result.error + "\n";
          return;
        }
        std::string found = compare(result, inputs / expected, k);
        if (!found.empty())
          problems += "T=" + t + " " + entry + ": " + found;
      };
      check("route", "", "route");
      // Non-finite logits: the GPU reports the first as the CPU does.
      if (fs::exists(inputs / "bad_route.txt")) {
        ++calls;
        std::ifstream want(inputs / "bad_route.txt");
        std::string expected;
        std::getline(want, expected);
        std::string error = runCall(router, inputs, "", "bad_logits.npy").error;
        if (error != expected)
          problems += "T=" + t + " non-finite logits: GPU says '" + error +
                      "', CPU says '" + expected + "'\n";
      }
      if (router.facts().permute) {
        rt::HostRunResult routed = runCall(router, inputs, "");
        bool kernelsOk = true;
        for (int64_t hidden : {router.facts().hiddenSize, int64_t(1000)}) {
          ++calls;
          if (std::string found =
                  checkPermuteCombine(router, routed, std::stoll(t), hidden);
              !found.empty()) {
            problems += "T=" + t + " H=" + std::to_string(hidden) + " " + found;
            kernelsOk = false;
          }
        }
        // The EP path is compared with kernels known to be right.
        ++calls;
        std::string ep =
            kernelsOk ? checkEpOneRank(router, routed, std::stoll(t), 1000)
                      : "skip: the kernels failed above";
        if (ep.rfind("skip: ", 0) == 0)
          std::printf("     %s T=%s: EP one-rank check %s\n", name.c_str(),
                      t.c_str(), ep.c_str());
        else if (!ep.empty())
          problems += "T=" + t + " " + ep;
      }
      if (router.facts().updateBias && t == "1") {
        ++calls;
        problems += checkUpdateBias(router);
      }
      if (router.facts().replay) {
        check("replay", "forced_ids.npy", "replay");
        ++calls;
        std::string error = runCall(router, inputs, "bad_forced_ids.npy").error;
        std::ifstream want(inputs / "bad_replay.txt");
        std::string expected;
        std::getline(want, expected);
        if (error != expected)
          problems += "T=" + t + " invalid forced ids: GPU says '" + error +
                      "', CPU says '" + expected + "'\n";
      }
    }
    std::printf("%-4s %s (%s, %s)\n", problems.empty() ? "ok" : "FAIL",
                name.c_str(), router.device().manifest().archText.c_str(),
                router.device().loadedBinaryKind());
    if (!problems.empty()) {
      std::printf("%s", problems.c_str());
      ++failed;
    }
  }
  std::printf("moegen-gpu-check: %d calls, %d case(s) failed\n", calls, failed);
  return failed ? 1 : 0;
}

/// "" when the dispatch outputs on the device are the stable counting sort
/// (by expert, then slot) of the ids on the device, else what differs.
std::string checkDispatch(const rt::CudaRouter &router,
                          const rt::RouteOutputs &out, int64_t t) {
  const int64_t e = router.manifest().numExperts, k = router.manifest().topK;
  const size_t slots = size_t(t * k);
  std::vector<int32_t> ids(slots), counts(e), offsets(e + 1), sorted(slots),
      positions(slots);
  const rt::CudaDriver &driver = router.driver();
  rt::ScopedContext scope(driver, router.context());
  auto download = [&](std::vector<int32_t> &host, CUdeviceptr device) {
    if (!host.empty())
      driver.check(
          driver.memcpyDtoHAsync(host.data(), device, host.size() * 4, nullptr),
          "cuMemcpyDtoHAsync");
  };
  download(ids, out.topkIds);
  download(counts, out.expertCounts);
  download(offsets, out.expertOffsets);
  download(sorted, out.sortedSlots);
  download(positions, out.slotPositions);
  driver.check(driver.streamSynchronize(nullptr), "cuStreamSynchronize");
  // -1 is an unused slot of a top-p router: counted nowhere, position -1,
  // and the sorted slots past the used ones are -1.
  std::vector<int32_t> fill(e + 1, 0);
  for (int32_t id : ids) {
    if (id == -1)
      continue;
    if (id < 0 || id >= e)
      return "id " + std::to_string(id) + " out of range";
    ++fill[id + 1];
  }
  for (int64_t x = 0; x < e; ++x) {
    if (counts[x] != fill[x + 1])
      return "expert_counts[" + std::to_string(x) + "]";
    fill[x + 1] += fill[x];
  }
  if (offsets != fill)
    return "expert_offsets";
  for (size_t s = 0; s < slots; ++s) {
    if (ids[s] == -1) {
      if (positions[s] != -1)
        return "slot " + std::to_string(s) + " (unused)";
      continue;
    }
    int32_t position = fill[ids[s]]++;
    if (sorted[position] != int32_t(s) || positions[s] != position)
      return "slot " + std::to_string(s);
  }
  for (size_t p = size_t(offsets[e]); p < slots; ++p)
    if (sorted[p] != -1)
      return "sorted_slots[" + std::to_string(p) + "] past the used slots";
  return "";
}

/// The hidden rows of a routed call moved two ways at the manifest's
/// hidden size: the generated permute and combine kernels (events, cold
/// L2), and the device EP dispatch and combine over a one-rank NCCL
/// communicator (host clock around each synchronous call: the ids read
/// back, the plan, the batched copies, NCCL's exchange with itself and the
/// combine kernel).
void benchRowMovement(
    const rt::CudaRouter &router, const rt::RouteOutputs &routed, int64_t t,
    int reps,
    const std::function<rt::TimingSummary(const std::function<void(CUstream)> &)>
        &time) {
  const rt::Manifest &manifest = router.manifest();
  const int64_t hidden = manifest.hiddenSize, k = manifest.topK;
  const rt::DType dtype = *manifest.hiddenDType;
  const size_t bytes = rt::byteSize(dtype), slots = size_t(t * k);
  std::mt19937 rng(7);
  const std::vector<uint8_t> rows =
      randomRows(rt::routerFactsOf(manifest), size_t(t * hidden), rng);
  Uploads uploads(router);
  const CUdeviceptr hiddenRows = uploads.add(rows.data(), rows.size());
  const CUdeviceptr permuted = uploads.add(nullptr, slots * hidden * bytes);
  const CUdeviceptr combined = uploads.add(nullptr, rows.size());
  rt::PermuteArgs permute;
  permute.numTokens = t;
  permute.hiddenSize = hidden;
  permute.hidden = hiddenRows;
  permute.sortedSlots = routed.sortedSlots;
  permute.permuted = permuted;
  rt::CombineArgs combine;
  combine.numTokens = t;
  combine.hiddenSize = hidden;
  combine.topkWeights = routed.topkWeights;
  combine.slotPositions = routed.slotPositions;
  combine.expertOutput = permuted;
  combine.combined = combined;
  const rt::TimingSummary permuteTime = time(
      [&](CUstream stream) { router.permute(permute, stream); });
  const rt::TimingSummary combineTime = time(
      [&](CUstream stream) { router.combine(combine, stream); });
  router.checkErrors(nullptr);
  const double rowBytes = double(hidden) * double(bytes);
  // Permute reads T rows and writes T*k; combine reads T*k and writes T.
  const double moved = (double(t) + double(slots)) * rowBytes;
  std::printf("T=%lld H=%lld %s: permute %.2f us (%.1f GB/s), combine %.2f "
              "us (%.1f GB/s)\n",
              static_cast<long long>(t), static_cast<long long>(hidden),
              std::string(rt::toString(dtype)).c_str(), permuteTime.medianUs,
              moved / permuteTime.medianUs / 1e3, combineTime.medianUs,
              moved / combineTime.medianUs / 1e3);

  if (dtype == rt::DType::F16) {
    std::printf("T=%lld: EP skipped: it moves f32 and bf16 rows\n",
                static_cast<long long>(t));
    return;
  }
  std::string unavailable;
  std::unique_ptr<rt::ep::NcclCommunicator> comm = oneRankNccl(unavailable);
  if (!comm) {
    std::printf("T=%lld: EP skipped: %s\n", static_cast<long long>(t),
                unavailable.c_str());
    return;
  }
  const rt::ep::RowType rowType =
      dtype == rt::DType::F32 ? rt::ep::RowType::F32 : rt::ep::RowType::BF16;
  const rt::ep::ExpertPlacement placement =
      rt::ep::ExpertPlacement::contiguous(manifest.numExperts, 1);
  auto hostMicroseconds = [&](const std::function<void()> &call) {
    call(); // warm-up
    std::vector<double> samples;
    for (int r = 0; r < std::min(reps, 50); ++r) {
      const auto start = std::chrono::steady_clock::now();
      call();
      samples.push_back(std::chrono::duration<double, std::micro>(
                            std::chrono::steady_clock::now() - start)
                            .count());
    }
    return rt::summarize(samples);
  };
  // A workspace, as a layer called again and again keeps one: the
  // exchange buffers are allocated on the warm-up call only.
  rt::ep::DeviceWorkspace workspace;
  rt::ep::DeviceDispatched dispatched;
  const rt::TimingSummary dispatchTime = hostMicroseconds([&] {
    dispatched = rt::ep::dispatch(*comm, hiddenRows, rowType, hidden,
                                  routed.topkIds, t, k, placement, false,
                                  &workspace);
  });
  const rt::TimingSummary epCombineTime = hostMicroseconds([&] {
    rt::ep::combine(*comm, router, dispatched.handle, dispatched.rows,
                    routed.topkWeights, combined, &workspace);
  });
  const double grouped = double(dispatched.handle.groupedRows) * rowBytes;
  std::printf("T=%lld: EP on device buffers, one NCCL rank: dispatch %.1f us "
              "(p10 %.1f, p90 %.1f; %.1f GB/s of rows grouped), combine %.1f "
              "us (p10 %.1f, p90 %.1f; %.1f GB/s of expert outputs)\n",
              static_cast<long long>(t), dispatchTime.medianUs,
              dispatchTime.p10Us, dispatchTime.p90Us,
              grouped / dispatchTime.medianUs / 1e3, epCombineTime.medianUs,
              epCombineTime.p10Us, epCombineTime.p90Us,
              grouped / epCombineTime.medianUs / 1e3);
}

int bench(const fs::path &kernels, const std::vector<int64_t> &tokenCounts,
          int reps) {
  std::unique_ptr<rt::CudaRouter> router =
      rt::CudaRouter::load(kernels.string());
  const rt::Manifest &manifest = router->manifest();
  const int64_t e = manifest.numExperts, k = manifest.topK;
  const rt::Kernel *route = manifest.find(rt::EntryKind::Route);
  if (!route || manifest.logitsDType != rt::DType::F32) {
    std::fprintf(stderr,
                 "moegen-gpu-check --bench: %s needs a route kernel "
                 "and f32 logits\n",
                 kernels.c_str());
    return 2;
  }
  const bool bias = route->findParam("bias") >= 0;
  const bool capture = route->findParam("capture") >= 0;
  const bool dispatch = manifest.find(rt::EntryKind::Dispatch) != nullptr;
  rt::DeviceTimer timer(router->driver(), router->context());
  std::printf("%s: %s, E = %lld, k = %lld, %s\n", kernels.c_str(),
              manifest.specName.c_str(), static_cast<long long>(e),
              static_cast<long long>(k),
              dispatch ? "route + dispatch" : "route");
  bool failed = false;
  for (int64_t t : tokenCounts) {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> logits(t * e), biasValues(e);
    for (float &x : logits)
      x = normal(rng);
    for (float &b : biasValues)
      b = 0.1f * normal(rng);
    Uploads uploads(*router);
    rt::RouteInputs in;
    in.numTokens = t;
    in.logits = uploads.add(logits.data(), logits.size() * 4);
    if (bias)
      in.bias = uploads.add(biasValues.data(), biasValues.size() * 4);
    if (capture) {
      in.capture = uploads.add(nullptr, t * k * 4);
      in.captureLayers = 1;
    }
    // A gated spec's shared-expert gate logits (f32 like the logits); the
    // buffers hold its gate.
    if (route->findParam("shared_gate_logits") >= 0)
      in.sharedGateLogits = uploads.add(logits.data(), t * 4);
    rt::RouteBuffers buffers = router->allocateBuffers(t, dispatch);
    rt::RouteOutputs out = router->route(in, buffers, nullptr); // warm-up
    router->checkErrors(nullptr, out.error);
    // Each sample: 256 MiB written (L2 cold), then one call between two
    // events; three warm-up calls first.
    auto time = [&](const std::function<void(CUstream)> &call) {
      for (int warm = 0; warm < 3; ++warm)
        timer.sampleUs(call, nullptr);
      std::vector<double> samples;
      for (int r = 0; r < reps; ++r)
        samples.push_back(timer.sampleUs(call, nullptr));
      return rt::summarize(samples);
    };
    const rt::TimingSummary routed =
        time([&](CUstream stream) { router->route(in, buffers, stream); });
    double bytes = t * e * 4.0 + t * k * 8.0;
    if (dispatch)
      bytes += (2 * e + 1) * 4.0 + t * k * 8.0;
    // Up to 2,048 slots the call is one kernel (a fused dispatch,
    // docs/kernel-abi.md); then the pair it replaces is timed beside it.
    const bool fused =
        dispatch && router->fusesDispatch(rt::EntryKind::Route, t);
    std::printf("T=%lld: %.2f us/call (median of %d, cold L2; p10 %.2f, p90 "
                "%.2f), %.1f GB/s of %.2f MB moved%s\n",
                static_cast<long long>(t), routed.medianUs, reps, routed.p10Us,
                routed.p90Us, bytes / routed.medianUs / 1e3, bytes / 1e6,
                fused ? " (one kernel: the route with a fused dispatch)" : "");
    // Dispatch outputs filled with -1 bytes before a form is timed, so
    // that its check sees what it wrote, not what the one before left.
    auto poison = [&] {
      const rt::CudaDriver &driver = router->driver();
      rt::ScopedContext scope(driver, router->context());
      for (auto [pointer, bytes] :
           {std::pair{out.expertCounts, size_t(e) * 4},
            std::pair{out.expertOffsets, size_t(e + 1) * 4},
            std::pair{out.sortedSlots, size_t(t * k) * 4},
            std::pair{out.slotPositions, size_t(t * k) * 4}})
        if (pointer && bytes)
          driver.check(driver.memsetD8Async(pointer, 0xff, bytes, nullptr),
                       "cuMemsetD8Async");
    };
    // A timed form of the dispatch, and whether what it wrote is the
    // stable counting sort of the GPU's ids.
    auto reportDispatch = [&](const char *form,
                              const rt::TimingSummary &timing,
                              const char *whose, const std::string &problem) {
      std::printf("T=%lld: %s %.2f us/call (p10 %.2f, p90 %.2f); %s%s\n",
                  static_cast<long long>(t), form, timing.medianUs,
                  timing.p10Us, timing.p90Us, whose,
                  problem.empty()
                      ? "equal to the stable counting sort of the GPU's ids"
                      : ("WRONG: " + problem).c_str());
      if (!problem.empty())
        failed = true;
    };
    if (fused) {
      std::string problem = checkDispatch(*router, out, t);
      poison();
      rt::RouteOutputs routeOnly = out;
      routeOnly.expertCounts = routeOnly.expertOffsets = 0;
      routeOnly.sortedSlots = routeOnly.slotPositions = 0;
      const rt::TimingSummary pair = time([&](CUstream stream) {
        router->route(in, routeOnly, stream);
        router->dispatch(out.topkIds, t, out, stream);
      });
      if (problem.empty())
        if (std::string pairProblem = checkDispatch(*router, out, t);
            !pairProblem.empty())
          problem = "the pair's: " + pairProblem;
      reportDispatch("route, then dispatch (two kernels)", pair,
                     "the fused kernel's and the pair's dispatch ", problem);
    }
    if (dispatch) {
      poison();
      const rt::TimingSummary alone = time([&](CUstream stream) {
        router->dispatch(out.topkIds, t, out, stream);
      });
      reportDispatch("dispatch alone", alone, "",
                     checkDispatch(*router, out, t));
    }
    if (dispatch && manifest.find(rt::EntryKind::Permute) &&
        manifest.hiddenDType)
      benchRowMovement(*router, out, t, reps, time);
  }
  return failed ? 1 : 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"moegen-gpu-check: run a suite of make_gpu_suite.py on the GPU "
               "and compare with the CPU backend's outputs, or time a kernel "
               "directory (--bench)"};
  std::string suite, kernels, candidates, db;
  std::vector<int64_t> tokens{8192, 65536};
  int reps = 200;
  app.add_option("suite", suite, "Suite directory (make_gpu_suite.py --out)");
  app.add_option("--bench", kernels,
                 "Time route (+ dispatch) of this kernel directory (CUDA "
                 "events, cold L2)");
  CLI::Option *tuneOption = app.add_option(
      "--tune", candidates,
      "Time the candidates of moegen autotune --emit-candidates in this "
      "directory and write the winners to --db");
  CLI::Option *dbOption =
      app.add_option("--db", db, "The tuning database --tune writes")
          ->needs(tuneOption);
  tuneOption->needs(dbOption);
  CLI::Option *tokensOption =
      app.add_option("--tokens", tokens,
                     "Token counts to time (comma-separated)")
          ->delimiter(',')
          ->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  CLI::Option *repsOption =
      app.add_option("--reps", reps,
                     "Timed repetitions per token count (--bench: 200, "
                     "--tune: 50)")
          ->check(CLI::Range(1, 100000));
  const char *usage = "usage: moegen-gpu-check SUITE\n"
                      "       moegen-gpu-check --bench KERNELS "
                      "[--tokens T,T...] [--reps N]\n"
                      "       moegen-gpu-check --tune CANDIDATES --db PATH "
                      "[--tokens T,T...] [--reps N]\n";
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0) // --help
      return app.exit(e);
    std::fprintf(stderr, "moegen-gpu-check: error: %s\n%s", e.what(), usage);
    return 2;
  }
  // Exactly one of the three modes; --tokens and --reps time something.
  if (int(!suite.empty()) + int(!kernels.empty()) + int(!candidates.empty()) !=
      1) {
    std::fprintf(stderr, "%s", usage);
    return 2;
  }
  for (CLI::Option *timing : {tokensOption, repsOption})
    if (!suite.empty() && timing->count()) {
      std::fprintf(stderr,
                   "moegen-gpu-check: error: %s requires --bench or --tune\n%s",
                   timing->get_name().c_str(), usage);
      return 2;
    }
  try {
    if (!candidates.empty())
      return moegen::gpucheck::tuneCandidates(
          candidates,
          tokensOption->count()
              ? tokens
              : std::vector<int64_t>{1, 64, 1024, 8192, 65536},
          repsOption->count() ? reps : 50, db);
    if (!kernels.empty())
      return bench(kernels, tokens, reps);
    return checkSuite(suite);
  } catch (const rt::InputError &e) {
    std::fprintf(stderr, "%s\n", e.format("moegen-gpu-check").c_str());
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "moegen-gpu-check: %s\n", e.what());
    return 2;
  }
}
