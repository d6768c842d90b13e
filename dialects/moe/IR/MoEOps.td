//===- MoEOps.td - Operations of the moe dialect -----------*- tablegen -*-===//
//
// Shapes: T is the token dimension (dynamic or static), E the number of
// experts (static), k the experts chosen per token (static). Scores, keys and
// weights are f32; expert ids are i32. Shape rules that TableGen cannot
// express are checked by the C++ verifiers in MoEOps.cpp, whose messages name
// the operand or attribute and the rule broken.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEOPS_TD
#define MOEGEN_DIALECT_MOE_IR_MOEOPS_TD

include "dialects/moe/IR/MoEDialect.td"
include "dialects/moe/IR/MoEEnums.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

// hash_select, forced_select and capture validate run-time input and report
// violations through the entry point's error status: they have no memory
// effects but are not speculatable (not Pure), so that no pass hoists them
// out of the condition that guards them.

// Results print with their role as name (%scores, %ids, ...).
def MoE_NamedResults
    : DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>;

// Tensor kinds by role; the verifiers add the static-dimension rules.
def MoE_LogitsTensor : TensorRankOf<[F32, BF16, F16], [2]>;
def MoE_ScoreTensor  : TensorRankOf<[F32], [2]>;
def MoE_BiasTensor   : TensorRankOf<[F32], [1]>;
def MoE_IdsTensor    : TensorRankOf<[I32], [2]>;
def MoE_IdsInTensor  : TensorRankOf<[I32, I64], [2]>;
def MoE_TokenIdsTensor : TensorRankOf<[I32, I64], [1]>;
def MoE_HashTableTensor : TensorRankOf<[I32], [2]>;
def MoE_WeightTensor : TensorRankOf<[F32], [2]>;
def MoE_MetaTensor   : TensorRankOf<[I32], [1]>;
def MoE_CaptureTensor : TensorRankOf<[I16, I32], [3]>;
def MoE_HiddenTensor : TensorRankOf<[F32, BF16, F16], [2]>;

//===----------------------------------------------------------------------===//
// Scoring
//===----------------------------------------------------------------------===//

