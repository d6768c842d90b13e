//===- GpuEmuRouter.cpp - Routing specs on the emulated GPU ---------------===//

#include "compiler/backend/gpuemu/GpuEmuRouter.h"

#include "compiler/Registration.h"
#include "compiler/backend/cpu/CpuPipeline.h"
#include "compiler/backend/cpu/HostJit.h"
#include "compiler/backend/gpuemu/EmuCudaDriver.h"
#include "compiler/backend/gpuemu/EmuRuntime.h"
#include "compiler/backend/gpuemu/Passes.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaHostRouter.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <filesystem>

namespace moegen::gpuemu {

namespace {

/// What the emulated kernels need alive: the JIT's code and the kernel
/// directory the runtime loaded them from.
struct EmulatedKernels {
  mlir::MLIRContext context;
  std::unique_ptr<mlir::ExecutionEngine> engine;
  std::string directory;
  /// The registered module's image; unregistered before the engine (and
  /// with it the kernels' code) goes.
  std::string image;

  ~EmulatedKernels() {
    if (!image.empty())
      unregisterModule(image);
    std::error_code ignored;
    if (!directory.empty())
      std::filesystem::remove_all(directory, ignored);
  }
};

class GpuEmuHostRouter final : public rt::HostRouter {
public:
  GpuEmuHostRouter(std::unique_ptr<EmulatedKernels> kernels,
                   std::unique_ptr<rt::CudaHostRouter> router)
      : kernels(std::move(kernels)), router(std::move(router)) {}

