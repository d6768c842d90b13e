//===- MoEDialect.cpp - The moe dialect -----------------------------------===//

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::moe;

#include "dialects/moe/IR/MoEDialect.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/moe/IR/MoEOps.cpp.inc"
      >();
}

/// Checks `moe.kernel_config`: the keys the lowerings read, with sane values.
static LogicalResult verifyKernelConfig(Operation *op, Attribute value) {
  auto config = dyn_cast<DictionaryAttr>(value);
  if (!config)
    return op->emitError() << "attribute 'moe.kernel_config' must be a "
                              "dictionary, got "
                           << value;
  auto target = config.getAs<StringAttr>("target");
  if (!target || (target.getValue() != "cpu" && target.getValue() != "nvptx"))
    return op->emitError() << "attribute 'moe.kernel_config': 'target' must "
                              "be \"cpu\" or \"nvptx\"";
  for (StringRef key : {"vector_width", "tokens_per_task"}) {
    auto number = config.getAs<IntegerAttr>(key);
    if (!number || number.getInt() < 1)
      return op->emitError() << "attribute 'moe.kernel_config': '" << key
                             << "' must be a positive integer";
  }
  int64_t width = config.getAs<IntegerAttr>("vector_width").getInt();
  if (!llvm::isPowerOf2_64(width) || width > 64)
    return op->emitError() << "attribute 'moe.kernel_config': 'vector_width' "
                              "= "
                           << width << " must be a power of two up to 64";
  auto topk = config.getAs<StringAttr>("topk");
  if (!topk ||
      (topk.getValue() != "argmax_passes" && topk.getValue() != "insertion"))
    return op->emitError() << "attribute 'moe.kernel_config': 'topk' must be "
                              "\"argmax_passes\" or \"insertion\"";
  for (NamedAttribute entry : config)
    if (!llvm::is_contained({"target", "vector_width", "tokens_per_task", "topk"},
                            entry.getName().getValue()))
      return op->emitError() << "attribute 'moe.kernel_config': unknown key '"
                             << entry.getName().getValue() << "'";
  if (!isa<FunctionOpInterface>(op) || !op->hasAttr(kEntryAttrName))
    return op->emitError() << "attribute 'moe.kernel_config' belongs on a "
                              "function with 'moe.entry'";
  return success();
}

/// Checks `moe.launch`: the launch geometry of a GPU kernel.
static LogicalResult verifyLaunch(Operation *op, Attribute value) {
  auto launch = dyn_cast<DictionaryAttr>(value);
  if (!launch)
    return op->emitError() << "attribute 'moe.launch' must be a dictionary";
  for (StringRef key :
       {"block_dim", "tokens_per_block", "dynamic_shared_memory_bytes"}) {
    auto entry = launch.getAs<IntegerAttr>(key);
    if (!entry || entry.getInt() < 0)
      return op->emitError() << "attribute 'moe.launch': '" << key
                             << "' must be a non-negative integer";
  }
  if (launch.size() != 3)
    return op->emitError() << "attribute 'moe.launch' has keys block_dim, "
                              "tokens_per_block, dynamic_shared_memory_bytes "
                              "only";
  if (!isa<FunctionOpInterface>(op))
    return op->emitError() << "attribute 'moe.launch' belongs on a function";
  return success();
}

LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                  NamedAttribute attribute) {
  if (attribute.getName() == kKernelConfigAttrName)
    return verifyKernelConfig(op, attribute.getValue());
  if (attribute.getName() == kLaunchAttrName)
    return verifyLaunch(op, attribute.getValue());
  if (attribute.getName() != kEntryAttrName)
    return op->emitError() << "unknown moe dialect attribute '"
                           << attribute.getName().getValue()
                           << "' (known: 'moe.entry', 'moe.kernel_config', "
                              "'moe.launch')";
  auto kind = dyn_cast<StringAttr>(attribute.getValue());
  bool known = kind && llvm::StringSwitch<bool>(kind.getValue())
                           .Cases("route", "route_hash", "replay", "dispatch",
                                  true)
                           .Default(false);
  if (!known)
    return op->emitError()
           << "attribute 'moe.entry' must be one of \"route\", "
              "\"route_hash\", \"replay\", \"dispatch\", got "
           << attribute.getValue();
  // func.func until lowered, llvm.func after.
  if (!isa<FunctionOpInterface>(op))
    return op->emitError() << "attribute 'moe.entry' belongs on a function";
  return success();
}
