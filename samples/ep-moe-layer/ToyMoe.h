//===- ToyMoe.h - What the EP samples share -------------------*- C++ -*-===//
//
// The pieces both EP samples (EpMoeLayer.cpp, EpReplay.cpp) use: a CPU
// router compiled from a template (with dispatch, permute and combine), logits
// in the spec's dtype, a toy expert, one MoE block over an EP group checked
// bit for bit against the same tokens on one rank through the generated
// kernels (route -> permute -> experts -> combine), and main()'s MPI and
// error handling.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_SAMPLES_EP_MOE_LAYER_TOYMOE_H
#define MOEGEN_SAMPLES_EP_MOE_LAYER_TOYMOE_H

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/HostRouter.h"
#include "runtime/ep/ExpertParallel.h"
#include "runtime/npy/HalfFloat.h"

#include "llvm/Support/Error.h"

#include <CLI/CLI.hpp>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moegen::samples {

/// The CPU backend's router for `specPath`, with dispatch, permute and
/// combine over f32 rows, and capture and replay when asked. Refuses specs
/// with a score bias or a hash table (exit 2).
inline std::unique_ptr<rt::HostRouter>
compileRouter(const std::string &specPath, bool captureAndReplay) {
  std::string error;
  std::optional<RoutingSpec> spec = parseRoutingSpecFile(specPath, error);
  if (!spec)
    throw rt::Error(rt::Error::Kind::InvalidArgument, error);
  spec->capture |= captureAndReplay;
  spec->replay |= captureAndReplay;
  spec->dispatch = spec->permute = true;
  spec->hiddenDType = LogitsDType::F32;
  auto compiled = cpu::CpuHostRouter::compile(*spec, {});
  if (!compiled)
    throw rt::Error(rt::Error::Kind::Compile,
                    llvm::toString(compiled.takeError()));
  const rt::RouterFacts &facts = (*compiled)->facts();
  if (facts.hashSelection || facts.scoreBias)
    throw rt::Error(rt::Error::Kind::InvalidArgument,
                    specPath + ": the sample routes plain logits (no bias, "
                               "no hash table); pick another template");
  return std::move(*compiled);
}

/// Appends `value` as one logit of the spec's dtype.
inline void appendLogit(const rt::RouterFacts &facts, float value,
                        std::vector<uint8_t> &out) {
  uint8_t bytes[4];
  if (facts.logits == rt::RouterFacts::Logits::F32) {
    std::memcpy(bytes, &value, 4);
    out.insert(out.end(), bytes, bytes + 4);
    return;
  }
  uint16_t bits = facts.logits == rt::RouterFacts::Logits::BF16
                      ? npy::floatToBf16(value)
                      : npy::floatToHalf(value);
  std::memcpy(bytes, &bits, 2);
  out.insert(out.end(), bytes, bytes + 2);
}

/// Toy expert e of E: y = x (1 + e / E) + e / E.
inline float toyExpert(int32_t e, int64_t experts, float x) {
  float scale = static_cast<float>(e) / static_cast<float>(experts);
  return x * (1.0f + scale) + scale;
}

/// One rank's routing of its tokens: ids and weights, and dispatch's
/// metadata for them (which the one-rank computation permutes by).
struct Routing {
  std::vector<int32_t> ids, counts, offsets, sortedSlots, slotPositions;
  std::vector<float> weights;

  Routing(int64_t tokens, const rt::RouterFacts &facts)
      : ids(std::size_t(std::max<int64_t>(1, tokens * facts.topK))),
        counts(std::size_t(facts.numExperts)),
        offsets(std::size_t(facts.numExperts + 1)), sortedSlots(ids.size()),
        slotPositions(ids.size()), weights(ids.size()) {
    ids.resize(std::size_t(tokens * facts.topK));
    weights.resize(ids.size());
  }
  /// Points `call`'s outputs (dispatch's included) here.
  void attach(rt::HostRouteCall &call) {
    call.topkIds = ids.data();
    call.topkWeights = weights.data();
    call.expertCounts = counts.data();
    call.expertOffsets = offsets.data();
    call.sortedSlots = sortedSlots.data();
    call.slotPositions = slotPositions.data();
  }
};

