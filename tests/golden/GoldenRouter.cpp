//===- GoldenRouter.cpp - Reference semantics of MoE routing ----*- C++ -*-===//
//
// Straightforward double-precision implementation of GoldenRouter.h. Each
// step mirrors one line of the contract; nothing here is tuned for speed.
//
//===----------------------------------------------------------------------===//

#include "tests/golden/GoldenRouter.h"

#include "compiler/spec/Program.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <sstream>

namespace moegen::golden {

namespace {

/// Prints a float the way error messages quote it: `nan`, `inf`, `-inf` or
/// the shortest round-trippable decimal.
std::string formatValue(float value) {
  if (std::isnan(value))
    return "nan";
  if (std::isinf(value))
    return value > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os.precision(std::numeric_limits<float>::max_digits10);
  os << value;
  return os.str();
}

std::string index2(const char *tensor, int64_t row, int64_t col) {
  return std::string(tensor) + "[" + std::to_string(row) + "][" +
         std::to_string(col) + "]";
}

double sigmoid(double x) {
  // Two algebraically equal forms, so that exp never overflows into a lost
  // subnormal result; sigmoid(-inf) = 0 / (1 + 0) = 0.
  if (x >= 0)
    return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

double softplus(double x) {
  // log(1 + exp(x)) without overflow for large x nor cancellation for very
  // negative x; softplus(-inf) = 0 + log1p(0) = 0.
  return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
}

/// Guards the spec invariants that route() indexes with, so that an invalid
/// spec gives an error instead of out-of-bounds accesses.
std::optional<std::string> checkSpecShape(const RoutingSpec &spec,
                                          bool usesGroups) {
  const int64_t e = spec.numExperts;
  const int64_t k = spec.topK;
  if (e < 1)
    return "spec: num_experts = " + std::to_string(e) + ": must be positive";
  if (k < 1 || k > e)
    return "spec: top_k = " + std::to_string(k) + ": must be in [1, " +
           std::to_string(e) + "]";
  if (!usesGroups)
    return std::nullopt;
  if (e % spec.groups != 0)
    return "spec: groups = " + std::to_string(spec.groups) +
           ": must divide num_experts = " + std::to_string(e);
  if (spec.topkGroups < 1 || spec.topkGroups > spec.groups)
    return "spec: topk_groups = " + std::to_string(spec.topkGroups) +
           ": must be in [1, " + std::to_string(spec.groups) + "]";
  if (k > spec.topkGroups * spec.expertsPerGroup())
    return "spec: top_k = " + std::to_string(k) +
           ": exceeds the experts of the kept groups";
  return std::nullopt;
}

/// Checks one row of k expert ids (a hash-table row or a forced-ids row):
/// each id in [0, E) and none repeated. `what` names the row's unit in the
/// repeat message ("row" or "token").
template <typename IdT>
std::optional<std::string> checkIdRow(const char *tensor, int64_t row,
                                      const IdT *ids, int64_t k,
                                      int64_t numExperts, const char *what,
                                      bool unusedSlots = false) {
  for (int64_t j = 0; j < k; ++j) {
    const int64_t id = ids[j];
    // An unused slot of a top-p router: neither checked nor compared.
    if (unusedSlots && id == -1)
      continue;
    if (id < 0 || id >= numExperts)
      return index2(tensor, row, j) + " = " + std::to_string(id) +
             ": expert id outside [0, " + std::to_string(numExperts) + ")";
    // k <= kMaxTopK, so the quadratic scan over one row is cheap.
    for (int64_t i = 0; i < j; ++i)
      if (static_cast<int64_t>(ids[i]) == id)
        return index2(tensor, row, j) + " = " + std::to_string(id) +
               ": repeats an expert of the same " + what;
  }
  return std::nullopt;
}

/// Checks every input route() reads, in the documented order. Returns the
/// first violation.
std::optional<std::string> checkInputs(const RoutingSpec &spec,
                                       const RouterInputs &in, bool forced,
                                       bool usesBias, bool usesHash) {
  const int64_t numTokens = in.numTokens;
  const int64_t e = spec.numExperts;
  const int64_t k = spec.topK;

  if (numTokens < 0)
    return "num_tokens = " + std::to_string(numTokens) +
           ": must not be negative";
  // Slot indices t*k+j and the dispatch tensors are int32.
  if (numTokens > std::numeric_limits<int32_t>::max() / k)
    return "num_tokens = " + std::to_string(numTokens) +
           ": num_tokens * top_k must fit in int32";
  if (numTokens > 0 && !in.logits)
    return std::string("logits: required when num_tokens > 0");

  for (int64_t t = 0; t < numTokens; ++t)
    for (int64_t x = 0; x < e; ++x) {
      const float l = in.logits[t * e + x];
      // -inf is allowed: it is how callers mask an expert out.
      if (std::isnan(l) || (std::isinf(l) && l > 0))
        return index2("logits", t, x) + " is " + formatValue(l) +
               ": logits must be finite or -inf";
    }

  if (usesBias) {
    if (!in.bias)
      return std::string("bias: required by score_bias");
    for (int64_t x = 0; x < e; ++x)
      if (!std::isfinite(in.bias[x]))
        return "bias[" + std::to_string(x) + "] = " + formatValue(in.bias[x]) +
               ": must be finite";
  }

  if (usesHash) {
    if (!in.tokenIds)
      return std::string("token_ids: required by selection: hash");
    if (!in.hashTable)
      return std::string("hash_table: required by selection: hash");
    // Only rows some token uses are checked: a table may reserve rows.
    std::vector<bool> rowChecked(
        static_cast<size_t>(std::max<int64_t>(in.hashVocab, 0)), false);
    for (int64_t t = 0; t < numTokens; ++t) {
      const int64_t row = in.tokenIds[t];
      if (row < 0 || row >= in.hashVocab)
        return "token_ids[" + std::to_string(t) + "] = " + std::to_string(row) +
               ": outside the hash table's vocabulary [0, " +
               std::to_string(in.hashVocab) + ")";
      if (rowChecked[row])
        continue;
      rowChecked[row] = true;
      if (auto error = checkIdRow("hash_table", row, in.hashTable + row * k, k,
                                  e, "row"))
        return error;
    }
  }

  if (forced)
    for (int64_t t = 0; t < numTokens; ++t)
      if (auto error =
              checkIdRow("forced_ids", t, in.forcedIds + t * k, k, e, "token",
                         spec.unusedSlots))
        return error;

  if (spec.sharedGate) {
    if (numTokens > 0 && !in.sharedGateLogits)
      return std::string("shared_gate_logits: required by shared_expert_gate");
    for (int64_t t = 0; t < numTokens; ++t) {
      const float l = in.sharedGateLogits[t];
      if (std::isnan(l) || (std::isinf(l) && l > 0))
        return index2("shared_gate_logits", t, 0) + " is " + formatValue(l) +
               ": shared gate logits must be finite or -inf";
    }
  }

  return std::nullopt;
}

} // namespace

std::vector<double> scoreToken(const RoutingSpec &spec,
                               const float *rawLogits) {
  const int64_t e = spec.numExperts;
  // Temperature, then the soft cap; -inf (a masked expert) stays -inf.
  std::vector<double> logits(rawLogits, rawLogits + e);
  for (double &l : logits) {
    if (std::isinf(l) && l < 0)
      continue;
    l /= spec.temperature;
    if (spec.logitSoftcap != 0.0)
      l = spec.logitSoftcap * std::tanh(l / spec.logitSoftcap);
  }
  std::vector<double> scores(e);
  switch (spec.scoring) {
  case Scoring::Softmax: {
    double maxLogit = -std::numeric_limits<double>::infinity();
    for (int64_t x = 0; x < e; ++x)
      maxLogit = std::max(maxLogit, static_cast<double>(logits[x]));
    // All logits -inf: the limit of equal logits, i.e. uniform. Subtracting
    // m = -inf would otherwise give nan.
    if (std::isinf(maxLogit)) {
      std::fill(scores.begin(), scores.end(), 1.0 / static_cast<double>(e));
      break;
    }
    double sum = 0.0;
    for (int64_t x = 0; x < e; ++x) {
      scores[x] = std::exp(static_cast<double>(logits[x]) - maxLogit);
      sum += scores[x];
    }
    // sum >= 1: the maximum contributes exp(0).
    for (double &s : scores)
      s /= sum;
    break;
  }
  case Scoring::Sigmoid:
    for (int64_t x = 0; x < e; ++x)
      scores[x] = sigmoid(static_cast<double>(logits[x]));
    break;
  case Scoring::SqrtSoftplus:
    for (int64_t x = 0; x < e; ++x)
      scores[x] = std::sqrt(softplus(static_cast<double>(logits[x])));
    break;
  case Scoring::Identity:
    for (int64_t x = 0; x < e; ++x)
      scores[x] = logits[x];
    break;
  }
  return scores;
}

std::vector<double> selectionKeys(const std::vector<double> &scores,
                                  const float *bias) {
  std::vector<double> keys = scores;
  if (bias)
    for (size_t x = 0; x < keys.size(); ++x)
      keys[x] += static_cast<double>(bias[x]);
  return keys;
}

std::vector<bool> selectableExperts(const std::vector<double> &keys,
                                    int64_t groups, int64_t topkGroups,
                                    GroupScore groupScore) {
  const int64_t numExperts = static_cast<int64_t>(keys.size());
  if (groups <= 1)
    return std::vector<bool>(numExperts, true);

  const int64_t perGroup = numExperts / groups;
  std::vector<double> groupScores(groups);
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<double> members(keys.begin() + g * perGroup,
                                keys.begin() + (g + 1) * perGroup);
    std::sort(members.begin(), members.end(), std::greater<double>());
    // Top2Sum of a one-expert group degenerates to that expert's key.
    const int64_t used =
        groupScore == GroupScore::Top2Sum ? std::min<int64_t>(2, perGroup) : 1;
    groupScores[g] =
        std::accumulate(members.begin(), members.begin() + used, 0.0);
  }

