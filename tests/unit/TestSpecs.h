//===- TestSpecs.h - Routing specs several unit tests share -----*- C++ -*-===//
//
// Spec texts that more than one test file compiles, kept in one place so
// that a change of the spec language changes them once.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_TESTS_UNIT_TESTSPECS_H
#define MOEGEN_TESTS_UNIT_TESTSPECS_H

#include <string>

namespace moegen::routingtest {

/// Top-p and a capacity together: unused slots (-1 ids, top-p keeps fewer
/// than 4) and dropped slots (past an expert's capacity) in one call.
/// `capacityFactor` as the spec language writes it, e.g. "0.5".
inline std::string toppCapacitySpec(const std::string &capacityFactor) {
  return R"(name: topp_capacity
num_experts: 64
program: |
  route(logits) -> (ids, weights):
    s = softmax(logits)
    ids = topp(s, 4, p: 0.5)
    weights = normalize(gather(s, ids))
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids, capacity_factor: )" +
         capacityFactor + ")\n";
}

} // namespace moegen::routingtest

#endif // MOEGEN_TESTS_UNIT_TESTSPECS_H
