//===- HostJit.cpp - JIT-compile lowered kernels for this host ------------===//

#include "compiler/backend/cpu/HostJit.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinOps.h"

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/Mangling.h"
#include "llvm/ExecutionEngine/Orc/Shared/ExecutorAddress.h"
#include "llvm/Support/TargetSelect.h"

#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace moegen::cpu {

namespace {

std::once_flag nativeTargetOnce;

void initializeNativeTarget() {
  std::call_once(nativeTargetOnce, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

/// bf16 conversions for the JIT. LLVM lowers f32 <-> bf16 to these
/// compiler-rt builtins on hosts without AVX512-BF16, and Debian 12's libgcc
/// (GCC 12) lacks them. bf16 travels in an XMM register like _Float16, so
/// that is the carrier type here.
_Float16 truncFloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  uint16_t result;
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    result = static_cast<uint16_t>((bits >> 16) | 0x40); // quiet NaN
  } else {
    // Round to nearest, ties to even.
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    result = static_cast<uint16_t>(bits >> 16);
  }
  _Float16 carrier;
  std::memcpy(&carrier, &result, sizeof carrier);
  return carrier;
}

float extendBf16ToFloat(_Float16 carrier) {
  uint16_t half;
  std::memcpy(&half, &carrier, sizeof half);
  uint32_t bits = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

} // namespace

llvm::Expected<std::unique_ptr<mlir::ExecutionEngine>>
createHostEngine(mlir::ModuleOp module, llvm::ArrayRef<HostSymbol> extraSymbols,
                 unsigned optLevel) {
  initializeNativeTarget();
  auto machineBuilder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!machineBuilder)
    return machineBuilder.takeError();
  auto targetMachine = machineBuilder->createTargetMachine();
  if (!targetMachine)
    return targetMachine.takeError();

  // ExecutionEngineOptions::transformer is a function_ref: the transformer
  // itself must outlive create().
  std::function<llvm::Error(llvm::Module *)> optimize =
      mlir::makeOptimizingTransformer(optLevel, 0, targetMachine->get());
  mlir::ExecutionEngineOptions engineOptions;
  engineOptions.transformer = optimize;
  engineOptions.jitCodeGenOptLevel = optLevel >= 3
                                         ? llvm::CodeGenOptLevel::Aggressive
                                         : llvm::CodeGenOptLevel::Default;
  auto created = mlir::ExecutionEngine::create(module, engineOptions);
  if (!created)
    return created.takeError();
  std::vector<std::pair<std::string, void *>> symbols = {
      {"__truncsfbf2", reinterpret_cast<void *>(&truncFloatToBf16)},
      {"__extendbfsf2", reinterpret_cast<void *>(&extendBf16ToFloat)}};
  for (const HostSymbol &symbol : extraSymbols)
    symbols.emplace_back(symbol.first.str(), symbol.second);
  (*created)->registerSymbols([&](llvm::orc::MangleAndInterner interner) {
    llvm::orc::SymbolMap map;
    for (const auto &[name, address] : symbols)
      map[interner(name)] = {llvm::orc::ExecutorAddr::fromPtr(address),
                             llvm::JITSymbolFlags::Exported};
    return map;
  });
  return std::move(*created);
}

} // namespace moegen::cpu
