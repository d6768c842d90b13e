//===- TuneSearch.cpp - The search loop both autotuners share -------------===//

#include "compiler/tools/moegen/TuneSearch.h"

#include "compiler/spec/SpecParser.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

namespace moegen::tool {

std::vector<std::string>
compileInParallel(size_t count,
                  const std::function<std::string(size_t)> &compile) {
  llvm::raw_ostream &log = llvm::errs();
  const bool tty = log.is_displayed();
  std::vector<std::string> errors(count);
  std::atomic<size_t> next{0}, done{0};
  std::mutex logMutex;
  auto worker = [&] {
    for (size_t i = next++; i < count; i = next++) {
      errors[i] = compile(i);
      size_t finished = ++done;
      if (tty) {
        std::lock_guard<std::mutex> lock(logMutex);
        log << "\r  compiled " << finished << "/" << count;
        log.flush();
      }
    }
  };
  const size_t workers =
      std::clamp<size_t>(std::thread::hardware_concurrency(), 1, count);
  std::vector<std::thread> threads;
  for (size_t w = 1; w < workers; ++w)
    threads.emplace_back(worker);
  worker();
  for (std::thread &thread : threads)
    thread.join();
  log << (tty ? "\n" : "") << "  compiled " << count << " candidates\n";
  return errors;
}

BucketChoice
searchBucket(int64_t tokens, size_t count, int reps, double minGain,
             const std::function<std::string(size_t)> &describe,
             const std::function<std::optional<CandidateRun>(size_t)> &prepare) {
  llvm::raw_ostream &log = llvm::errs();
  const bool tty = log.is_displayed();
  BucketChoice choice;
  double best = 0;
  size_t bestIndex = 0;
  for (size_t i = 0; i < count; ++i) {
    std::optional<CandidateRun> run = prepare(i);
    if (!run)
      continue;
    if (!run->skipped.empty()) {
      log << "  T=" << tokens << " skipped " << describe(i) << ": "
          << run->skipped << "\n";
      continue;
    }
    const tune::Measurement timed = tune::measure(reps, best, run->sample);
    if (i == 0)
      choice.defaultUs = timed.median;
    if (!timed.pruned && (best == 0 || timed.median < best)) {
      best = timed.median;
      bestIndex = i;
    }
    if (tty)
      log << llvm::format("\r  T=%lld [%zu/%zu] best %.2f us (%s)   ",
                          (long long)tokens, i + 1, count, best,
                          describe(bestIndex).c_str());
  }
  if (!tty)
    log << llvm::format("  T=%lld: %zu candidates, best %.2f us (%s)",
                        (long long)tokens, count, best,
                        describe(bestIndex).c_str());
  log << "\n";
  choice.index = tune::winner(bestIndex, best, choice.defaultUs, minGain);
  choice.tunedUs = choice.index == 0 ? choice.defaultUs : best;
  return choice;
}

tune::Entry reportBucket(const RoutingSpec &spec, const tune::Origin &origin,
                         int64_t tokens, const BucketChoice &choice,
                         size_t candidates, const std::string &winner,
                         const std::string &date) {
  llvm::outs() << llvm::format(
      "%s T=%lld: default %.2f us, tuned %.2f us (%.2fx): %s\n",
      spec.name.c_str(), (long long)tokens, choice.defaultUs, choice.tunedUs,
      choice.tunedUs > 0 ? choice.defaultUs / choice.tunedUs : 1.0,
      choice.index == 0 ? "the default" : winner.c_str());
  tune::Entry entry;
  entry.specHash = specHash(spec);
  entry.specName = spec.name;
  entry.origin = origin;
  entry.tokens = tokens;
  entry.defaultUs = choice.defaultUs;
  entry.tunedUs = choice.tunedUs;
  entry.candidates = int64_t(candidates);
  entry.date = date;
  return entry;
}

} // namespace moegen::tool