  // Best groups first; equal scores go to the lower group index.
  std::vector<int64_t> order(groups);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (groupScores[a] != groupScores[b])
      return groupScores[a] > groupScores[b];
    return a < b;
  });

  std::vector<bool> selectable(numExperts, false);
  for (int64_t rank = 0; rank < topkGroups; ++rank) {
    const int64_t g = order[rank];
    for (int64_t x = g * perGroup; x < (g + 1) * perGroup; ++x)
      selectable[x] = true;
  }
  return selectable;
}

std::vector<int32_t> topKExperts(const std::vector<double> &keys,
                                 const std::vector<bool> &selectable,
                                 int64_t k) {
  std::vector<int32_t> candidates;
  for (size_t x = 0; x < keys.size(); ++x)
    if (selectable[x])
      candidates.push_back(static_cast<int32_t>(x));

  // Descending key; equal keys go to the lower expert index, so the order is
  // total and the result deterministic.
  std::sort(candidates.begin(), candidates.end(), [&](int32_t a, int32_t b) {
    if (keys[a] != keys[b])
      return keys[a] > keys[b];
    return a < b;
  });
  if (static_cast<int64_t>(candidates.size()) > k)
    candidates.resize(k);
  return candidates;
}

int64_t dispatchCapacity(double capacityFactor, int64_t numTokens,
                         int64_t topK, int64_t numExperts) {
  const int64_t slots = numTokens * topK;
  const double wanted = std::ceil(capacityFactor * double(slots) /
                                  double(numExperts));
  return wanted >= double(slots) ? slots : static_cast<int64_t>(wanted);
}

