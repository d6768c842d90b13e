//===- AutotuneGpu.cpp - moegen autotune --backend cuda|gpu-emu -----------===//
//
// The GPU half of `moegen autotune`. For each spec: the route kernel's
// candidate schedules (lanes per token, tokens per block, top-k method) that
// the validity model keeps (tune::checkGpuConfig, with the arch's shared
// memory), each compiled once, in parallel, and loaded on the device; then,
// per token bucket, every candidate's outputs checked against the default
// schedule's on seeded inputs (ids equal, weights within 1e-5 relative: the
// segment width changes the order of the softmax sum) before it is timed
// on the device: CUDA events around one call, a 256 MiB buffer written
// before each so that L2 is cold, three warm-up calls, the median of
// --reps samples, pruned after three samples when clearly slower than the
// best so far. Winners go to the tuning database as on the CPU.
//
// `--backend gpu-emu` runs the same flow on the host's GPU emulator, whose
// "device time" is the host's: it checks the tuner and the database end to
// end on machines without a GPU, and its entries (backend gpu-emu) serve
// only `moegen run --backend gpu-emu`.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/BenchInputs.h"
#include "compiler/tools/moegen/Commands.h"
#include "compiler/tools/moegen/TuneSearch.h"

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/backend/nvptx/NvptxCompiler.h"
#include "compiler/jit/KernelJit.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/tune/TuningDb.h"
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
#include "runtime/Error.h"
#include "runtime/cuda/CudaHostRouter.h"
#include "runtime/cuda/DeviceTimer.h"
#endif
#ifdef MOEGEN_HAVE_GPU_EMU
#include "compiler/backend/gpuemu/EmuCudaDriver.h"
#include "compiler/backend/gpuemu/GpuEmuRouter.h"
#endif
#include "support/Quote.h"

#include "llvm/Support/raw_ostream.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>

#include <unistd.h>

