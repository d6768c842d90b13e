//===- Error.cpp - Error kinds and the runtime's version ------------------===//

#include "runtime/Error.h"

#ifndef MOEGEN_VERSION
#error "MOEGEN_VERSION must be defined by the build (runtime/CMakeLists.txt)"
#endif

namespace moegen::rt {

const char *toString(Error::Kind kind) {
  switch (kind) {
  case Error::Kind::NoDriver:
    return "NoDriver";
  case Error::Kind::NoDevice:
    return "NoDevice";
  case Error::Kind::Driver:
    return "Driver";
  case Error::Kind::Manifest:
    return "Manifest";
  case Error::Kind::Arch:
    return "Arch";
  case Error::Kind::InvalidArgument:
    return "InvalidArgument";
  case Error::Kind::Kernel:
    return "Kernel";
  case Error::Kind::Cache:
    return "Cache";
  case Error::Kind::Io:
    return "Io";
  case Error::Kind::Compile:
    return "Compile";
  case Error::Kind::Communication:
    return "Communication";
  }
  return "Unknown";
}

const char *runtimeVersion() { return MOEGEN_VERSION; }

} // namespace moegen::rt
