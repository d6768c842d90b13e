//===- TuningDb.h - Autotuned kernel configs, per spec and token count -*- C++ -*-===//
//
// `moegen autotune` measures kernel configurations and records the winners
// here; `moegen run` (and whatever compiles kernels for a known token count)
// looks them up. A database is a JSON file (docs/autotune.md):
//
//   {"format": "moegen-tuning", "version": 1, "entries": [
//     {"spec_hash": "...", "spec_name": "...", "backend": "cpu",
//      "machine": "<CPU model>, <threads> threads",
//      "compiler_version": "0.1.0+codegen.<fingerprint>", "tokens": 4096,
//      "config": {"vector_width": 8, "tokens_per_task": 64,
//                 "topk": "insertion"},
//      "default_us": 120.5, "tuned_us": 101.2, "candidates": 24,
//      "date": "2026-12-01"}]}
//
// Entries of the GPU backends ("cuda", and "gpu-emu" for the host's GPU
// emulator) name the device ("NVIDIA H200, sm_90") as their machine and
// hold a GPU config: {"lanes_per_token": 8, "tokens_per_block": 16,
// "topk": "lane_lists"}.
//
// Entries are keyed by spec hash, backend, machine, compiler version and
// token bucket. A lookup sees only the entries of this machine and build:
// others stay in the file (a database may be shared) but are never used.
// A file that does not parse as a whole is refused, never half-used.
// Plain C++20 and nlohmann-json; no LLVM.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_TUNE_TUNINGDB_H
#define MOEGEN_COMPILER_TUNE_TUNINGDB_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moegen::tune {

/// A CPU kernel configuration; 0 / empty fields are the heuristic's.
struct CpuConfig {
  int64_t vectorWidth = 0;
  int64_t tokensPerTask = 0;
  std::string topk;

  bool operator==(const CpuConfig &) const = default;
  /// "vector_width=8 tokens_per_task=64 topk=insertion" (heuristic fields
  /// as "auto").
  std::string describe() const;
};

/// A GPU route kernel's schedule (NvptxCompileOptions); 0 / empty fields
/// are the heuristic's.
struct GpuConfig {
  int64_t lanesPerToken = 0;
  int64_t tokensPerBlock = 0;
  std::string topk;

  bool operator==(const GpuConfig &) const = default;
  /// "lanes_per_token=8 tokens_per_block=16 topk=lane_lists" (heuristic
  /// fields as "auto").
  std::string describe() const;
};

/// Whether `backend` is one whose entries hold a GpuConfig.
bool isGpuBackend(const std::string &backend);

/// The part of a key that says where an entry was measured.
struct Origin {
  std::string backend = "cpu";
  std::string machine;
  std::string compilerVersion;
};

struct Entry {
  std::string specHash;
  std::string specName;
  Origin origin;
  int64_t tokens = 0;
  /// The backend's config: `config` for "cpu", `gpu` for the GPU backends.
  CpuConfig config;
  GpuConfig gpu;
  double defaultUs = 0;
  double tunedUs = 0;
  int64_t candidates = 0;
  std::string date;
};

class TuningDb {
public:
  /// Reads `path`; a missing file is an empty database. nullopt with one
  /// line "PATH: error: ..." when the file is unreadable or malformed.
  static std::optional<TuningDb> load(const std::string &path,
                                      std::string &error);

  /// The entry for `specHash` measured at `origin` whose token bucket
  /// serves `tokens`: the largest bucket <= tokens, else the smallest.
  const Entry *lookup(const std::string &specHash, const Origin &origin,
                      int64_t tokens) const;
  /// Entries of other machines or builds (ignored by lookup).
  size_t foreignEntries(const Origin &origin) const;

  /// A GPU schedule for the calls of at least `minTokens` tokens (up to the
  /// next bucket's), from the entry measured at `entryTokens`.
  struct GpuBucket {
    int64_t minTokens = 0;
    int64_t entryTokens = 0;
    GpuConfig config;
  };
  /// The GPU entries for `specHash` measured at `origin` as token buckets
  /// (docs/kernel-abi.md, "A kernel per token bucket"): ascending, the
  /// first from 0 (the smallest bucket serves the T below it, as lookup
  /// does), a bucket whose schedule is the one below's merged into it.
  /// Empty when there is no entry.
  std::vector<GpuBucket> gpuBuckets(const std::string &specHash,
                                    const Origin &origin) const;

  const std::vector<Entry> &entries() const { return all; }

  /// Merges `updates` into the file at `path` under a lock (PATH.lock), so
  /// that processes tuning at once keep each other's entries: re-reads the
  /// file, replaces entries with the same key, writes it atomically. "" or
  /// one line; a malformed file already there is left alone.
  static std::string merge(const std::string &path,
                           const std::vector<Entry> &updates);

private:
  std::vector<Entry> all;
};

/// Whether `config` is a CPU configuration the kernels accept (for any
/// spec); "" if so, else why not. The autotuner's validity model and the
/// check on every config read from a database.
std::string checkCpuConfig(const CpuConfig &config);

/// Whether `config` is a GPU schedule the NVPTX backend accepts for a
/// route of `numExperts` experts; "" if so, else why not. Lanes per token
/// are a power of two up to a warp, a block is whole warps of at most 1024
/// threads, and, with `maxSharedBytes` > 0 (the arch's opt-in limit), the
/// block's rows (an estimate: four 4-byte rows a token) fit its shared
/// memory. The autotuner's validity model and the check on every GPU
/// config read from a database.
std::string checkGpuConfig(const GpuConfig &config, int64_t numExperts,
                           int64_t maxSharedBytes = 0);

/// One candidate's timing: the median of its samples, and whether it was
/// dropped early as clearly losing.
struct Measurement {
  double median = 0;
  bool pruned = false;
};
/// Takes up to `reps` samples from `sample` (any unit); after three, stops
/// when their median exceeds 1.5 x `best` (> 0: the best median so far),
/// so that clearly losing candidates cost three samples. The autotuners'
/// rule, on every backend.
Measurement measure(int reps, double best,
                    const std::function<double()> &sample);

/// The candidate to record, given the default's median (candidate 0) and
/// the best one's: the best, unless it beats the default by less than
/// `minGain` (a fraction), then the default, so that a tuned configuration
/// is never slower than the default beyond noise.
size_t winner(size_t bestIndex, double bestMedian, double defaultMedian,
              double minGain);

/// The CPU's model name from /proc/cpuinfo, or "unknown".
std::string cpuModel();

/// Where CPU tunings of this build on this machine come from: backend
/// "cpu", the CPU model and the worker threads (0: one per hardware
/// thread), and `compilerVersion` (moegen's version and the code
/// generator's fingerprint). Entries of any other origin are ignored.
Origin cpuOrigin(unsigned threads, const std::string &compilerVersion);

} // namespace moegen::tune

#endif // MOEGEN_COMPILER_TUNE_TUNINGDB_H
