//===- TuningDb.cpp - Autotuned kernel configs ----------------------------===//

#include "compiler/tune/TuningDb.h"

#include "support/AtomicFile.h"
#include "support/Quote.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace moegen::tune {

namespace {

constexpr const char *kFormat = "moegen-tuning";
constexpr int kVersion = 1;
/// A database is a few hundred bytes per entry; the cap keeps a mistaken
/// path from being read whole.
constexpr std::streamoff kMaxBytes = 64 << 20;

using nlohmann::json;

/// The entries of `document`, or why it is not a tuning database.
std::optional<std::vector<Entry>> parseEntries(const json &document,
                                               std::string &why) {
  auto fail = [&](const std::string &message) {
    why = message;
    return std::nullopt;
  };
  if (!document.is_object() || document.value("format", "") != kFormat)
    return fail("not a moegen tuning database (no \"format\": \"" +
                std::string(kFormat) + "\")");
  if (!document.contains("version") || document["version"] != kVersion)
    return fail("tuning database version " +
                (document.contains("version") ? document["version"].dump()
                                              : std::string("(none)")) +
                ", this moegen reads version " + std::to_string(kVersion));
  if (!document.contains("entries") || !document["entries"].is_array())
    return fail("\"entries\" must be an array");
  std::vector<Entry> entries;
  size_t index = 0;
  for (const json &item : document["entries"]) {
    std::string where = "entries[" + std::to_string(index++) + "]";
    try {
      Entry entry;
      entry.specHash = item.at("spec_hash").get<std::string>();
      entry.specName = item.value("spec_name", "");
      entry.origin.backend = item.at("backend").get<std::string>();
      entry.origin.machine = item.at("machine").get<std::string>();
      entry.origin.compilerVersion =
          item.at("compiler_version").get<std::string>();
      entry.tokens = item.at("tokens").get<int64_t>();
      const json &config = item.at("config");
      const bool gpu = isGpuBackend(entry.origin.backend);
      if (!gpu && entry.origin.backend != "cpu")
        return fail(where + ".backend is " + entry.origin.backend +
                    ": must be cpu, cuda or gpu-emu");
      static constexpr const char *kGpuKeys[] = {"lanes_per_token",
                                                 "tokens_per_block", "topk"};
      static constexpr const char *kCpuKeys[] = {"vector_width",
                                                 "tokens_per_task", "topk"};
      for (const char *key : gpu ? kGpuKeys : kCpuKeys)
        if (!config.is_object() || !config.contains(key))
          return fail(where + ".config." + key + ": missing (the config of a " +
                      entry.origin.backend + " entry holds " +
                      (gpu ? "lanes_per_token, tokens_per_block and topk"
                           : "vector_width, tokens_per_task and topk") +
                      ")");
      if (gpu) {
        entry.gpu.lanesPerToken = config.at("lanes_per_token").get<int64_t>();
        entry.gpu.tokensPerBlock =
            config.at("tokens_per_block").get<int64_t>();
        entry.gpu.topk = config.at("topk").get<std::string>();
        if (std::string why = checkGpuConfig(entry.gpu, 0); !why.empty())
          return fail(where + ".config: " + why);
      } else {
        entry.config.vectorWidth = config.at("vector_width").get<int64_t>();
        entry.config.tokensPerTask =
            config.at("tokens_per_task").get<int64_t>();
        entry.config.topk = config.at("topk").get<std::string>();
      }
      entry.defaultUs = item.value("default_us", 0.0);
      entry.tunedUs = item.value("tuned_us", 0.0);
      entry.candidates = item.value("candidates", int64_t{0});
      entry.date = item.value("date", "");
      if (entry.tokens < 1)
        return fail(where + ".tokens must be >= 1");
      if (entry.config.vectorWidth < 0 || entry.config.tokensPerTask < 0)
        return fail(where + ".config: sizes must be >= 0");
      entries.push_back(std::move(entry));
    } catch (const json::exception &e) {
      return fail(where + ": " + e.what());
    }
  }
  return entries;
}

json toJson(const Entry &entry) {
  json config =
      isGpuBackend(entry.origin.backend)
          ? json{{"lanes_per_token", entry.gpu.lanesPerToken},
                 {"tokens_per_block", entry.gpu.tokensPerBlock},
                 {"topk", entry.gpu.topk}}
          : json{{"vector_width", entry.config.vectorWidth},
                 {"tokens_per_task", entry.config.tokensPerTask},
                 {"topk", entry.config.topk}};
  return {{"spec_hash", entry.specHash},
          {"spec_name", entry.specName},
          {"backend", entry.origin.backend},
          {"machine", entry.origin.machine},
          {"compiler_version", entry.origin.compilerVersion},
          {"tokens", entry.tokens},
          {"config", config},
          {"default_us", entry.defaultUs},
          {"tuned_us", entry.tunedUs},
          {"candidates", entry.candidates},
          {"date", entry.date}};
}

bool sameKey(const Entry &a, const Entry &b) {
  return a.specHash == b.specHash && a.origin.backend == b.origin.backend &&
         a.origin.machine == b.origin.machine &&
         a.origin.compilerVersion == b.origin.compilerVersion &&
         a.tokens == b.tokens;
}

bool sameOrigin(const Origin &a, const Origin &b) {
  return a.backend == b.backend && a.machine == b.machine &&
         a.compilerVersion == b.compilerVersion;
}

} // namespace

