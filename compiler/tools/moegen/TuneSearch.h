//===- TuneSearch.h - The search loop both autotuners share -----*- C++ -*-===//
//
// `moegen autotune` on the CPU (AutotuneCommand.cpp) and on a GPU
// (AutotuneGpu.cpp) differ in how a candidate is compiled, checked and
// timed; the rest is here: compiling every candidate on every hardware
// thread, the search of one token count (tune::measure and tune::winner,
// with progress), and its report line and database entry.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_TOOLS_MOEGEN_TUNESEARCH_H
#define MOEGEN_COMPILER_TOOLS_MOEGEN_TUNESEARCH_H

#include "compiler/spec/RoutingSpec.h"
#include "compiler/tune/TuningDb.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moegen::tool {

/// Runs `compile(i)` for every i < count on every hardware thread (each
/// compile has its own MLIR context), with a count on a terminal: "" or
/// why candidate i does not compile.
std::vector<std::string>
compileInParallel(size_t count,
                  const std::function<std::string(size_t)> &compile);

/// A candidate ready to time at one token count: `skipped` says why it is
/// not (it failed or differs from the default), else `sample` takes one
/// sample, in microseconds.
struct CandidateRun {
  std::string skipped;
  std::function<double()> sample;
};

/// The outcome of one token count: the candidate to record (0: the
/// default) and the medians, in microseconds.
struct BucketChoice {
  size_t index = 0;
  double tunedUs = 0, defaultUs = 0;
};

/// Times the candidates `prepare` readies (nullopt: one that did not
/// compile, passed over in silence) at `tokens` tokens, candidate 0 being
/// the default: tune::measure with `reps` samples, a progress bar with the
/// best so far on a terminal and a line elsewhere, and tune::winner with
/// `minGain`.
BucketChoice
searchBucket(int64_t tokens, size_t count, int reps, double minGain,
             const std::function<std::string(size_t)> &describe,
             const std::function<std::optional<CandidateRun>(size_t)> &prepare);

/// Prints the report line of `choice` ("SPEC T=N: default .. us, tuned ..
/// us (..x): CONFIG") and returns its database entry, the config left to
/// the caller.
tune::Entry reportBucket(const RoutingSpec &spec, const tune::Origin &origin,
                         int64_t tokens, const BucketChoice &choice,
                         size_t candidates, const std::string &winner,
                         const std::string &date);

} // namespace moegen::tool

#endif // MOEGEN_COMPILER_TOOLS_MOEGEN_TUNESEARCH_H
