//===- Error.h - The one exception type of the runtime ----------*- C++ -*-===//
//
// Every failure of the runtime library (manifest, cache, recorder, CUDA
// driver, kernel launch, kernel-reported input errors) is thrown as a
// moegen::rt::Error: a std::runtime_error whose what() is one line, plus a
// kind that callers can branch on (e.g. fall back to the CPU backend on
// NoDriver / NoDevice). Plain C++20; no LLVM, no CUDA.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_ERROR_H
#define MOEGEN_RUNTIME_ERROR_H

#include <stdexcept>
#include <string>

namespace moegen::rt {

class Error : public std::runtime_error {
public:
  enum class Kind {
    NoDriver,        ///< libcuda.so.1 missing or unusable (too old)
    NoDevice,        ///< the driver loads but sees no usable device
    Driver,          ///< a CUDA driver call failed
    Manifest,        ///< manifest.json missing, malformed or mismatched
    Arch,            ///< the kernels do not run on this device
    InvalidArgument, ///< a call's arguments are wrong (checked on the host)
    Kernel,          ///< a kernel reported an input error (checkErrors)
    Cache,           ///< the JIT cache could not be read or written
    Io,              ///< a file could not be read or written
    Compile,         ///< the compile step of a JIT cache miss failed
    Communication,   ///< a collective of the EP group failed (MPI, NCCL)
  };

  Error(Kind kind, const std::string &message)
      : std::runtime_error(message), errorKind(kind) {}

  Kind kind() const { return errorKind; }

private:
  Kind errorKind;
};

/// "NoDriver", "Manifest", ... for messages and tests.
const char *toString(Error::Kind kind);

/// The version of moegen this runtime was built with (MOEGEN_VERSION, the
/// CMake project version); manifests must carry the same compiler_version.
const char *runtimeVersion();

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_ERROR_H
