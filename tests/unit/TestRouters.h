//===- TestRouters.h - A spec's host router on each backend -----*- C++ -*-===//
//
// The unit tests' one way to compile a spec into an rt::HostRouter on the
// CPU backend, or on the NVPTX backend's kernels on the GPU emulator where
// it is built: a failed compile is a test failure with its message and
// gives null.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_TESTS_UNIT_TESTROUTERS_H
#define MOEGEN_TESTS_UNIT_TESTROUTERS_H

#include "compiler/backend/cpu/CpuHostRouter.h"

#ifdef MOEGEN_TEST_GPU_EMULATOR
#include "compiler/backend/gpuemu/GpuEmuRouter.h"
#include "compiler/backend/nvptx/NvptxCompiler.h"
#endif

#include <gtest/gtest.h>

#include <memory>

namespace moegen::routingtest {

inline std::unique_ptr<rt::HostRouter>
compileOnCpu(const RoutingSpec &spec,
             const cpu::CpuCompileOptions &options = {}) {
  auto router = cpu::CpuHostRouter::compile(spec, options);
  if (!router) {
    ADD_FAILURE() << llvm::toString(router.takeError());
    return nullptr;
  }
  return std::move(*router);
}

#ifdef MOEGEN_TEST_GPU_EMULATOR
inline std::unique_ptr<rt::HostRouter>
compileEmulated(const RoutingSpec &spec,
                const gpuemu::GpuEmuOptions &options = {}) {
  auto router = gpuemu::compileEmulatedRouter(spec, options);
  if (!router) {
    ADD_FAILURE() << nvptx::takeCompileError(router.takeError()).second;
    return nullptr;
  }
  return std::move(*router);
}
#endif

} // namespace moegen::routingtest

#endif // MOEGEN_TESTS_UNIT_TESTROUTERS_H