def MoE_ScoreOp : MoE_Op<"score", [Pure, MoE_NamedResults]> {
  let summary = "expert scores from gate logits";
  let description = [{
    Computes per-token expert scores in fp32 from logits of type f32, bf16 or
    f16:

    - `softmax`: `s = exp(l - max l) / sum(exp(l - max l))`; a token whose
      logits are all `-inf` gets `1/E` everywhere (the limit of equal logits);
    - `sigmoid`: `s = 1 / (1 + exp(-l))`;
    - `sqrtsoftplus`: `s = sqrt(softplus(l))`, with the stable
      `softplus(x) = max(x, 0) + log1p(exp(-|x|))` (DeepSeek-V4);
    - `identity`: `s = l`, the validated logits in f32, for routers that
      select on the raw logits (Phi-3.5-MoE's sparsemixer).

    Before the scoring function, and after the logits are validated, each
    logit may be divided by a `temperature` and then soft-capped,
    `l = softcap * tanh(l / softcap)`; `-inf` stays `-inf` (a masked
    expert stays masked). Both transforms are increasing, so they change
    the scores, never the order of the logits.

    Example:
    ```mlir
    %s = moe.score sigmoid %logits : tensor<?x256xbf16> -> tensor<?x256xf32>
    %t = moe.score softmax %logits temperature 2.0 softcap 30.0
        : tensor<?x64xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_ScoringKindAttr:$kind, MoE_LogitsTensor:$logits,
                       OptionalAttr<F64Attr>:$temperature,
                       OptionalAttr<F64Attr>:$softcap);
  let results = (outs MoE_ScoreTensor:$scores);
  let assemblyFormat = [{
    $kind $logits (`temperature` $temperature^)? (`softcap` $softcap^)?
    attr-dict `:` type($logits) `->` type($scores)
  }];
  let hasVerifier = 1;
}

def MoE_SharedGateOp : MoE_Op<"shared_gate", [Pure, MoE_NamedResults]> {
  let summary = "the shared expert's gate from its one logit per token";
  let description = [{
    `gate[t, 0] = 1 / (1 + exp(-logits[t, 0]))` in fp32, from a logit of
    type f32, bf16 or f16, validated like the gate logits (finite or
    `-inf`). Qwen2-MoE scales its always-on shared expert's output by this
    gate; its logit comes from a linear layer of one output beside the
    router's, so the kernel that routes a token also gates its shared
    expert.

    ```mlir
    %g = moe.shared_gate %x : tensor<?x1xbf16> -> tensor<?x1xf32>
    ```
  }];
  let arguments = (ins MoE_LogitsTensor:$logits);
  let results = (outs MoE_ScoreTensor:$gate);
  let assemblyFormat = [{
    $logits attr-dict `:` type($logits) `->` type($gate)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Selection
//===----------------------------------------------------------------------===//

def MoE_AddBiasOp : MoE_Op<"add_bias",
    [Pure, MoE_NamedResults, AllTypesMatch<["scores", "keys"]>]> {
  let summary = "selection keys: scores plus a per-expert correction bias";
  let description = [{
    `keys[t, e] = scores[t, e] + bias[e]`. The keys steer selection only:
    weights are always gathered from the unbiased scores (DeepSeek-V3's
    `e_score_correction_bias`).

    ```mlir
    %keys = moe.add_bias %s, %bias : tensor<?x256xf32>, tensor<256xf32>
    ```
  }];
  let arguments = (ins MoE_ScoreTensor:$scores, MoE_BiasTensor:$bias);
  let results = (outs MoE_ScoreTensor:$keys);
  let assemblyFormat = [{
    $scores `,` $bias attr-dict `:` type($scores) `,` type($bias)
  }];
  let hasVerifier = 1;
}

def MoE_GroupMaskOp : MoE_Op<"group_mask",
    [Pure, MoE_NamedResults, AllTypesMatch<["keys", "masked"]>]> {
  let summary = "keep the best groups of experts, mask the others to -inf";
  let description = [{
    Splits the E experts of each token into `groups` contiguous groups of
    `E / groups`, scores each group from the keys (`top2_sum`: the sum of its
    two largest keys; `max`: its largest key), keeps the best `keep` groups
    (ties go to the lower group index) and sets the keys of every other
    expert to `-inf`, so that a following `moe.topk` can never select them.
    Grouped top-k is `moe.group_mask` followed by `moe.topk`.

    ```mlir
    %m = moe.group_mask %keys groups 8 keep 4 by top2_sum : tensor<?x256xf32>
    ```
  }];
  let arguments = (ins MoE_ScoreTensor:$keys, I64Attr:$groups, I64Attr:$keep,
                       MoE_GroupScoreKindAttr:$group_score);
  let results = (outs MoE_ScoreTensor:$masked);
  let assemblyFormat = [{
    $keys `groups` $groups `keep` $keep `by` $group_score attr-dict `:`
    type($keys)
  }];
  let hasVerifier = 1;
}

def MoE_TopKOp : MoE_Op<"topk", [Pure, MoE_NamedResults]> {
  let summary = "ids of the k largest keys, descending, ties to the lower id";
  let description = [{
    For each token, the ids of the `k` largest keys in descending order of
    key. Equal keys are ordered by ascending expert id, so the result is
    deterministic on every backend. Keys equal to `-inf` (masked by
    `moe.group_mask`) are only chosen if fewer than `k` keys are larger, which
    the spec rules exclude.

    ```mlir
    %ids = moe.topk %keys k 8 : tensor<?x256xf32> -> tensor<?x8xi32>
    ```
  }];
  let arguments = (ins MoE_ScoreTensor:$keys, I64Attr:$k);
  let results = (outs MoE_IdsTensor:$ids);
  let assemblyFormat = [{
    $keys `k` $k attr-dict `:` type($keys) `->` type($ids)
  }];
  let hasVerifier = 1;
}

def MoE_TopPOp : MoE_Op<"topp", [Pure, MoE_NamedResults]> {
  let summary = "top-p routing: the fewest best keys whose sum passes p, at most k";
  let description = [{
    Dynamic-k selection ("top-p routing"): the ids of `moe.topk` with the
    same keys and k, cut after the first slot at which the running sum of
    the selected keys, in slot order, exceeds `p`; the slots after it are
    unused and hold the sentinel id -1. A token always keeps its best
    expert. With softmax scores as keys this is the cumulative-probability
    rule of dynamic routing MoEs, capped at k experts:

    `S_j = keys[t, ids_0] + ... + keys[t, ids_j]` (f32, in slot order),
    `n = 1 + min{ j : S_j > p }` (k when no such j), slots `j >= n` hold -1.

    The consumers of the ids treat -1 as "no expert": `moe.gather` and
    `moe.sparsemixer` give it weight 0, `moe.capture` records it, and
    `moe.dispatch`, `moe.permute`, `moe.combine` and `moe.forced_select`
    accept it when they carry `unused_slots`.

    ```mlir
    %ids = moe.topp %scores k 8 p 6.000000e-01
        : tensor<?x64xf32> -> tensor<?x8xi32>
    ```
  }];
  let arguments = (ins MoE_ScoreTensor:$keys, I64Attr:$k, F64Attr:$p);
  let results = (outs MoE_IdsTensor:$ids);
  let assemblyFormat = [{
    $keys `k` $k `p` $p attr-dict `:` type($keys) `->` type($ids)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertChoiceOp : MoE_Op<"expert_choice", [Pure, MoE_NamedResults]> {
  let summary = "expert-choice selection: each expert takes its best tokens";
  let description = [{
    Expert-choice routing (Zhou et al., 2022): instead of each token picking
    its experts, each expert e picks the `c` tokens of the batch with the
    largest `keys[t, e]`, where

    `c = min(T, ceil(capacity_factor * T / E))` (in f64),

    ties between tokens going to the lower token index. The result lists,
    per token, the experts that picked it, in descending order of key (ties
    to the lower expert index), at most `k` of them; the slots after them
    hold the sentinel id -1. A token no expert picked has only -1 (it skips
    the experts, as a dropped token of a capacity does); a token picked by
    more than k experts keeps its k best, and the others lose that token.

    Keys are compared as f32 values with -0 equal to +0 (a NaN ranks by its
    bits: above +inf when positive). The op spans the tokens of the batch:
    an entry point holding it is lowered as one kernel over all tokens,
    which first finds each expert's c-th best key (a radix select over the
    column), then picks per token.

    The consumers treat -1 as for `moe.topp`: `moe.gather` gives it weight
    0 and `moe.dispatch`, `moe.permute`, `moe.combine` and
    `moe.forced_select` accept it with `unused_slots`.

    ```mlir
    %ids = moe.expert_choice %scores k 4 capacity_factor 2.000000e+00
        : tensor<?x64xf32> -> tensor<?x4xi32>
    ```
  }];
  let arguments = (ins MoE_ScoreTensor:$keys, I64Attr:$k,
                       F64Attr:$capacity_factor);
  let results = (outs MoE_IdsTensor:$ids);
  let assemblyFormat = [{
    $keys `k` $k `capacity_factor` $capacity_factor attr-dict `:` type($keys)
    `->` type($ids)
  }];
  let hasVerifier = 1;
}

def MoE_HashSelectOp : MoE_Op<"hash_select",
    [NoMemoryEffect, MoE_NamedResults]> {
  let summary = "ids looked up from a token-id hash table (DeepSeek-V4)";
  let description = [{
    `ids[t, :] = table[token_ids[t], :]`, in table order. The table has one
    row of k expert ids per vocabulary entry. A token id outside
    `[0, vocab)`, or an entry outside `[0, experts)` or repeated within its
    row, is invalid input: lowerings validate it before any memory access
    and report it through the entry point's error status.

    ```mlir
    %ids = moe.hash_select %tok, %table experts 256
        : tensor<?xi64>, tensor<?x6xi32> -> tensor<?x6xi32>
    ```
  }];
  let arguments = (ins MoE_TokenIdsTensor:$token_ids,
                       MoE_HashTableTensor:$table, I64Attr:$experts);
  let results = (outs MoE_IdsTensor:$ids);
  let assemblyFormat = [{
    $token_ids `,` $table `experts` $experts attr-dict `:` type($token_ids)
    `,` type($table) `->` type($ids)
  }];
  let hasVerifier = 1;
}

def MoE_ForcedSelectOp : MoE_Op<"forced_select",
    [NoMemoryEffect, MoE_NamedResults]> {
  let summary = "ids given by the caller (router replay)";
  let description = [{
    The ids recorded at rollout and forced in training, in the given order.
    Each id must lie in `[0, experts)` and be distinct within its token;
    lowerings validate this before any memory access and report violations
    through the entry point's error status. The op is where replay's
    validation lives; its result feeds `moe.gather` like any selection.
    With `unused_slots` (the replay of a `moe.topp` router) an id may also
    be -1, an unused slot, which is neither range-checked nor compared.

    ```mlir
    %ids = moe.forced_select %forced experts 256
        : tensor<?x8xi64> -> tensor<?x8xi32>
    ```
  }];
  let arguments = (ins MoE_IdsInTensor:$forced_ids, I64Attr:$experts,
                       UnitAttr:$unused_slots);
  let results = (outs MoE_IdsTensor:$ids);
  let assemblyFormat = [{
    $forced_ids `experts` $experts (`unused_slots` $unused_slots^)? attr-dict
    `:` type($forced_ids) `->` type($ids)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def MoE_GatherOp : MoE_Op<"gather", [Pure, MoE_NamedResults]> {
  let summary = "weights: the scores at the selected ids";
  let description = [{
    `weights[t, j] = scores[t, ids[t, j]]`. Gathered from the dense, unbiased
    scores in every selection mode, so that a replayed id that the live
    router would not pick still gets its true score. An unused slot (id -1,
    from `moe.topp`) gets the weight 0.

    ```mlir
    %w = moe.gather %s[%ids] : tensor<?x256xf32>, tensor<?x8xi32>
        -> tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_ScoreTensor:$scores, MoE_IdsTensor:$ids);
  let results = (outs MoE_WeightTensor:$weights);
  let assemblyFormat = [{
    $scores `[` $ids `]` attr-dict `:` type($scores) `,` type($ids) `->`
    type($weights)
  }];
  let hasVerifier = 1;
}

def MoE_NormalizeOp : MoE_Op<"normalize",
    [Pure, MoE_NamedResults, AllTypesMatch<["weights", "normalized"]>]> {
  let summary = "divide each token's weights by their sum plus epsilon";
  let description = [{
    `normalized[t, j] = weights[t, j] / (sum_j weights[t, j] + epsilon)`.

    ```mlir
    %n = moe.normalize %w epsilon 1.000000e-20 : tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_WeightTensor:$weights, F64Attr:$epsilon);
  let results = (outs MoE_WeightTensor:$normalized);
  let assemblyFormat = [{
    $weights `epsilon` $epsilon attr-dict `:` type($weights)
  }];
  let hasVerifier = 1;
}

def MoE_SparsemixerOp : MoE_Op<"sparsemixer", [Pure, MoE_NamedResults]> {
  let summary = "Phi-3.5-MoE's sparsemixer weights (inference form)";
  let description = [{
    The weight of each selected expert is a softmax over only the experts
    whose score is close to its own, among those not selected before it.
    For slot j with `m = scores[t, ids[t, j]]` and `R` the experts of the row
    not among `ids[t, 0..j)`:

    `weights[t, j] = 1 / sum over e in R with !((m - s_e) / max(|s_e|, m) > 2 * jitter_eps) of exp(s_e - m)`

    (`s_e - m` read as 0 when both are -inf; the ratio is compared as IEEE
    floats, so a NaN ratio keeps its expert, as PyTorch's `masked_fill` does).
    With the ids of a top-k in descending order this is Hugging Face's
    `sparsemixer` without jitter noise: each round's argmax, its mask, and
    the softmax value at the argmax. An unused slot (id -1) gets the
    weight 0.

    ```mlir
    %w = moe.sparsemixer %s[%ids] jitter_eps 1.000000e-02
        : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
    ```
  }];
  let arguments = (ins MoE_ScoreTensor:$scores, MoE_IdsTensor:$ids,
                       F64Attr:$jitter_eps);
  let results = (outs MoE_WeightTensor:$weights);
  let assemblyFormat = [{
    $scores `[` $ids `]` `jitter_eps` $jitter_eps attr-dict `:` type($scores)
    `,` type($ids) `->` type($weights)
  }];
  let hasVerifier = 1;
}

def MoE_ScaleOp : MoE_Op<"scale",
    [Pure, MoE_NamedResults, AllTypesMatch<["weights", "scaled"]>]> {
  let summary = "multiply the weights by a constant routed scaling factor";
  let description = [{
    `scaled = weights * factor`. A factor of exactly 1 folds away.

    ```mlir
    %ws = moe.scale %n by 2.500000e+00 : tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_WeightTensor:$weights, F64Attr:$factor);
  let results = (outs MoE_WeightTensor:$scaled);
  let assemblyFormat = [{
    $weights `by` $factor attr-dict `:` type($weights)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Dispatch and capture
//===----------------------------------------------------------------------===//

def MoE_DispatchOp : MoE_Op<"dispatch", [Pure, MoE_NamedResults]> {
  let summary = "metadata that moves tokens to their experts";
  let description = [{
    From the `[T, k]` ids (slot `t * k + j` holds `ids[t, j]`):

    - `counts[e]`: the number of slots routed to expert `e`;
    - `offsets`: the exclusive prefix sum of counts, `E + 1` entries;
    - `sorted_slots`: the slot indices ordered by (expert, slot);
    - `slot_positions`: its inverse, the position of each slot in
      `sorted_slots`.

    With `unused_slots` (the ids of a `moe.topp` router) an id of -1 marks
    an unused slot, which dispatch skips: it is counted nowhere, so
    `offsets[E]` is the number of used slots, `sorted_slots[offsets[E] ..
    T * k)` hold -1, and its `slot_positions` entry is -1.

    With `capacity_factor` f (Switch / GShard), each expert takes at most
    `C = ceil(f * T * k / E)` slots (computed in f64 at run time), the first
    C in slot order: a slot whose position within its expert is C or more
    is dropped like an unused slot (counted nowhere, position -1, so
    combine adds no term for it), while its id stays in the router's
    output; `counts[e] = min(n_e, C)`.

    Unlike every other op, dispatch spans tokens; it is the one op allowed to
    need a second kernel launch.

    ```mlir
    %counts, %offsets, %sorted, %positions = moe.dispatch %ids experts 256
        : tensor<?x8xi32> -> tensor<256xi32>, tensor<257xi32>,
          tensor<?xi32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins MoE_IdsTensor:$ids, I64Attr:$experts,
                       UnitAttr:$unused_slots,
                       OptionalAttr<F64Attr>:$capacity_factor);
  let results = (outs MoE_MetaTensor:$counts, MoE_MetaTensor:$offsets,
                      MoE_MetaTensor:$sorted_slots,
                      MoE_MetaTensor:$slot_positions);
  let assemblyFormat = [{
    $ids `experts` $experts (`unused_slots` $unused_slots^)?
    (`capacity_factor` $capacity_factor^)? attr-dict `:`
    type($ids) `->` type($counts) `,` type($offsets) `,` type($sorted_slots)
    `,` type($slot_positions)
  }];
  let hasVerifier = 1;
}

def MoE_CaptureOp : MoE_Op<"capture",
    [NoMemoryEffect, MoE_NamedResults, AllTypesMatch<["buffer", "updated"]>]> {
  let summary = "write the selected ids into a [T, layers, k] capture buffer";
  let description = [{
    Destination-passing: returns `buffer` with `updated[t, layer, :] =
    ids[t, :]`, converted to the buffer's element type. The layout is vLLM's
    `routed_experts` (`[tokens, layers, k]`); `i16` holds ids only when
    `experts <= 32767`. A `layer` outside `[0, layers)` is invalid input,
    reported through the entry point's error status.

    ```mlir
    %cap1 = moe.capture %ids into %cap[%layer] experts 256
        : tensor<?x8xi32> into tensor<?x?x8xi16>
    ```
  }];
  let arguments = (ins MoE_IdsTensor:$ids, MoE_CaptureTensor:$buffer,
                       Index:$layer, I64Attr:$experts);
  let results = (outs MoE_CaptureTensor:$updated);
  let assemblyFormat = [{
    $ids `into` $buffer `[` $layer `]` `experts` $experts attr-dict `:`
    type($ids) `into` type($buffer)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Load balancing
//===----------------------------------------------------------------------===//

def MoE_UpdateBiasOp : MoE_Op<"update_bias", [Pure, MoE_NamedResults]> {
  let summary = "auxiliary-loss-free balancing: move the bias against the load";
  let description = [{
    DeepSeek-V3's update between training steps: each expert's selection
    bias moves by `rate` towards balance, down when the expert is busier
    than the mean load and up when it is idler,

    `updated[e] = bias[e] + rate * sign(mean(counts) - counts[e])`

    with `sign(0) = 0`, decided exactly in integers (`sum(counts) - E *
    counts[e]`), and the addition in f32. `counts` are per-expert loads: the
    `counts` of `moe.dispatch`, or their sum over the batches of a step. A
    negative count or a non-finite bias is invalid input, reported through
    the entry point's error status.

    ```mlir
    %updated = moe.update_bias %bias, %counts rate 1.000000e-03
        : tensor<256xf32>, tensor<256xi32> -> tensor<256xf32>
    ```
  }];
  let arguments = (ins MoE_BiasTensor:$bias, MoE_MetaTensor:$counts,
                       F64Attr:$rate);
  let results = (outs MoE_BiasTensor:$updated);
  let assemblyFormat = [{
    $bias `,` $counts `rate` $rate attr-dict `:` type($bias) `,` type($counts)
    `->` type($updated)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Moving hidden rows: permute and combine
//===----------------------------------------------------------------------===//

// Both read metadata that dispatch wrote and validate it, like
// hash_select: no memory effects, but not speculatable.

def MoE_PermuteOp : MoE_Op<"permute", [NoMemoryEffect, MoE_NamedResults]> {
  let summary = "hidden rows gathered into expert order";
  let description = [{
    `permuted[p, :] = hidden[sorted_slots[p] / k, :]`: row `p` of the
    result is the hidden row of the token that owns slot `sorted_slots[p]`,
    so the rows of each expert are contiguous (`expert_offsets` delimits
    them) and, within an expert, in slot order. H (dim 1) is usually a
    run-time size; the rows are f32, bf16 or f16 and copied bit for bit. A
    slot outside `[0, T * k)` is invalid input: lowerings report it through
    the entry point's error status and never address memory with it. With
    `unused_slots` a slot of -1 (the tail dispatch leaves for the unused
    slots of a `moe.topp` router or the slots a capacity dropped) gives a
    row of zeros.

    ```mlir
    %permuted = moe.permute %hidden[%sorted_slots] k 8
        : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
    ```
  }];
  let arguments = (ins MoE_HiddenTensor:$hidden, MoE_MetaTensor:$sorted_slots,
                       I64Attr:$k, UnitAttr:$unused_slots);
  let results = (outs MoE_HiddenTensor:$permuted);
  let assemblyFormat = [{
    $hidden `[` $sorted_slots `]` `k` $k (`unused_slots` $unused_slots^)?
    attr-dict `:` type($hidden) `,` type($sorted_slots) `->` type($permuted)
  }];
  let hasVerifier = 1;
}

def MoE_CombineOp : MoE_Op<"combine", [NoMemoryEffect, MoE_NamedResults]> {
  let summary = "the weighted sum of each token's expert outputs";
  let description = [{
    `combined[t, :] = sum_j weights[t, j] * expert_output[slot_positions[t * k
    + j], :]`, for `j = 0 .. k - 1` in that order, accumulated in f32 with a
    fused multiply-add per term (so every backend rounds alike) and rounded
    once to the row type. `expert_output` holds one row per slot in
    permuted (expert) order, as `moe.permute` laid them out. A position
    outside `[0, T * k)` is invalid input, reported through the entry
    point's error status. With `unused_slots` a position of -1 (an unused
    slot of a `moe.topp` router, or a slot a capacity dropped) adds no term.

    ```mlir
    %combined = moe.combine %expert_output[%slot_positions] weights %w
        : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x8xf32> -> tensor<?x?xbf16>
    ```
  }];
  let arguments = (ins MoE_HiddenTensor:$expert_output,
                       MoE_MetaTensor:$slot_positions,
                       MoE_WeightTensor:$weights, UnitAttr:$unused_slots);
  let results = (outs MoE_HiddenTensor:$combined);
  let assemblyFormat = [{
    $expert_output `[` $slot_positions `]` `weights` $weights
    (`unused_slots` $unused_slots^)? attr-dict `:` type($expert_output) `,`
    type($slot_positions) `,` type($weights) `->` type($combined)
  }];
  let hasVerifier = 1;
}

#endif // MOEGEN_DIALECT_MOE_IR_MOEOPS_TD
