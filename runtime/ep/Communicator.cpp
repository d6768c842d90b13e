//===- Communicator.cpp - What every communicator checks ------------------===//

#include "runtime/ep/Communicator.h"

#include "runtime/Error.h"

namespace moegen::rt::ep {

void checkAllToAllV(const std::string &name, int ranks,
                    std::span<const std::size_t> sendBytes,
                    std::span<const std::size_t> sendOffsets,
                    std::span<const std::size_t> recvBytes,
                    std::span<const std::size_t> recvOffsets) {
  const auto n = static_cast<std::size_t>(ranks);
  if (sendBytes.size() != n || sendOffsets.size() != n ||
      recvBytes.size() != n || recvOffsets.size() != n)
    throw Error(Error::Kind::InvalidArgument,
                name + ": an all-to-all needs one count and offset per rank (" +
                    std::to_string(n) + ")");
}

} // namespace moegen::rt::ep