std::string computeDispatch(int64_t numExperts, int64_t numTokens,
                            int64_t topK, const std::vector<int32_t> &ids,
                            RouterOutputs &out, bool unusedSlots,
                            double capacityFactor) {
  const int64_t numSlots = numTokens * topK;
  if (numTokens < 0 || topK < 1 || numExperts < 1 ||
      static_cast<int64_t>(ids.size()) != numSlots)
    return "ids: " + std::to_string(ids.size()) +
           " entries, expected num_tokens * top_k = " +
           std::to_string(numSlots);
  for (size_t slot = 0; slot < ids.size(); ++slot)
    if ((ids[slot] < 0 || ids[slot] >= numExperts) &&
        !(unusedSlots && ids[slot] == -1))
      return "ids[" + std::to_string(slot) + "] = " +
             std::to_string(ids[slot]) + ": expert id outside [0, " +
             std::to_string(numExperts) + ")";

  // With a capacity C, an expert keeps its first C slots in slot order;
  // the rest are dropped like unused slots (semantics.md §10).
  const int64_t capacity =
      capacityFactor > 0
          ? dispatchCapacity(capacityFactor, numTokens, topK, numExperts)
          : numSlots;
  std::vector<int32_t> kept(ids);
  out.expertCounts.assign(numExperts, 0);
  for (int32_t &id : kept) {
    if (id == -1)
      continue;
    if (out.expertCounts[id] >= capacity)
      id = -1; // dropped
    else
      ++out.expertCounts[id];
  }

  out.expertOffsets.assign(numExperts + 1, 0);
  for (int64_t x = 0; x < numExperts; ++x)
    out.expertOffsets[x + 1] = out.expertOffsets[x] + out.expertCounts[x];

  // Counting sort: visiting slots in increasing order and appending each to
  // its expert's bucket yields the (expert, slot) order in O(T*k + E).
  std::vector<int32_t> nextPosition(out.expertOffsets.begin(),
                                    out.expertOffsets.end() - 1);
  // Unused slots (-1) are counted nowhere: position -1, and the positions
  // past the used slots hold -1.
  out.sortedSlots.assign(numSlots, -1);
  out.slotPositions.assign(numSlots, -1);
  for (int64_t slot = 0; slot < numSlots; ++slot) {
    if (kept[slot] == -1)
      continue;
    const int32_t position = nextPosition[kept[slot]]++;
    out.sortedSlots[position] = static_cast<int32_t>(slot);
    out.slotPositions[slot] = position;
  }
  return {};
}