/// One MoE block over `comm`: dispatch `hidden` ([tokens, hiddenSize] fp32)
/// with contiguous placement, apply the toy experts, combine with the
/// routing weights. Returns the largest difference against this rank's
/// tokens on this rank alone, through the router's generated kernels:
/// permute by dispatch's sorted slots, the toy experts over each expert's
/// contiguous rows, combine by the slot positions (0: bit for bit, which
/// combine's contract promises).
inline double moeBlock(rt::ep::Communicator &comm, rt::HostRouter &router,
                       int64_t hiddenSize, const std::vector<float> &hidden,
                       const Routing &routing) {
  const int64_t experts = router.facts().numExperts, k = router.facts().topK;
  const auto tokens = static_cast<int64_t>(routing.ids.size()) / k;
  rt::ep::ExpertPlacement placement =
      rt::ep::ExpertPlacement::contiguous(experts, comm.size());
  rt::ep::Dispatched dispatched = rt::ep::dispatch(
      comm, std::as_bytes(std::span<const float>(hidden)),
      rt::ep::RowType::F32, hiddenSize, routing.ids, tokens, k, placement);
  std::vector<int32_t> local = placement.expertsOf(comm.rank());
  for (std::size_t e = 0; e < local.size(); ++e)
    for (int64_t row = dispatched.expertOffsets[e];
         row < dispatched.expertOffsets[e + 1]; ++row)
      for (int64_t h = 0; h < hiddenSize; ++h) {
        std::byte *at = dispatched.rows.data() + (row * hiddenSize + h) * 4;
        float x;
        std::memcpy(&x, at, 4);
        float y = toyExpert(local[e], experts, x);
        std::memcpy(at, &y, 4);
      }
  std::vector<std::byte> combined =
      rt::ep::combine(comm, dispatched.handle, dispatched.rows, routing.weights);

  // The same block on this rank alone: permute, experts, combine.
  std::vector<float> rows(std::size_t(std::max<int64_t>(1, tokens * k * hiddenSize)));
  std::vector<float> single(std::size_t(std::max<int64_t>(1, tokens * hiddenSize)));
  rt::HostPermuteCall permute;
  permute.numTokens = tokens;
  permute.hiddenSize = hiddenSize;
  permute.hidden = hidden.data();
  permute.sortedSlots = routing.sortedSlots.data();
  permute.permuted = rows.data();
  if (std::string failed = router.permute(permute); !failed.empty())
    throw rt::Error(rt::Error::Kind::Kernel, failed);
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t row = routing.offsets[e]; row < routing.offsets[e + 1]; ++row)
      for (int64_t h = 0; h < hiddenSize; ++h)
        rows[row * hiddenSize + h] =
            toyExpert(int32_t(e), experts, rows[row * hiddenSize + h]);
  rt::HostCombineCall combine;
  combine.numTokens = tokens;
  combine.hiddenSize = hiddenSize;
  combine.topkWeights = routing.weights.data();
  combine.slotPositions = routing.slotPositions.data();
  combine.expertOutput = rows.data();
  combine.combined = single.data();
  if (std::string failed = router.combine(combine); !failed.empty())
    throw rt::Error(rt::Error::Kind::Kernel, failed);

  double worst = 0.0;
  for (int64_t i = 0; i < tokens * hiddenSize; ++i) {
    float got;
    std::memcpy(&got, combined.data() + i * 4, 4);
    worst = std::max(worst, std::fabs(double(got) - double(single[i])));
  }
  return worst;
}

/// main() of an EP sample: MPI around `body`, the command line parsed
/// first; an error is one line on stderr, exit 2 for bad input, else 1.
inline int runUnderMpi(int argc, char **argv, CLI::App &app,
                       const char *program, const std::function<int()> &body) {
  MPI_Init(&argc, &argv);
  int status = 2;
  try {
    app.parse(argc, argv);
    status = body();
  } catch (const CLI::ParseError &e) {
    status = app.exit(e) == 0 ? 0 : 2;
  } catch (const rt::Error &e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    status = e.kind() == rt::Error::Kind::InvalidArgument ? 2 : 1;
  }
  MPI_Finalize();
  return status;
}

} // namespace moegen::samples

#endif // MOEGEN_SAMPLES_EP_MOE_LAYER_TOYMOE_H
