//===- MoEDialect.cpp - The moe dialect -----------------------------------===//

#include "dialects/moe/IR/MoEDialect.h"

#include "abi/KernelAbi.h"
#include "dialects/moe/IR/MoEAttrs.h"
#include "dialects/moe/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSwitch.h"

using namespace mlir;
using namespace mlir::moe;

#include "dialects/moe/IR/MoEDialect.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/moe/IR/MoEOps.cpp.inc"
      >();
  registerAttributes();
}

LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                  NamedAttribute attribute) {
  StringRef name = attribute.getName().getValue();
  if (name == kKernelConfigAttrName) {
    if (!isa<KernelConfigAttr>(attribute.getValue()))
      return op->emitError() << "attribute 'moe.kernel_config' must be a "
                                "#moe.kernel_config, got "
                             << attribute.getValue();
    if (!isa<FunctionOpInterface>(op) || !op->hasAttr(kEntryAttrName))
      return op->emitError() << "attribute 'moe.kernel_config' belongs on a "
                                "function with 'moe.entry'";
    return success();
  }
  if (name == kLaunchAttrName) {
    if (!isa<LaunchAttr>(attribute.getValue()))
      return op->emitError() << "attribute 'moe.launch' must be a "
                                "#moe.launch, got "
                             << attribute.getValue();
    if (!isa<FunctionOpInterface>(op))
      return op->emitError() << "attribute 'moe.launch' belongs on a function";
    return success();
  }
  if (name == kFusedDispatchAttrName) {
    auto slots = dyn_cast<IntegerAttr>(attribute.getValue());
    if (!slots || slots.getInt() < 1 ||
        slots.getInt() > moegen::abi::kFusedDispatchMaxSlots)
      return op->emitError()
             << "attribute '" << kFusedDispatchAttrName
             << "' must be an integer from 1 to "
             << moegen::abi::kFusedDispatchMaxSlots << ", got "
             << attribute.getValue();
    auto kind = op->getAttrOfType<StringAttr>(kEntryAttrName);
    if (!isa<FunctionOpInterface>(op) || !kind ||
        !llvm::is_contained({"route", "route_hash", "replay"},
                            kind.getValue()))
      return op->emitError() << "attribute '" << kFusedDispatchAttrName
                             << "' belongs on a route, route_hash or replay "
                                "entry point";
    return success();
  }
  if (name == kSplitFromAttrName) {
    if (!isa<StringAttr>(attribute.getValue()) ||
        !op->hasTrait<OpTrait::SymbolTable>())
      return op->emitError() << "attribute '" << kSplitFromAttrName
                             << "' must be a string on a module (the "
                                "gpu.module split from), got "
                             << attribute.getValue();
    return success();
  }
  if (name != kEntryAttrName)
    return op->emitError() << "unknown moe dialect attribute '" << name
                           << "' (known: 'moe.entry', 'moe.kernel_config', "
                              "'moe.launch', '"
                           << kFusedDispatchAttrName << "', '"
                           << kSplitFromAttrName << "')";
  auto kind = dyn_cast<StringAttr>(attribute.getValue());
  // The entry kinds are the kernel ABI's (abi/KernelAbi.h).
  bool known =
      kind && moegen::abi::parseEntryKind(kind.getValue().str()).has_value();
  if (!known) {
    std::string names;
    for (moegen::abi::EntryKind entry : moegen::abi::kEntryKinds)
      names += (names.empty() ? "\"" : ", \"") +
               std::string(moegen::abi::toString(entry)) + "\"";
    return op->emitError() << "attribute 'moe.entry' must be one of "
                           << names << ", got " << attribute.getValue();
  }
  // func.func until lowered, llvm.func after.
  if (!isa<FunctionOpInterface>(op))
    return op->emitError() << "attribute 'moe.entry' belongs on a function";
  return success();
}

LogicalResult MoEDialect::verifyRegionArgAttribute(Operation *op,
                                                   unsigned regionIndex,
                                                   unsigned argIndex,
                                                   NamedAttribute attribute) {
  StringRef name = attribute.getName().getValue();
  auto fail = [&]() {
    return op->emitError() << "argument #" << argIndex << ": attribute '"
                           << name << "' ";
  };
  if (name == kKernelSizeAttrName) {
    if (!isa<KernelSizeAttr>(attribute.getValue()))
      return fail() << "must be a #moe.kernel_size";
    return success();
  }
  if (name != kKernelArgAttrName)
    return fail() << "is not a moe argument attribute (known: "
                     "'moe.kernel_arg', 'moe.kernel_size')";
  auto arg = dyn_cast<KernelArgAttr>(attribute.getValue());
  if (!arg)
    return fail() << "must be a #moe.kernel_arg";
  if (op->getNumRegions() <= regionIndex ||
      op->getRegion(regionIndex).empty() ||
      op->getRegion(regionIndex).front().getNumArguments() <= argIndex)
    return success(); // A declaration: nothing to compare with.
  Type type =
      op->getRegion(regionIndex).front().getArgument(argIndex).getType();
  // Host kernels take memrefs; GPU kernels take bare pointers, checked when
  // the manifest is written.
  if (auto memref = dyn_cast<MemRefType>(type)) {
    if (memref.getRank() != int64_t(arg.getShape().size()) ||
        memref.getElementType() != arg.getDtype())
      return fail() << arg << " does not describe " << type;
    for (auto [dim, entry] : llvm::enumerate(arg.getShape())) {
      auto extent = dyn_cast<IntegerAttr>(entry);
      if (memref.isDynamicDim(dim) != !extent ||
          (extent && extent.getInt() != memref.getDimSize(dim)))
        return fail() << "dimension " << dim << " (" << entry
                      << ") does not describe " << type;
    }
  }
  return success();
}
