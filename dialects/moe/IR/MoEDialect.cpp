//===- MoEDialect.cpp - The moe dialect -----------------------------------===//

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/StringSwitch.h"

using namespace mlir;
using namespace mlir::moe;

#include "dialects/moe/IR/MoEDialect.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/moe/IR/MoEOps.cpp.inc"
      >();
}

LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                  NamedAttribute attribute) {
  if (attribute.getName() != "moe.entry")
    return op->emitError() << "unknown moe dialect attribute '"
                           << attribute.getName().getValue()
                           << "' (the only one is 'moe.entry')";
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
  if (!isa<func::FuncOp>(op))
    return op->emitError() << "attribute 'moe.entry' belongs on a func.func";
  return success();
}