  const rt::RouterFacts &facts() const override { return router->facts(); }
  std::string_view backendName() const override { return "gpu-emu"; }
  std::string run(const rt::HostRouteCall &call) override {
    return router->run(call);
  }
  std::string permute(const rt::HostPermuteCall &call) override {
    return router->permute(call);
  }
  std::string combine(const rt::HostCombineCall &call) override {
    return router->combine(call);
  }
  std::string updateBias(const rt::HostUpdateBiasCall &call) override {
    return router->updateBias(call);
  }
  const rt::CudaRouter &device() const { return router->device(); }

private:
  // Destroyed in reverse order: the router (which unloads the module)
  // before the code it calls.
  std::unique_ptr<EmulatedKernels> kernels;
  std::unique_ptr<rt::CudaHostRouter> router;
};

/// The emulation runtime's entry points, for the JIT.
std::vector<cpu::HostSymbol> runtimeSymbols() {
  return {
      {"moegen_emu_shfl_xor_i32",
       reinterpret_cast<void *>(&moegen_emu_shfl_xor_i32)},
      {"moegen_emu_redux_i32", reinterpret_cast<void *>(&moegen_emu_redux_i32)},
      {"moegen_emu_match_any_i32",
       reinterpret_cast<void *>(&moegen_emu_match_any_i32)},
      {"moegen_emu_ballot_i32",
       reinterpret_cast<void *>(&moegen_emu_ballot_i32)},
      {"moegen_emu_warp_sync", reinterpret_cast<void *>(&moegen_emu_warp_sync)},
      {"moegen_emu_barrier", reinterpret_cast<void *>(&moegen_emu_barrier)},
      {"moegen_emu_yield", reinterpret_cast<void *>(&moegen_emu_yield)},
      {"moegen_emu_grid_dim", reinterpret_cast<void *>(&moegen_emu_grid_dim)},
      {"moegen_emu_shared_base",
       reinterpret_cast<void *>(&moegen_emu_shared_base)},
      {"moegen_emu_shared_bytes",
       reinterpret_cast<void *>(&moegen_emu_shared_bytes)},
      {"moegen_emu_check_access",
       reinterpret_cast<void *>(&moegen_emu_check_access)},
  };
}

llvm::Error internalError(const std::string &message) {
  return llvm::make_error<nvptx::CompileError>(nvptx::CompileStatus::Internal,
                                               message);
}

} // namespace

const rt::CudaRouter *emulatedDevice(const rt::HostRouter &router) {
  const auto *emulated = dynamic_cast<const GpuEmuHostRouter *>(&router);
  return emulated ? &emulated->device() : nullptr;
}

llvm::Expected<std::unique_ptr<rt::HostRouter>>
compileEmulatedRouter(const RoutingSpec &spec, const GpuEmuOptions &options) {
  llvm::Expected<nvptx::NvptxCompileResult> compiled =
      options.buckets.size() > 1
          ? nvptx::compileBuckets(spec, options.nvptx, options.buckets,
                                  nvptx::Stage::Gpu)
          : nvptx::compile(spec, options.nvptx, nvptx::Stage::Gpu);
  if (!compiled)
    return compiled.takeError();

  auto kernels = std::make_unique<EmulatedKernels>();
  mlir::DialectRegistry registry;
  registerMoEGenDialects(registry);
  kernels->context.appendDialectRegistry(registry);
  kernels->context.loadAllAvailableDialects();
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(
      &kernels->context, [&](mlir::Diagnostic &diag) {
        llvm::raw_string_ostream os(diagnostics);
        os << diag.getLocation() << ": " << diag << "\n";
        return mlir::success();
      });
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(compiled->gpuIR,
                                              &kernels->context);
  if (!module)
    return internalError("the gpu stage does not parse back:\n" +
                         diagnostics);
  mlir::PassManager pm(&kernels->context);
  ConvertGpuToEmulatorOptions lowering;
  lowering.injectFault = options.injectFault;
  // Test only: lets the CLI's tests break the kernels on purpose.
  if (lowering.injectFault.empty())
    if (const char *fault = std::getenv("MOEGEN_EMU_INJECT_FAULT"))
      lowering.injectFault = fault;
  pm.addPass(createConvertGpuToEmulator(lowering));
  cpu::addCpuLLVMStage(pm);
  if (mlir::failed(pm.run(*module))) {
    std::string pipeline;
    llvm::raw_string_ostream os(pipeline);
    pm.printAsTextualPipeline(os);
    return internalError("the emulator's lowering failed:\n" + diagnostics +
                         "repro: moegen compile SPEC --emit=gpu | moegen-opt "
                         "--pass-pipeline='" +
                         pipeline + "'");
  }
  // -O2: the emulated kernels are compiled for every spec a test runs.
  auto engine = cpu::createHostEngine(*module, runtimeSymbols(), 2);
  if (!engine)
    return internalError("JIT compilation of the emulated kernels failed: " +
                         llvm::toString(engine.takeError()));
  kernels->engine = std::move(*engine);

  std::vector<EmuKernel> emulated;
  for (const abi::Kernel &kernel : compiled->kernels) {
    auto function = kernels->engine->lookupPacked(kernel.symbol);
    if (!function)
      return internalError("no emulated kernel '" + kernel.symbol +
                           "': " + llvm::toString(function.takeError()));
    emulated.push_back(
        {kernel.symbol, int(kernel.params.size()), *function});
  }
  // The module's image stands where the PTX would: the manifest names it,
  // and the emulated driver loads it.
  kernels->image = registerModule(std::move(emulated));
  compiled->ptx = kernels->image;
  compiled->cubin.clear();

  llvm::SmallString<128> directory;
  if (std::error_code ec =
          llvm::sys::fs::createUniqueDirectory("moegen-gpu-emu", directory))
    return internalError("cannot create a directory for the emulated "
                         "kernels: " +
                         ec.message());
  kernels->directory = std::string(directory);
  if (llvm::Error error =
          nvptx::writeKernelDirectory(spec, *compiled, kernels->directory))
    return error;

  rt::LoadOptions load;
  load.driver = &emulatedDriver();
  load.fusedDispatch = options.fusedDispatch;
  try {
    std::unique_ptr<rt::CudaHostRouter> router =
        rt::CudaHostRouter::load(kernels->directory, load);
    return std::make_unique<GpuEmuHostRouter>(std::move(kernels),
                                              std::move(router));
  } catch (const rt::Error &e) {
    return internalError(std::string("the runtime refuses the emulated "
                                     "kernels: ") +
                         e.what());
  }
}

} // namespace moegen::gpuemu