std::string CpuConfig::describe() const {
  auto number = [](int64_t v) {
    return v ? std::to_string(v) : std::string("auto");
  };
  return "vector_width=" + number(vectorWidth) +
         " tokens_per_task=" + number(tokensPerTask) +
         " topk=" + (topk.empty() ? std::string("auto") : topk);
}

std::string GpuConfig::describe() const {
  auto number = [](int64_t v) {
    return v ? std::to_string(v) : std::string("auto");
  };
  return "lanes_per_token=" + number(lanesPerToken) +
         " tokens_per_block=" + number(tokensPerBlock) +
         " topk=" + (topk.empty() ? std::string("auto") : topk);
}

bool isGpuBackend(const std::string &backend) {
  return backend == "cuda" || backend == "gpu-emu";
}

std::optional<TuningDb> TuningDb::load(const std::string &path,
                                       std::string &error) {
  TuningDb db;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) && !ec)
    return db;
  if (!std::filesystem::is_regular_file(path, ec)) {
    error = support::quotePath(path) +
            ": error: the tuning database is not a regular file";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = support::quotePath(path) +
            ": error: cannot read the tuning database: " + std::strerror(errno);
    return std::nullopt;
  }
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  if (size > kMaxBytes) {
    error = support::quotePath(path) + ": error: the tuning database is " +
            std::to_string(size) + " bytes; at most 64 MiB";
    return std::nullopt;
  }
  in.seekg(0);
  std::stringstream text;
  text << in.rdbuf();
  json document = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) {
    error = support::quotePath(path) +
            ": error: not a moegen tuning database: not valid JSON";
    return std::nullopt;
  }
  std::string why;
  std::optional<std::vector<Entry>> entries = parseEntries(document, why);
  if (!entries) {
    error = support::quotePath(path) + ": error: " +
            support::escape(why, support::QuoteStyle{240});
    return std::nullopt;
  }
  db.all = std::move(*entries);
  return db;
}

const Entry *TuningDb::lookup(const std::string &specHash,
                              const Origin &origin, int64_t tokens) const {
  const Entry *below = nullptr, *smallest = nullptr;
  for (const Entry &entry : all) {
    if (entry.specHash != specHash || !sameOrigin(entry.origin, origin))
      continue;
    if (entry.tokens <= tokens && (!below || entry.tokens > below->tokens))
      below = &entry;
    if (!smallest || entry.tokens < smallest->tokens)
      smallest = &entry;
  }
  return below ? below : smallest;
}

size_t TuningDb::foreignEntries(const Origin &origin) const {
  return size_t(std::count_if(all.begin(), all.end(), [&](const Entry &e) {
    return !sameOrigin(e.origin, origin);
  }));
}

std::vector<TuningDb::GpuBucket>
TuningDb::gpuBuckets(const std::string &specHash, const Origin &origin) const {
  std::vector<const Entry *> entries;
  for (const Entry &entry : all)
    if (entry.specHash == specHash && sameOrigin(entry.origin, origin))
      entries.push_back(&entry);
  std::sort(entries.begin(), entries.end(),
            [](const Entry *a, const Entry *b) { return a->tokens < b->tokens; });
  std::vector<GpuBucket> buckets;
  for (const Entry *entry : entries)
    if (buckets.empty() || !(buckets.back().config == entry->gpu))
      buckets.push_back(
          {buckets.empty() ? 0 : entry->tokens, entry->tokens, entry->gpu});
  return buckets;
}