uint32_t expertChoiceOrder(float key) {
  if (key == 0.0f)
    key = 0.0f; // -0 ranks as +0
  uint32_t bits;
  std::memcpy(&bits, &key, sizeof bits);
  return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

int64_t expertChoiceCapacity(double capacityFactor, int64_t numTokens,
                             int64_t numExperts) {
  return dispatchCapacity(capacityFactor, numTokens, 1, numExperts);
}

std::vector<int32_t> expertChoiceIds(const std::vector<float> &keys,
                                     int64_t numTokens, int64_t numExperts,
                                     int64_t topK, double capacityFactor) {
  const int64_t c = expertChoiceCapacity(capacityFactor, numTokens, numExperts);
  auto key = [&](int64_t t, int64_t e) {
    return expertChoiceOrder(keys[t * numExperts + e]);
  };
  // Each expert's c best tokens: descending key, then ascending token.
  std::vector<std::vector<int32_t>> choosers(numTokens);
  std::vector<int32_t> tokens(numTokens);
  for (int64_t e = 0; e < numExperts; ++e) {
    std::iota(tokens.begin(), tokens.end(), 0);
    std::stable_sort(tokens.begin(), tokens.end(), [&](int32_t a, int32_t b) {
      return key(a, e) > key(b, e);
    });
    for (int64_t i = 0; i < c; ++i)
      choosers[tokens[i]].push_back(static_cast<int32_t>(e));
  }
  // Each token's choosers: descending key, then ascending expert; at most k.
  std::vector<int32_t> ids(numTokens * topK, -1);
  for (int64_t t = 0; t < numTokens; ++t) {
    std::vector<int32_t> &list = choosers[t];
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return key(t, a) > key(t, b);
    });
    for (int64_t j = 0; j < topK && j < int64_t(list.size()); ++j)
      ids[t * topK + j] = list[j];
  }
  return ids;
}

