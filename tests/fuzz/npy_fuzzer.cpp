//===- npy_fuzzer.cpp - libFuzzer target for the .npy reader --------------===//
//
// Feeds arbitrary bytes to parseNpy, and through an in-memory file to readNpy.
// Beyond "no crash, no leak, no undefined behaviour" it checks the reader's
// promises: an error is one line starting with the name it was given, both
// entry points agree on what they accept, and whatever parses survives a
// serializeNpy round trip unchanged.
//
//===----------------------------------------------------------------------===//

#include "runtime/npy/Npy.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

using namespace moegen::npy;

namespace {

[[noreturn]] void broken(const char *what, const std::string &detail) {
  std::fprintf(stderr, "npy_fuzzer: %s: %s\n", what, detail.c_str());
  std::abort();
}

void checkError(const std::string &error, const std::string &name) {
  if (error.empty())
    broken("failure without a message", name);
  if (error.find('\n') != std::string::npos)
    broken("message is not one line", error);
  if (error.rfind(name + ": ", 0) != 0)
    broken("message does not start with the name", error);
}

bool sameArray(const Array &a, const Array &b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.data == b.data;
}

/// An in-memory file (no disk I/O, which would dominate the run time), seen
/// by readNpy as the regular file /proc/self/fd/N.
int memoryFile() {
  static int fd = [] {
    int fd = memfd_create("npy_fuzzer", 0);
    if (fd < 0)
      broken("memfd_create failed", std::strerror(errno));
    return fd;
  }();
  return fd;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte *>(data),
                                   size);
  const std::string name = "fuzz.npy";
  std::string error;
  std::optional<Array> array = parseNpy(bytes, name, error);
  if (!array) {
    checkError(error, name);
  } else {
    if (!error.empty())
      broken("success with a message", error);
    // What parses must be consistent and serialize back to an equal array.
    int64_t elements = array->numElements();
    if (elements < 0 ||
        array->data.size() != size_t(elements) * itemSize(array->dtype))
      broken("data size does not match shape", std::to_string(size));
    std::vector<std::byte> again = serializeNpy(*array);
    std::string againError;
    std::optional<Array> reparsed = parseNpy(again, name, againError);
    if (!reparsed)
      broken("serialized array does not parse", againError);
    if (!sameArray(*array, *reparsed))
      broken("round trip changed the array", name);
  }

  // The same bytes through the file reader.
  int fd = memoryFile();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (ftruncate(fd, 0) != 0 ||
      (size && pwrite(fd, data, size, 0) != ssize_t(size)))
    broken("cannot write the in-memory file", std::strerror(errno));
  std::string fileError;
  std::optional<Array> fromFile = readNpy(path, fileError);
  if (!fromFile)
    checkError(fileError, path);
  if (bool(fromFile) != bool(array))
    broken("readNpy and parseNpy disagree", array ? fileError : error);
  if (fromFile && !sameArray(*array, *fromFile))
    broken("readNpy and parseNpy read different arrays", path);
  return 0;
}