std::string TuningDb::merge(const std::string &path,
                            const std::vector<Entry> &updates) {
  const std::string lockPath = path + ".lock";
  int lock = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0)
    return support::quotePath(path) +
           ": error: cannot write the tuning database: " + std::strerror(errno);
  // Released when the descriptor closes, whatever happens below.
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{lock};
  while (::flock(lock, LOCK_EX) != 0)
    if (errno != EINTR)
      return support::quotePath(lockPath) +
             ": error: cannot lock the tuning database: " + std::strerror(errno);

  std::string error;
  std::optional<TuningDb> current = load(path, error);
  if (!current)
    return error + " (left as it is)";
  std::vector<Entry> entries = current->all;
  for (const Entry &update : updates) {
    auto same = std::find_if(entries.begin(), entries.end(),
                             [&](const Entry &e) { return sameKey(e, update); });
    if (same != entries.end())
      *same = update;
    else
      entries.push_back(update);
  }
  json document = {{"format", kFormat}, {"version", kVersion},
                   {"entries", json::array()}};
  for (const Entry &entry : entries)
    document["entries"].push_back(toJson(entry));
  if (!support::writeFileAtomically(path, document.dump(2) + "\n", error))
    return support::quotePath(path) +
           ": error: cannot write the tuning database: " + error;
  return "";
}

std::string checkCpuConfig(const CpuConfig &config) {
  const int64_t w = config.vectorWidth;
  if (w != 0 && (w < 1 || w > 64 || (w & (w - 1)) != 0))
    return "vector_width " + std::to_string(w) +
           " must be a power of two in [1, 64] (0: the heuristic's)";
  if (config.tokensPerTask < 0 || config.tokensPerTask > 65536)
    return "tokens_per_task " + std::to_string(config.tokensPerTask) +
           " must be in [1, 65536] (0: the heuristic's)";
  if (!config.topk.empty() && config.topk != "argmax_passes" &&
      config.topk != "insertion" && config.topk != "lane_lists" &&
      config.topk != "token_lanes" && config.topk != "lane_tree")
    return "topk " + support::quote(config.topk) +
           " must be argmax_passes, insertion, lane_lists, lane_tree or "
           "token_lanes (empty: the heuristic's)";
  // Every method fits every row (lane lists sort rows of at most 16 chunks
  // a lane in registers and stream wider ones), and every width too.
  return "";
}

std::string checkGpuConfig(const GpuConfig &config, int64_t numExperts,
                           int64_t maxSharedBytes) {
  const int64_t lanes = config.lanesPerToken, tokens = config.tokensPerBlock;
  if (lanes < 0 || lanes > 32 || (lanes & (lanes - 1)) != 0)
    return "lanes_per_token " + std::to_string(lanes) +
           " must be a power of two up to 32 (0: the heuristic's)";
  if (tokens < 0 || (lanes == 0 && tokens > 32))
    return "tokens_per_block " + std::to_string(tokens) +
           " must be in [1, 32], or more with lanes_per_token given (0: "
           "the heuristic's)";
  if (lanes > 0 && tokens > 0 && ((tokens * lanes) % 32 || tokens * lanes > 1024))
    return "tokens_per_block " + std::to_string(tokens) +
           " with lanes_per_token " + std::to_string(lanes) +
           ": a block is whole warps of at most 1024 threads";
  if (!config.topk.empty() && config.topk != "argmax_passes" &&
      config.topk != "insertion" && config.topk != "lane_lists")
    return "topk " + support::escape(config.topk) +
           " must be argmax_passes, insertion or lane_lists on the GPU "
           "(empty: the heuristic's)";
  if (maxSharedBytes > 0 && tokens > 0 &&
      4 * 4 * numExperts * tokens > maxSharedBytes)
    return "tokens_per_block " + std::to_string(tokens) + " at " +
           std::to_string(numExperts) +
           " experts: the block's rows would not fit its " +
           std::to_string(maxSharedBytes) + " bytes of shared memory";
  return "";
}

Measurement measure(int reps, double best,
                    const std::function<double()> &sample) {
  std::vector<double> samples;
  Measurement result;
  for (int rep = 0; rep < reps; ++rep) {
    samples.push_back(sample());
    if (best > 0 && samples.size() == 3) {
      std::vector<double> sorted = samples;
      std::sort(sorted.begin(), sorted.end());
      if (sorted[1] > 1.5 * best) {
        result.pruned = true;
        break;
      }
    }
  }
  std::sort(samples.begin(), samples.end());
  result.median = samples.empty() ? 0 : samples[samples.size() / 2];
  return result;
}

size_t winner(size_t bestIndex, double bestMedian, double defaultMedian,
              double minGain) {
  return bestMedian > defaultMedian * (1.0 - minGain) ? 0 : bestIndex;
}

std::string cpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos)
        return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

Origin cpuOrigin(unsigned threads, const std::string &compilerVersion) {
  Origin origin;
  origin.backend = "cpu";
  const unsigned count =
      threads ? threads : std::max(1u, std::thread::hardware_concurrency());
  origin.machine = cpuModel() + ", " + std::to_string(count) + " threads";
  origin.compilerVersion = compilerVersion;
  return origin;
}

} // namespace moegen::tune