namespace {

/// A gating program, one op after another per token (Program.h): rows of
/// E values (scores, keys) in double with the experts a group mask left
/// selectable, rows of k ids, rows of k weights. The op rules are the
/// spec path's own functions above.
void interpretProgram(const RoutingSpec &spec, const program::Program &program,
                      const program::Entry &entry, const RouterInputs &inputs,
                      RouterOutputs &out) {
  const int64_t e = spec.numExperts, k = spec.topK;
  struct Row {
    std::vector<double> values;
    std::vector<bool> selectable;
    std::vector<int32_t> ids;
  };
  // An expert-choice selection needs every token's keys first: a first
  // run of the tokens stops at it and keeps its keys, and the second reads
  // the ids the experts' picks give.
  const bool expertChoice =
      std::any_of(entry.ops.begin(), entry.ops.end(), [](const program::Op &op) {
        return op.kind == program::OpKind::ExpertChoice;
      });
  std::vector<float> choiceKeys;
  std::vector<int32_t> choiceIds;
  double choiceFactor = 0.0;
  for (int pass = expertChoice ? 0 : 1; pass < 2; ++pass) {
    if (pass == 1 && expertChoice)
      choiceIds =
          expertChoiceIds(choiceKeys, inputs.numTokens, e, k, choiceFactor);
    for (int64_t t = 0; t < inputs.numTokens; ++t) {
      std::vector<Row> rows(program.values.size());
      bool stopped = false;
      for (size_t index = 0; index < entry.paramNames.size(); ++index) {
        const std::string &name = entry.paramNames[index];
        Row &row = rows[entry.params[index]];
        if (name == "logits")
          row.values.assign(inputs.logits + t * e, inputs.logits + t * e + e);
        else if (name == "bias")
          row.values.assign(inputs.bias, inputs.bias + e);
      }
      for (const program::Op &op : entry.ops) {
        auto in = [&](size_t i) -> Row & { return rows[op.operands[i]]; };
        Row result;
        if (op.kind == program::OpKind::ExpertChoice && pass == 0) {
          // The kernels hold keys as f32 rows.
          choiceKeys.insert(choiceKeys.end(), in(0).values.begin(),
                            in(0).values.end());
          choiceFactor = *op.capacityFactor;
          stopped = true;
          break;
        }
        switch (op.kind) {
        case program::OpKind::Score: {
          RoutingSpec scoring;
          scoring.numExperts = e;
          scoring.scoring = op.scoring;
          scoring.temperature = op.temperature.value_or(1.0);
          scoring.logitSoftcap = op.softcap.value_or(0.0);
          // Scores are f32 values in the kernels: a score of scores reads
          // them rounded.
          std::vector<float> logits(in(0).values.begin(), in(0).values.end());
          result.values = scoreToken(scoring, logits.data());
          break;
        }
        case program::OpKind::AddBias:
          result.values = in(0).values;
          for (int64_t x = 0; x < e; ++x)
            result.values[x] += in(1).values[x];
          result.selectable = in(0).selectable;
          break;
        case program::OpKind::GroupMask:
          result.values = in(0).values;
          result.selectable =
              selectableExperts(result.values, op.groups, op.keep, op.by);
          for (int64_t x = 0; x < e; ++x)
            if (!result.selectable[x])
              result.values[x] = -std::numeric_limits<double>::infinity();
          break;
        case program::OpKind::TopK:
        case program::OpKind::TopP:
          result.ids =
              topKExperts(in(0).values,
                          in(0).selectable.empty() ? std::vector<bool>(e, true)
                                                   : in(0).selectable,
                          k);
          if (op.kind == program::OpKind::TopP) {
            // semantics.md, "Top-p selection": cut after the first slot
            // whose running sum of keys exceeds p.
            double sum = 0.0;
            bool cut = false;
            for (int32_t &id : result.ids) {
              if (cut) {
                id = -1;
                continue;
              }
              sum += in(0).values[id];
              cut = sum > op.p;
            }
          }
          break;
        case program::OpKind::ExpertChoice:
          result.ids.assign(choiceIds.begin() + t * k,
                            choiceIds.begin() + t * k + k);
          break;
        case program::OpKind::Hash: {
          const int32_t *row = inputs.hashTable + inputs.tokenIds[t] * k;
          result.ids.assign(row, row + k);
          break;
        }
        case program::OpKind::Forced:
          for (int64_t j = 0; j < k; ++j)
            result.ids.push_back(
                static_cast<int32_t>(inputs.forcedIds[t * k + j]));
          break;
        case program::OpKind::Gather:
          for (int32_t id : in(1).ids)
            result.values.push_back(id == -1 ? 0.0 : in(0).values[id]);
          break;
        case program::OpKind::Sparsemixer: {
          // semantics.md, "Sparsemixer": per slot, the softmax at the slot's
          // expert over the close experts not selected before it.
          const std::vector<double> &x = in(0).values;
          const std::vector<int32_t> &ids = in(1).ids;
          for (size_t j = 0; j < ids.size(); ++j) {
            if (ids[j] == -1) { // an unused slot weighs 0
              result.values.push_back(0.0);
              continue;
            }
            const double m = x[ids[j]];
            double sum = 0.0;
            for (int64_t e2 = 0; e2 < e; ++e2) {
              if (std::find(ids.begin(), ids.begin() + j, e2) !=
                  ids.begin() + j)
                continue;
              const double ratio = (m - x[e2]) / std::max(std::fabs(x[e2]), m);
              if (ratio > 2.0 * op.jitterEps)
                continue;
              sum += std::exp(x[e2] == m ? 0.0 : x[e2] - m);
            }
            result.values.push_back(1.0 / sum);
          }
          break;
        }
        case program::OpKind::Normalize: {
          result.values = in(0).values;
          const double sum =
              std::accumulate(result.values.begin(), result.values.end(), 0.0);
          for (double &w : result.values)
            w /= sum + op.epsilon;
          break;
        }
        case program::OpKind::Scale:
          result.values = in(0).values;
          for (double &w : result.values)
            w *= op.factor;
          break;
        case program::OpKind::Capture:
          // The capture buffer is the caller's; route() reports ids only.
          break;
        case program::OpKind::SharedGate:
          if (pass == 1)
            out.sharedGate.push_back(sigmoid(inputs.sharedGateLogits[t]));
          break;
        case program::OpKind::Dispatch:
        case program::OpKind::Permute:
        case program::OpKind::Combine:
        case program::OpKind::UpdateBias:
          break; // entries of their own, not routing
        }
        if (!op.results.empty())
          rows[op.results.front()] = std::move(result);
      }
      if (stopped)
        continue;
      const Row &ids = rows[entry.results[0]];
      const Row &weights = rows[entry.results[1]];
      out.topkIds.insert(out.topkIds.end(), ids.ids.begin(), ids.ids.end());
      out.topkWeights.insert(out.topkWeights.end(), weights.values.begin(),
                             weights.values.end());
    }
  }
}

} // namespace

