//===- CpuHostRouter.h - The CPU backend as a HostRouter --------*- C++ -*-===//
//
// The CPU backend (CpuRouter) behind the backend-neutral HostRouter
// interface of the runtime, so that tools feed it exactly as they feed the
// CUDA kernels (runtime/RouterInputs.h).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_CPU_CPUHOSTROUTER_H
#define MOEGEN_COMPILER_BACKEND_CPU_CPUHOSTROUTER_H

#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/spec/RoutingSpec.h"
#include "runtime/HostRouter.h"

#include <memory>
#include <string>

namespace moegen::cpu {

/// What a caller of a router compiled from `spec` must know to feed it.
rt::RouterFacts routerFactsOf(const RoutingSpec &spec);

class CpuHostRouter final : public rt::HostRouter {
public:
  explicit CpuHostRouter(std::unique_ptr<CpuRouter> router);
  /// CpuRouter::compile, wrapped.
  static llvm::Expected<std::unique_ptr<CpuHostRouter>>
  compile(const RoutingSpec &spec, const CpuCompileOptions &options);

  const rt::RouterFacts &facts() const override { return routerFacts; }
  std::string_view backendName() const override { return "cpu"; }
  std::string run(const rt::HostRouteCall &call) override;
  std::string permute(const rt::HostPermuteCall &call) override;
  std::string combine(const rt::HostCombineCall &call) override;
  std::string updateBias(const rt::HostUpdateBiasCall &call) override;

  CpuRouter &backend() { return *router; }

private:
  std::unique_ptr<CpuRouter> router;
  rt::RouterFacts routerFacts;
};

} // namespace moegen::cpu

#endif // MOEGEN_COMPILER_BACKEND_CPU_CPUHOSTROUTER_H
