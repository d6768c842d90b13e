//===- MoEDialect.cpp - The moe dialect -----------------------------------===//

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEOps.h"

using namespace mlir;
using namespace mlir::moe;

#include "dialects/moe/IR/MoEDialect.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/moe/IR/MoEOps.cpp.inc"
      >();
}