RouterResult route(const RoutingSpec &spec, const RouterInputs &inputs) {
  RouterResult result;
  const bool forced = inputs.forcedIds != nullptr;
  const bool isTopK = !forced && spec.selection == Selection::TopK;
  const bool usesBias = isTopK && spec.scoreBias;
  const bool usesGroups = isTopK && spec.isGrouped();
  const bool usesHash = !forced && spec.selection == Selection::Hash;

  if (auto error = checkSpecShape(spec, usesGroups)) {
    result.error = *error;
    return result;
  }
  if (auto error = checkInputs(spec, inputs, forced, usesBias, usesHash)) {
    result.error = *error;
    return result;
  }

  const int64_t numTokens = inputs.numTokens;
  const int64_t e = spec.numExperts;
  const int64_t k = spec.topK;
  RouterOutputs &out = result.outputs;
  out.topkIds.reserve(numTokens * k);
  out.topkWeights.reserve(numTokens * k);

  if (spec.isProgram()) {
    program::ProgramError error;
    std::optional<program::Program> program = program::parseProgram(
        spec.program, {e, spec.logitsDType, spec.hiddenDType}, error);
    if (!program) {
      result.error = "program:" + std::to_string(error.loc.line) + ":" +
                     std::to_string(error.loc.column) + ": " + error.message;
      return result;
    }
    const program::Entry *entry =
        forced ? program->find(abi::EntryKind::Replay)
               : program->find(spec.selection == Selection::Hash
                                   ? abi::EntryKind::RouteHash
                                   : abi::EntryKind::Route);
    if (!entry) {
      result.error = "forced_ids: the program has no replay entry";
      return result;
    }
    interpretProgram(spec, *program, *entry, inputs, out);
    if (spec.dispatch)
      result.error = computeDispatch(e, numTokens, k, out.topkIds, out,
                                     spec.unusedSlots, spec.capacityFactor);
    return result;
  }

  for (int64_t t = 0; t < numTokens; ++t) {
    const std::vector<double> scores = scoreToken(spec, inputs.logits + t * e);

    std::vector<int32_t> ids;
    if (forced) {
      const int64_t *row = inputs.forcedIds + t * k;
      for (int64_t j = 0; j < k; ++j)
        ids.push_back(static_cast<int32_t>(row[j]));
    } else if (usesHash) {
      const int32_t *row = inputs.hashTable + inputs.tokenIds[t] * k;
      ids.assign(row, row + k);
    } else {
      const std::vector<double> keys =
          selectionKeys(scores, usesBias ? inputs.bias : nullptr);
      const std::vector<bool> selectable =
          usesGroups ? selectableExperts(keys, spec.groups, spec.topkGroups,
                                         spec.groupScore)
                     : std::vector<bool>(e, true);
      ids = topKExperts(keys, selectable, k);
    }

    // Weights come from the unbiased scores in every mode.
    std::vector<double> weights;
    for (int32_t id : ids)
      weights.push_back(scores[id]);
    if (spec.normalize) {
      const double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
      for (double &w : weights)
        w /= sum + spec.normalizeEpsilon;
    }
    for (double &w : weights)
      w *= spec.scalingFactor;

    out.topkIds.insert(out.topkIds.end(), ids.begin(), ids.end());
    out.topkWeights.insert(out.topkWeights.end(), weights.begin(),
                           weights.end());
  }

  if (spec.sharedGate)
    for (int64_t t = 0; t < numTokens; ++t)
      out.sharedGate.push_back(sigmoid(inputs.sharedGateLogits[t]));
  if (spec.dispatch)
    result.error = computeDispatch(e, numTokens, k, out.topkIds, out);
  return result;
}

