//===- MoEAttrs.cpp - Attributes of the moe dialect -----------------------===//

#include "dialects/moe/IR/MoEAttrs.h"

#include "abi/KernelAbi.h"
#include "abi/Manifest.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::moe;

// The IR's enums mirror the ABI's, case for case.
static_assert(int(KernelArgRole::Tensor) == int(moegen::abi::ArgRole::Tensor) &&
              int(KernelArgRole::Scalar) == int(moegen::abi::ArgRole::Scalar) &&
              int(KernelArgRole::ErrorRecord) ==
                  int(moegen::abi::ArgRole::ErrorRecord) &&
              int(KernelArgRole::TokenBegin) ==
                  int(moegen::abi::ArgRole::TokenBegin) &&
              int(KernelArgRole::TokenEnd) ==
                  int(moegen::abi::ArgRole::TokenEnd));
static_assert(int(KernelArgAccess::Read) == int(moegen::abi::Access::Read) &&
              int(KernelArgAccess::Write) == int(moegen::abi::Access::Write) &&
              int(KernelArgAccess::ReadWrite) ==
                  int(moegen::abi::Access::ReadWrite));

#define GET_ATTRDEF_CLASSES
#include "dialects/moe/IR/MoEAttrs.cpp.inc"

void MoEDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/moe/IR/MoEAttrs.cpp.inc"
      >();
}

int64_t KernelConfigAttr::getWarpsPerBlock() const {
  return getTokensPerTask() * getVectorWidth() / kWarpSize;
}

LogicalResult
KernelConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                         KernelTarget target, int64_t vectorWidth,
                         int64_t tokensPerTask, TopKMethod topk) {
  if (vectorWidth < 1 || !llvm::isPowerOf2_64(vectorWidth) ||
      vectorWidth > kMaxVectorWidth)
    return emitError() << "#moe.kernel_config: vector_width = " << vectorWidth
                       << " must be a power of two up to " << kMaxVectorWidth;
  if (tokensPerTask < 1)
    return emitError() << "#moe.kernel_config: tokens_per_task = "
                       << tokensPerTask << " must be positive";
  if (target != KernelTarget::Nvptx)
    return success();
  if (topk == TopKMethod::LaneTree)
    return emitError() << "#moe.kernel_config: topk = lane_tree is a host "
                          "method (a merge tree of vector shuffles, not yet "
                          "weighed on a GPU); nvptx kernels take lane_lists";
  // On nvptx the vector lanes are a token's lanes of a warp and a task is a
  // block: whole warps, at most kMaxBlockThreads threads.
  if (vectorWidth > kWarpSize)
    return emitError() << "#moe.kernel_config: nvptx kernels spread a token "
                          "over at most a warp: vector_width = "
                       << vectorWidth << " must be at most " << kWarpSize;
  const int64_t threads = tokensPerTask * vectorWidth;
  if (threads % kWarpSize != 0 || threads > kMaxBlockThreads)
    return emitError() << "#moe.kernel_config: nvptx blocks are whole warps "
                          "of at most "
                       << kMaxBlockThreads
                       << " threads: tokens_per_task * vector_width = "
                       << tokensPerTask << " * " << vectorWidth << " = "
                       << threads;
  return success();
}

LogicalResult LaunchAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 int64_t blockDim, int64_t tokensPerBlock,
                                 int64_t dynamicSharedMemoryBytes,
                                 int64_t maxBlocks, int64_t slotsPerBlock,
                                 int64_t lanesPerToken) {
  if (blockDim < 1 || blockDim > kMaxBlockThreads)
    return emitError() << "#moe.launch: block_dim = " << blockDim
                       << " must be in [1, " << kMaxBlockThreads << "]";
  if (tokensPerBlock < 0 || dynamicSharedMemoryBytes < 0)
    return emitError() << "#moe.launch: tokens_per_block and "
                          "dynamic_shared_memory_bytes must not be negative";
  if (maxBlocks < 0 || slotsPerBlock < 0 || (maxBlocks > 0) != (slotsPerBlock > 0))
    return emitError() << "#moe.launch: max_blocks and slots_per_block are "
                          "both positive (a cooperative launch) or both 0";
  if (maxBlocks > 0 && tokensPerBlock != 0)
    return emitError() << "#moe.launch: a cooperative launch has "
                          "tokens_per_block = 0";
  if (lanesPerToken != 0 &&
      (lanesPerToken < 0 || lanesPerToken > kWarpSize ||
       !llvm::isPowerOf2_64(lanesPerToken) ||
       blockDim != tokensPerBlock * lanesPerToken))
    return emitError() << "#moe.launch: lanes_per_token = " << lanesPerToken
                       << " must be a power of two up to " << kWarpSize
                       << " with block_dim = tokens_per_block * "
                          "lanes_per_token";
  return success();
}

