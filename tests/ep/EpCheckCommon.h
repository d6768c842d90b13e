//===- EpCheckCommon.h - What the EP checkers under mpirun share -*- C++
//-*-===//
//
// The forced ids of the all-gather scenarios and the expected-error
// printer of moegen-ep-check (EpCheck.cpp) and moegen-ep-device-check
// (EpDeviceCheck.cpp), whose lines the lit tests in tests/lit/EP/ check.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_TESTS_EP_EPCHECKCOMMON_H
#define MOEGEN_TESTS_EP_EPCHECKCOMMON_H

#include "runtime/Error.h"

#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

namespace moegen::epcheck {

constexpr int64_t kExperts = 8;

/// Rank r's forced ids: r tokens, token t of rank r picks (r + t) % 8 and
/// (r + t + 3) % 8.
inline std::vector<int32_t> forcedIds(int rank) {
  std::vector<int32_t> ids;
  for (int t = 0; t < rank; ++t) {
    ids.push_back((rank + t) % kExperts);
    ids.push_back((rank + t + 3) % kExperts);
  }
  return ids;
}

/// Runs `call`, which must throw: prints the error ("rank R: KIND error:
/// MESSAGE") and returns 0, or "FAIL: no error" and 1.
inline int expectThrow(int rank, const std::function<void()> &call) {
  try {
    call();
  } catch (const rt::Error &e) {
    std::printf("rank %d: %s error: %s\n", rank, rt::toString(e.kind()),
                e.what());
    return 0;
  }
  std::printf("rank %d: FAIL: no error\n", rank);
  return 1;
}

} // namespace moegen::epcheck

#endif // MOEGEN_TESTS_EP_EPCHECKCOMMON_H