namespace moegen::tool {

tune::Origin gpuTuningOrigin(const std::string &backend,
                             const std::string &deviceName,
                             const std::string &arch) {
  tune::Origin origin;
  origin.backend = backend;
  origin.machine = deviceName + ", " + arch;
  origin.compilerVersion = std::string(MOEGEN_VERSION) + "+codegen." +
                           jit::codegenFingerprint();
  return origin;
}

#ifndef MOEGEN_HAVE_CUDA_RUNTIME

int runGpuAutotune(const AutotuneOptions &options,
                   const std::vector<std::pair<std::string, RoutingSpec>> &,
                   const std::string &) {
  return reportUsage("--backend " + options.backend +
                     ": this moegen was built without the CUDA runtime "
                     "(cuda.h was not found; set CUDA_HOME and rebuild)");
}

int emitGpuCandidates(const AutotuneOptions &options,
                      const std::vector<std::pair<std::string, RoutingSpec>> &,
                      const std::string &) {
  return reportUsage("--emit-candidates: this moegen was built without the "
                     "CUDA runtime (cuda.h was not found; set CUDA_HOME and "
                     "rebuild)");
}

#else

namespace {

namespace fs = std::filesystem;

/// Lanes per token, warps per block and top-k methods, the heuristic's
/// choice (the default) first.
std::vector<tune::GpuConfig> gpuCandidateConfigs(int64_t numExperts,
                                                 bool expertChoice,
                                                 int64_t maxSharedBytes) {
  std::vector<tune::GpuConfig> configs{tune::GpuConfig{}};
  // An expert-choice route is one cooperative kernel over the batch whose
  // schedule the ABI fixes: nothing to search.
  if (expertChoice)
    return configs;
  for (int64_t lanes : {1, 2, 4, 8, 16, 32}) {
    // Lanes beyond the row's width would only idle.
    if (lanes > 1 && lanes / 2 >= numExperts)
      continue;
    for (int64_t warps : {1, 2, 4, 8})
      for (const char *topk : {"lane_lists", "argmax_passes", "insertion"}) {
        tune::GpuConfig config{lanes, warps * 32 / lanes, topk};
        if (tune::checkGpuConfig(config, numExperts, maxSharedBytes).empty())
          configs.push_back(config);
      }
  }
  return configs;
}

/// A directory removed, with what it holds, when the scope ends.
struct RemoveOnExit {
  fs::path dir;
  ~RemoveOnExit() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
};

/// The opt-in shared memory of one block on `arch` (as the NVPTX backend's
/// check): 163 KiB on sm_80, 99 KiB on sm_89, 227 KiB from sm_90 on.
int64_t maxSharedBytes(const std::string &arch) {
  if (arch == "sm_80")
    return 163 * 1024;
  if (arch == "sm_89")
    return 99 * 1024;
  return 227 * 1024;
}

struct Candidate {
  tune::GpuConfig config;
  std::unique_ptr<rt::HostRouter> host;
  const rt::CudaRouter *device = nullptr;
  std::string skipped;
};

/// Device copies of one call's inputs and its output buffers.
struct DeviceCall {
  std::vector<rt::DeviceBuffer> inputs;
  rt::RouteBuffers buffers;
  rt::RouteInputs in;
  bool hash = false;
};

void upload(const rt::CudaRouter &router, const BenchCall &host,
            int64_t tokens, DeviceCall &call) {
  auto add = [&](const void *data, size_t bytes) -> CUdeviceptr {
    call.inputs.push_back(router.allocate(std::max<size_t>(bytes, 8)));
    if (data && bytes)
      call.inputs.back().upload(data, bytes, nullptr);
    return call.inputs.back().get();
  };
  const rt::HostRouteCall &c = host.call;
  const int64_t k = router.manifest().topK;
  call.in.numTokens = tokens;
  call.in.logits = add(host.logits.data(), host.logits.size());
  if (c.bias)
    call.in.bias = add(host.bias.data(), host.bias.size() * 4);
  if (c.tokenIds) {
    call.hash = true;
    call.in.tokenIds = add(host.tokenIds.data(), host.tokenIds.size() * 4);
    call.in.hashTable = add(host.hashTable.data(), host.hashTable.size() * 4);
    call.in.hashVocab = c.hashVocab;
  }
  if (c.captureBuffer) {
    const size_t element = host.capture16.empty() ? 4 : 2;
    call.in.capture = add(nullptr, size_t(std::max<int64_t>(1, tokens * k)) *
                                       element);
    call.in.captureLayers = 1;
  }
  if (c.sharedGateLogits)
    call.in.sharedGateLogits =
        add(host.sharedGateLogits.data(), host.sharedGateLogits.size());
  call.buffers = router.allocateBuffers(std::max<int64_t>(1, tokens),
                                        /*withDispatch=*/false);
}

void launch(const rt::CudaRouter &router, const DeviceCall &call,
            CUstream stream) {
  if (call.hash)
    router.routeHash(call.in, call.buffers, stream);
  else
    router.route(call.in, call.buffers, stream);
}

/// Compiles `config` for the emulator or the device: the router, or why
/// not (the kernel directory of a real device goes under `workDir`).
std::string compileCandidate(const RoutingSpec &spec,
                             const AutotuneOptions &options,
                             const std::string &arch, const fs::path &workDir,
                             size_t index, Candidate &candidate) {
  nvptx::NvptxCompileOptions compile;
  compile.arch = arch;
  compile.lanesPerToken = candidate.config.lanesPerToken;
  compile.tokensPerBlock = candidate.config.tokensPerBlock;
  compile.topk = candidate.config.topk;
  if (options.backend == "gpu-emu") {
#ifdef MOEGEN_HAVE_GPU_EMU
    gpuemu::GpuEmuOptions emu;
    emu.nvptx = compile;
    auto router = gpuemu::compileEmulatedRouter(spec, emu);
    if (!router)
      return nvptx::takeCompileError(router.takeError()).second;
    candidate.device = gpuemu::emulatedDevice(**router);
    candidate.host = std::move(*router);
    return "";
#else
    return "this moegen was built without the GPU emulator";
#endif
  }
  auto compiled = nvptx::compile(spec, compile, nvptx::Stage::Cubin);
  if (!compiled)
    return nvptx::takeCompileError(compiled.takeError()).second;
  const std::string dir = (workDir / std::to_string(index)).string();
  if (llvm::Error error = nvptx::writeKernelDirectory(spec, *compiled, dir))
    return nvptx::takeCompileError(std::move(error)).second;
  return "";
}

/// The candidates of `spec` that the validity model keeps, at most
/// --max-candidates, the default first.
std::vector<Candidate> candidatesFor(const RoutingSpec &spec,
                                     const AutotuneOptions &options,
                                     const std::string &arch) {
  const rt::RouterFacts facts = cpu::routerFactsOf(spec);
  std::vector<Candidate> candidates;
  for (const tune::GpuConfig &config : gpuCandidateConfigs(
           facts.numExperts, spec.expertChoice, maxSharedBytes(arch)))
    if (!options.maxCandidates ||
        int64_t(candidates.size()) < options.maxCandidates)
      candidates.push_back({config, nullptr, nullptr, ""});
  return candidates;
}

} // namespace

int emitGpuCandidates(
    const AutotuneOptions &options,
    const std::vector<std::pair<std::string, RoutingSpec>> &specs,
    const std::string &date) {
  const std::string arch = options.arch.empty() ? "sm_90" : options.arch;
  if (!nvptx::isSupportedArch(arch))
    return reportUsage("--arch " + support::quote(arch) +
                       ": must be one of sm_80, sm_89, sm_90, sm_90a, sm_100");
  fs::path out = fs::path(options.emitCandidates).lexically_normal();
  if (out.filename().empty())
    out = out.parent_path();
  std::error_code ec;
  if (fs::exists(out, ec) &&
      (!fs::is_directory(out, ec) || !fs::is_empty(out, ec)))
    return reportFile(out.string(),
                      "--emit-candidates: exists and is not an empty "
                      "directory (nothing there is replaced)");
  // Everything is written beside it first and renamed at the end, so that
  // a failure leaves no half-written directory.
  const fs::path staging =
      out.parent_path() /
      (out.filename().string() + ".partial-" + std::to_string(::getpid()));
  fs::remove_all(staging, ec);
  const RemoveOnExit cleanup{staging};
  nlohmann::json index = {
      {"format", "moegen-tuning-candidates"},
      {"version", 1},
      {"backend", "cuda"},
      {"arch", arch},
      {"compiler_version", gpuTuningOrigin("cuda", "", arch).compilerVersion},
      {"date", date},
      {"specs", nlohmann::json::array()}};
  llvm::raw_ostream &log = llvm::errs();
  for (const auto &[path, spec] : specs) {
    std::vector<Candidate> candidates = candidatesFor(spec, options, arch);
    log << spec.name << ": " << candidates.size()
        << " candidates (the default first)\n";
    const fs::path specDir = staging / spec.name;
    std::vector<std::string> errors =
        compileInParallel(candidates.size(), [&](size_t i) {
          return compileCandidate(spec, options, arch, specDir, i,
                                  candidates[i]);
        });
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < candidates.size(); ++i) {
      const tune::GpuConfig &config = candidates[i].config;
      if (!errors[i].empty()) {
        if (i == 0) {
          llvm::errs() << path << ": internal error: the default GPU "
                                  "schedule does not compile: "
                       << errors[i] << "\n";
          return kExitInternal;
        }
        log << "  skipped " << config.describe() << ": " << errors[i] << "\n";
        continue;
      }
      // The cubin alone: the device it is timed on runs it, and half the
      // bytes to carry are the PTX.
      const fs::path dir = specDir / std::to_string(i);
      fs::remove(dir / "kernels.ptx", ec);
      std::ifstream in(dir / "manifest.json");
      nlohmann::json manifest = nlohmann::json::parse(in, nullptr, false);
      if (manifest.is_discarded() || !manifest.contains("cubin")) {
        llvm::errs() << path << ": internal error: " << (dir / "manifest.json").string()
                     << " is not a manifest with a cubin\n";
        return kExitInternal;
      }
      manifest.erase("ptx");
      if (int status = writeOutput((dir / "manifest.json").string(),
                                   manifest.dump(2) + "\n"))
        return status;
      list.push_back({{"dir", spec.name + "/" + std::to_string(i)},
                      {"config",
                       {{"lanes_per_token", config.lanesPerToken},
                        {"tokens_per_block", config.tokensPerBlock},
                        {"topk", config.topk}}}});
    }
    index["specs"].push_back({{"spec_hash", specHash(spec)},
                              {"spec_name", spec.name},
                              {"candidates", list}});
  }
  fs::create_directories(staging, ec);
  if (int status = writeOutput((staging / "candidates.json").string(),
                               index.dump(2) + "\n"))
    return status;
  if (fs::exists(out, ec))
    fs::remove(out, ec); // the empty directory checked above
  fs::rename(staging, out, ec);
  if (ec)
    return reportFile(out.string(), "--emit-candidates: cannot rename " +
                                        staging.string() + " there: " +
                                        ec.message());
  llvm::outs() << "wrote the candidates of " << specs.size() << " spec"
               << (specs.size() == 1 ? "" : "s") << " for " << arch << " to "
               << out.string()
               << " (time them with moegen-gpu-check --tune on the GPU)\n";
  return kExitOk;
}