LogicalResult KernelArgAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    StringRef name, KernelArgRole role,
                                    Type dtype, ArrayAttr shape,
                                    KernelArgAccess access) {
  if (name.empty())
    return emitError() << "#moe.kernel_arg: name must not be empty";
  if (!dtype.isIntOrFloat())
    return emitError() << "#moe.kernel_arg '" << name << "': dtype " << dtype
                       << " must be an integer or float type";
  bool scalarRole = role == KernelArgRole::Scalar ||
                    role == KernelArgRole::TokenBegin ||
                    role == KernelArgRole::TokenEnd;
  if (scalarRole && !shape.empty())
    return emitError() << "#moe.kernel_arg '" << name << "': a "
                       << stringifyKernelArgRole(role)
                       << " argument has no shape";
  if (!scalarRole && shape.empty())
    return emitError() << "#moe.kernel_arg '" << name << "': a "
                       << stringifyKernelArgRole(role)
                       << " argument needs a shape";
  for (Attribute dim : shape) {
    if (auto extent = llvm::dyn_cast<IntegerAttr>(dim)) {
      if (extent.getInt() < 0)
        return emitError() << "#moe.kernel_arg '" << name << "': extent "
                           << extent.getInt() << " is negative";
      continue;
    }
    auto symbol = llvm::dyn_cast<StringAttr>(dim);
    if (!symbol || !moegen::abi::parseDimSymbol(symbol.getValue().str()))
      return emitError() << "#moe.kernel_arg '" << name << "': shape entry "
                         << dim
                         << " must be an extent or one of \"T\", \"V\", "
                            "\"L\", \"T*k\"";
  }
  return success();
}

StringRef KernelArgAttr::getSymbol(unsigned dim) const {
  if (auto symbol = llvm::dyn_cast<StringAttr>(getShape()[dim]))
    return symbol.getValue();
  return {};
}

LogicalResult
KernelSizeAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                       StringRef of, int64_t dim) {
  if (of.empty() || dim < 0)
    return emitError() << "#moe.kernel_size: needs a tensor name and a "
                          "non-negative dim";
  return success();
}

KernelConfigAttr mlir::moe::getKernelConfig(Operation *op) {
  return op->getAttrOfType<KernelConfigAttr>(kKernelConfigAttrName);
}

LaunchAttr mlir::moe::getLaunch(Operation *op) {
  return op->getAttrOfType<LaunchAttr>(kLaunchAttrName);
}

std::optional<moegen::abi::DType> mlir::moe::toAbiDType(Type type) {
  using moegen::abi::DType;
  if (type.isF32())
    return DType::F32;
  if (type.isBF16())
    return DType::BF16;
  if (type.isF16())
    return DType::F16;
  if (type.isInteger(16))
    return DType::I16;
  if (type.isInteger(32))
    return DType::I32;
  if (type.isInteger(64))
    return DType::I64;
  return std::nullopt;
}

moegen::abi::Dim mlir::moe::toAbiDim(Attribute entry) {
  using moegen::abi::Dim;
  Dim dim;
  if (auto extent = dyn_cast<IntegerAttr>(entry)) {
    dim.extent = extent.getInt();
    return dim;
  }
  // The attribute's verifier admits only the ABI's symbols.
  dim.symbol =
      *moegen::abi::parseDimSymbol(cast<StringAttr>(entry).getValue().str());
  return dim;
}