std::string updateBias(const std::vector<float> &bias,
                       const std::vector<int32_t> &counts, double rate,
                       std::vector<float> &updated) {
  const int64_t e = static_cast<int64_t>(bias.size());
  if (static_cast<int64_t>(counts.size()) != e)
    return "expert_counts: " + std::to_string(counts.size()) +
           " entries, expected one per expert (" + std::to_string(e) + ")";
  int64_t sum = 0;
  for (int32_t count : counts)
    sum += count;
  for (int64_t x = 0; x < e; ++x) {
    if (!std::isfinite(bias[x]))
      return "bias[" + std::to_string(x) + "] = " + formatValue(bias[x]) +
             ": must be finite";
    if (counts[x] < 0)
      return "expert_counts[" + std::to_string(x) + "] = " +
             std::to_string(counts[x]) + ": a load must not be negative";
  }
  updated.resize(bias.size());
  for (int64_t x = 0; x < e; ++x) {
    // sign(mean - count) = sign(sum - E * count), exactly.
    const int64_t difference = sum - e * int64_t(counts[x]);
    const float step = difference > 0   ? float(rate)
                       : difference < 0 ? -float(rate)
                                        : 0.0f;
    updated[x] = bias[x] + step;
  }
  return {};
}

std::string permute(int64_t numTokens, int64_t topK, int64_t hiddenSize,
                    const std::vector<float> &hidden,
                    const std::vector<int32_t> &sortedSlots,
                    std::vector<float> &permuted, bool unusedSlots) {
  const int64_t slots = numTokens * topK;
  for (int64_t p = 0; p < slots; ++p)
    if ((sortedSlots[p] < 0 || sortedSlots[p] >= slots) &&
        !(unusedSlots && sortedSlots[p] == -1))
      return "sorted_slots[" + std::to_string(p) +
             "] = " + std::to_string(sortedSlots[p]) +
             ": outside the slots [0, " + std::to_string(slots) + ")";
  permuted.assign(static_cast<size_t>(slots * hiddenSize), 0.0f);
  for (int64_t p = 0; p < slots; ++p) {
    if (sortedSlots[p] == -1)
      continue; // an unused slot: a row of zeros
    const int64_t token = sortedSlots[p] / topK;
    std::copy_n(hidden.begin() + token * hiddenSize, hiddenSize,
                permuted.begin() + p * hiddenSize);
  }
  return {};
}

std::string combine(int64_t numTokens, int64_t topK, int64_t hiddenSize,
                    const std::vector<float> &weights,
                    const std::vector<int32_t> &slotPositions,
                    const std::vector<float> &expertOutput,
                    std::vector<float> &combined, bool unusedSlots) {
  const int64_t slots = numTokens * topK;
  for (int64_t s = 0; s < slots; ++s)
    if ((slotPositions[s] < 0 || slotPositions[s] >= slots) &&
        !(unusedSlots && slotPositions[s] == -1))
      return "slot_positions[" + std::to_string(s) +
             "] = " + std::to_string(slotPositions[s]) +
             ": outside the permuted rows [0, " + std::to_string(slots) + ")";
  combined.assign(static_cast<size_t>(numTokens * hiddenSize), 0.0f);
  for (int64_t t = 0; t < numTokens; ++t)
    for (int64_t h = 0; h < hiddenSize; ++h) {
      float sum = 0.0f;
      for (int64_t j = 0; j < topK; ++j) {
        const int64_t row = slotPositions[t * topK + j];
        if (row == -1)
          continue; // an unused slot adds no term
        sum = std::fma(weights[t * topK + j],
                       expertOutput[row * hiddenSize + h], sum);
      }
      combined[t * hiddenSize + h] = sum;
    }
  return {};
}

} // namespace moegen::golden