int runGpuAutotune(const AutotuneOptions &options,
                   const std::vector<std::pair<std::string, RoutingSpec>> &specs,
                   const std::string &date) {
  const bool emulated = options.backend == "gpu-emu";
  const rt::CudaDriver *driver = nullptr;
  std::string deviceName, arch = options.arch;
  try {
#ifdef MOEGEN_HAVE_GPU_EMU
    driver = emulated ? &gpuemu::emulatedDriver() : &rt::CudaDriver::get();
#else
    if (emulated)
      return reportUsage("--backend gpu-emu: this moegen was built without "
                         "the GPU emulator");
    driver = &rt::CudaDriver::get();
#endif
    const rt::CudaDriver::DeviceInfo info = driver->deviceInfo(0);
    deviceName = info.name;
    const int major = info.major, minor = info.minor;
    if (arch.empty())
      arch = emulated ? "sm_90" : nvptx::archForComputeCapability(major, minor);
    if (arch.empty())
      return reportUsage("--backend cuda: " + deviceName + " (compute " +
                         std::to_string(major) + "." + std::to_string(minor) +
                         ") is older than sm_80, which moegen does not "
                         "support");
  } catch (const rt::Error &e) {
    return reportUsage("--backend " + options.backend + ": " + e.what());
  }
  if (!nvptx::isSupportedArch(arch))
    return reportUsage("--arch " + support::quote(arch) +
                       ": must be one of sm_80, sm_89, sm_90, sm_90a, sm_100");

  const tune::Origin origin = gpuTuningOrigin(options.backend, deviceName, arch);
  const int reps = options.reps ? options.reps : 50;
  // The emulator's L2 is the host's: a small flush keeps its path run
  // without timing a 256 MiB memset on the host.
  const size_t flushBytes =
      emulated ? size_t(1) << 20 : rt::DeviceTimer::kDefaultFlushBytes;
  llvm::raw_ostream &log = llvm::errs();
  log << "tuning on " << origin.machine << " (" << options.backend << ")\n";

  // Kernel directories of real devices, removed when the command ends.
  std::error_code ec;
  const fs::path workDir =
      fs::temp_directory_path(ec) /
      ("moegen-autotune-" + std::to_string(::getpid()));
  const RemoveOnExit cleanup{workDir};

  std::vector<tune::Entry> entries;
  for (const auto &[path, spec] : specs) {
    const rt::RouterFacts facts = cpu::routerFactsOf(spec);
    std::vector<Candidate> candidates = candidatesFor(spec, options, arch);
    log << spec.name << ": " << candidates.size()
        << " candidates (the default first), " << options.tokens.size()
        << " token counts\n";
    std::vector<std::string> errors =
        compileInParallel(candidates.size(), [&](size_t i) {
          return compileCandidate(spec, options, arch, workDir, i,
                                  candidates[i]);
        });
    // Kernels of a real device are loaded here, on this thread.
    for (size_t i = 0; i < candidates.size(); ++i) {
      Candidate &c = candidates[i];
      if (errors[i].empty() && !emulated) {
        try {
          auto router = std::make_unique<rt::CudaHostRouter>(
              rt::CudaRouter::load((workDir / std::to_string(i)).string()));
          c.device = &router->device();
          c.host = std::move(router);
        } catch (const rt::Error &e) {
          errors[i] = std::string("does not load: ") + e.what();
        }
      }
      if (errors[i].empty())
        continue;
      c.skipped = errors[i];
      if (i == 0) {
        llvm::errs() << path << ": internal error: the default GPU schedule "
                                "does not compile or load: "
                     << c.skipped << "\n";
        return kExitInternal;
      }
      log << "  skipped " << c.config.describe() << ": " << c.skipped << "\n";
    }

    try {
      rt::DeviceTimer timer(candidates[0].device->driver(),
                            candidates[0].device->context(), flushBytes);
      for (int64_t tokens : options.tokens) {
        BenchCall reference;
        makeCall(facts, tokens, /*dispatch=*/false, reference);
        if (std::string error = candidates[0].host->run(reference.call);
            !error.empty()) {
          llvm::errs() << path << ": internal error: the default GPU schedule "
                                  "failed on valid inputs: "
                       << error << "\n";
          return kExitInternal;
        }
        BenchCall call;
        DeviceCall device;
        const BucketChoice choice = searchBucket(
            tokens, candidates.size(), reps, options.minGain,
            [&](size_t i) { return candidates[i].config.describe(); },
            [&](size_t i) -> std::optional<CandidateRun> {
              Candidate &c = candidates[i];
              if (!c.host)
                return std::nullopt;
              call = BenchCall();
              makeCall(facts, tokens, /*dispatch=*/false, call);
              if (std::string error = c.host->run(call.call); !error.empty())
                return CandidateRun{error, nullptr};
              if (std::string diff = compareOutputs(call, reference,
                                                    tokens * facts.topK, 1e-5);
                  !diff.empty())
                return CandidateRun{"differs from the default at " + diff,
                                    nullptr};
              device = DeviceCall();
              upload(*c.device, call, tokens, device);
              auto run = [&c, &device](CUstream stream) {
                launch(*c.device, device, stream);
              };
              for (int warm = 0; warm < 3; ++warm)
                timer.sampleUs(run, nullptr);
              if (std::string error = c.device->readError(
                      nullptr, device.buffers.outputs().error);
                  !error.empty())
                return CandidateRun{error, nullptr};
              return CandidateRun{
                  "", [&timer, run] { return timer.sampleUs(run, nullptr); }};
            });
        tune::Entry entry = reportBucket(
            spec, origin, tokens, choice, candidates.size(),
            candidates[choice.index].config.describe(), date);
        entry.gpu = candidates[choice.index].config;
        entries.push_back(entry);
      }
    } catch (const rt::Error &e) {
      // The device failed under a schedule that compiled and checked out
      // (a fault, or out of memory): nothing measured is trustworthy.
      llvm::errs() << path << ": error: --backend " << options.backend << ": "
                   << e.what() << "\n";
      return kExitBadInput;
    }
  }
  if (std::string error = tune::TuningDb::merge(options.dbPath, entries);
      !error.empty()) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  llvm::outs() << "wrote " << entries.size() << " entries to "
               << options.dbPath << "\n";
  return kExitOk;
}

#endif // MOEGEN_HAVE_CUDA_RUNTIME

} // namespace moegen::tool
