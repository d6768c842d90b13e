//===- ExternDynamicSharedMemory.cpp - Dynamic shared memory as extern ----===//
//
// See the pass description in Passes.td: without this, the NVPTX backend
// gives the dynamic shared memory base a 1-byte static allocation.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEEXTERNDYNAMICSHAREDMEMORY
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

/// The NVPTX address space of shared memory.
constexpr unsigned kSharedAddressSpace = 3;

struct MoEExternDynamicSharedMemoryPass
    : public moe::impl::MoEExternDynamicSharedMemoryBase<
          MoEExternDynamicSharedMemoryPass> {
  void runOnOperation() override {
    getOperation()->walk([](LLVM::GlobalOp global) {
      if (global.getAddrSpace() == kSharedAddressSpace &&
          global.getSymName().starts_with("__dynamic_shmem__"))
        global.setLinkage(LLVM::Linkage::External);
    });
  }
};

} // namespace
