//===- ExpertChoiceToLoops.cpp - moe.expert_choice over the batch ---------===//
//
// Expert choice is the one selection that spans tokens: expert e takes the
// c tokens with the largest keys[t, e]. Its entry point is lowered as one
// kernel over all tokens (MoEToLoops.cpp) that finds each expert's
// threshold, then routes every token:
//
//   thresholds: a radix select per expert, four 8-bit digits of the keys
//               (as order-preserving u32 integers, expertChoiceOrder) from
//               the top, all experts at once: each pass counts the digit of
//               every key that matches its expert's prefix so far into E
//               histograms of 256 bins, then walks each expert's bins down
//               to the one holding its c-th largest key K_e. The tokens
//               whose key is K_e are taken in token order: t_e is the last
//               one taken;
//   ids:        every token computes the whole entry; the selection lists
//               the experts with key > K_e, or key = K_e and t <= t_e, by
//               descending key (an insertion into k slots; equal keys keep
//               the lower expert first), and -1 in the slots left.
//
// The host form computes the keys once into a [T, E] heap buffer and finds
// t_e in one more pass. The GPU form is a cooperative grid whose token
// segments stride over all tokens: each pass recomputes the keys (the ops
// before the selection) instead of storing T * E of them, counts with
// atomics into the scratch buffer, and a grid barrier separates it from the
// walk, one thread per expert. Ties are rare, so t_e costs nothing unless
// some expert's last bin holds more tokens than it takes; then a second
// radix select, over the token indices of the tied tokens (smallest
// first), finds it in four more passes.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "abi/KernelAbi.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::moe::loops {

namespace {

using arith::CmpIPredicate;

constexpr int64_t kDigitBits = 8;
constexpr int64_t kDigits = 1 << kDigitBits;
static_assert(kDigits == moegen::abi::kExpertChoiceBins);

} // namespace

Value expertChoiceOrder(RowCodegen &cg, Value key) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  // -0 ranks as +0: both are the key 0.
  Value isZero =
      b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ, key, cg.f32(0.0));
  key = b.create<arith::SelectOp>(loc, isZero, cg.f32(0.0), key);
  Value bits = b.create<arith::BitcastOp>(loc, b.getI32Type(), key);
  Value negative =
      b.create<arith::CmpIOp>(loc, CmpIPredicate::slt, bits, cg.i32(0));
  // Negative values: all bits flipped (a larger magnitude is smaller);
  // others: the sign bit set, so that they rank above every negative one.
  return b.create<arith::SelectOp>(
      loc, negative, b.create<arith::XOrIOp>(loc, bits, cg.i32(-1)),
      b.create<arith::OrIOp>(loc, bits, cg.i32(INT32_MIN)));
}

namespace {

/// Shared by the host and grid forms: index and i32 arithmetic, memory
/// words, and the steps of the radix select on one expert.
class Select {
public:
  Select(ExpertChoiceOp op, RowCodegen &cg)
      : op(op), cg(cg), b(cg.b), loc(cg.loc),
        numExperts(
            cast<RankedTensorType>(op.getKeys().getType()).getDimSize(1)) {}

  Value add(Value x, Value y) { return b.create<arith::AddIOp>(loc, x, y); }
  Value sub(Value x, Value y) { return b.create<arith::SubIOp>(loc, x, y); }
  Value mul(Value x, Value y) { return b.create<arith::MulIOp>(loc, x, y); }
  Value andi(Value x, Value y) { return b.create<arith::AndIOp>(loc, x, y); }
  Value ori(Value x, Value y) { return b.create<arith::OrIOp>(loc, x, y); }
  Value notb(Value x) { return b.create<arith::XOrIOp>(loc, x, cg.boolean(true)); }
  Value cmp(CmpIPredicate predicate, Value x, Value y) {
    return b.create<arith::CmpIOp>(loc, predicate, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return b.create<arith::SelectOp>(loc, c, x, y);
  }
  Value toIndex(Value v) {
    return b.create<arith::IndexCastOp>(loc, b.getIndexType(), v);
  }
  Value toI32(Value v) {
    return b.create<arith::IndexCastOp>(loc, b.getI32Type(), v);
  }
  Value load(Value memref, Value at) {
    return b.create<memref::LoadOp>(loc, memref, ValueRange{at});
  }
  void store(Value value, Value memref, Value at) {
    b.create<memref::StoreOp>(loc, value, memref, ValueRange{at});
  }
  /// Word `base + e` of `words`.
  Value word(int64_t base, Value e) { return add(cg.index(base), e); }
  /// The digit of `value` (i32) at `shift`, as an index.
  Value digitOf(Value value, int64_t shift) {
    return toIndex(andi(b.create<arith::ShRUIOp>(loc, value, cg.i32(shift)),
                        cg.i32(kDigits - 1)));
  }
  /// The same for a shift known at run time (i32, a multiple of the digit
  /// width in [0, 32)): a pass loop's.
  Value digitOf(Value value, Value shift) {
    return toIndex(andi(b.create<arith::ShRUIOp>(loc, value, shift),
                        cg.i32(kDigits - 1)));
  }
  /// The bits above the digit at `shift`, decided by earlier passes.
  Value decidedMask(Value shift) {
    // A shift by 32 is poison in LLVM: the top digit's mask is spelled out.
    Value above = add(shift, cg.i32(kDigitBits));
    return select(cmp(CmpIPredicate::sge, above, cg.i32(32)), cg.i32(0),
                  b.create<arith::ShLIOp>(loc, cg.i32(-1), above));
  }
  /// The shift of pass `pass` (index) of a radix select from the top digit
  /// down, as i32.
  Value passShift(Value pass) {
    return sub(cg.i32(32 - kDigitBits), mul(toI32(pass), cg.i32(kDigitBits)));
  }
  /// The bits above the digit at `shift`, decided by earlier passes.
  Value decidedMask(int64_t shift) {
    const uint32_t mask =
        shift + kDigitBits >= 32 ? 0u : ~0u << (shift + kDigitBits);
    return cg.i32(int32_t(mask));
  }

  /// Walks expert e's bins (at `bins`, 256 words of `words`) from the
  /// largest digit down (`descending`) or up, to the one holding the
  /// `remaining`-th value: returns {the values still to take within it,
  /// the digit (i32), the bin's count}.
  SmallVector<Value> walkBins(Value words, Value bins, Value remaining,
                              bool descending) {
    return walkBins(words, bins, remaining, cg.boolean(descending));
  }
  /// The same with the direction known at run time (i1).
  SmallVector<Value> walkBins(Value words, Value bins, Value remaining,
                              Value descending) {
    return cg.forLoop(
        0, kDigits, {remaining, cg.boolean(false), cg.i32(0), cg.i32(0)},
        [&](Value i, ValueRange state) -> SmallVector<Value> {
          Value digit =
              select(descending, sub(cg.index(kDigits - 1), i), i);
          Value count = load(words, add(bins, digit));
          Value open = notb(state[1]);
          Value here = andi(open, cmp(CmpIPredicate::sge, count, state[0]));
          Value passed = andi(open, notb(here));
          return {select(passed, sub(state[0], count), state[0]),
                  ori(state[1], here), select(here, toI32(digit), state[2]),
                  select(here, count, state[3])};
        });
  }

  ExpertChoiceOp op;
  RowCodegen &cg;
  OpBuilder &b;
  Location loc;
  const int64_t numExperts;
};

} // namespace

//===----------------------------------------------------------------------===//
// Host: the keys in a heap buffer, one thread.
//===----------------------------------------------------------------------===//

LogicalResult lowerExpertChoiceHostKernel(ExpertChoiceOp op, RowCodegen &cg,
                                          Value numTokens,
                                          EmitTokenOps emitBefore,
                                          EmitTokenOps emitAll) {
  Select s(op, cg);
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t numExperts = s.numExperts;
  LogicalResult status = success();
  auto tokenLoop = [&](function_ref<void()> body) {
    cg.forLoop(cg.index(0), numTokens, {}, [&](Value t, ValueRange) {
      cg.token = t;
      body();
      return SmallVector<Value>{};
    });
  };
  // For every token t and expert e of the key buffer: body(t, e, key).
  auto forEachKey = [&](Value keyBuffer,
                        function_ref<void(Value, Value, Value)> body) {
    tokenLoop([&] {
      Value t = cg.token;
      cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
        body(t, e, b.create<memref::LoadOp>(loc, keyBuffer, ValueRange{t, e}));
        return SmallVector<Value>{};
      });
    });
  };

  // 1. The keys.
  Value keyBuffer = b.create<memref::AllocOp>(
      loc, MemRefType::get({ShapedType::kDynamic, numExperts}, b.getI32Type()),
      ValueRange{numTokens});
  const size_t firstRow = cg.numStackRows();
  tokenLoop([&] {
    if (failed(emitBefore())) {
      status = failure();
      return;
    }
    RowRef keys = cg.rowOf(op.getKeys());
    cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
      b.create<memref::StoreOp>(loc, expertChoiceOrder(cg, cg.loadF32(keys, e)),
                                keyBuffer, ValueRange{cg.token, e});
      return SmallVector<Value>{};
    });
  });
  if (failed(status))
    return failure();
  const size_t endRow = cg.numStackRows();

  // 2. The thresholds: words [0, E) the keys, [E, 2E) the last tokens,
  // [2E, 3E) the tokens still to take; then the histograms.
  Value capacity = dispatchCapacity(cg, numTokens, 1, numExperts,
                                    op.getCapacityFactor().convertToDouble());
  const int64_t keysAt = 0, tokensAt = numExperts, remainingAt = 2 * numExperts,
                binsAt = 3 * numExperts;
  Value words = b.create<memref::AllocOp>(
      loc, MemRefType::get({binsAt + numExperts * kDigits}, b.getI32Type()));
  cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
    s.store(cg.i32(0), words, s.word(keysAt, e));
    s.store(cg.i32(-1), words, s.word(tokensAt, e));
    s.store(capacity, words, s.word(remainingAt, e));
    return SmallVector<Value>{};
  });
  for (int64_t shift = 32 - kDigitBits; shift >= 0; shift -= kDigitBits) {
    Value decided = s.decidedMask(shift);
    cg.forLoop(0, numExperts * kDigits, {}, [&](Value i, ValueRange) {
      s.store(cg.i32(0), words, s.word(binsAt, i));
      return SmallVector<Value>{};
    });
    forEachKey(keyBuffer, [&](Value, Value e, Value key) {
      Value matches = s.cmp(CmpIPredicate::eq, s.andi(key, decided),
                            s.load(words, s.word(keysAt, e)));
      cg.ifThen(matches, [&] {
        Value bin = s.add(s.word(binsAt, s.mul(e, cg.index(kDigits))),
                          s.digitOf(key, shift));
        s.store(s.add(s.load(words, bin), cg.i32(1)), words, bin);
      });
    });
    cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
      SmallVector<Value> walk =
          s.walkBins(words, s.word(binsAt, s.mul(e, cg.index(kDigits))),
                     s.load(words, s.word(remainingAt, e)),
                     /*descending=*/true);
      Value key = s.ori(s.load(words, s.word(keysAt, e)),
                        b.create<arith::ShLIOp>(loc, walk[2], cg.i32(shift)));
      s.store(key, words, s.word(keysAt, e));
      s.store(walk[0], words, s.word(remainingAt, e));
      return SmallVector<Value>{};
    });
  }
  // The tokens with key K_e are taken in token order: t_e is the
  // remaining-th of them. The first E bins count them.
  cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
    s.store(cg.i32(0), words, s.word(binsAt, e));
    return SmallVector<Value>{};
  });
  forEachKey(keyBuffer, [&](Value t, Value e, Value key) {
    cg.ifThen(s.cmp(CmpIPredicate::eq, key, s.load(words, s.word(keysAt, e))),
              [&] {
                Value seen = s.add(s.load(words, s.word(binsAt, e)), cg.i32(1));
                s.store(seen, words, s.word(binsAt, e));
                cg.ifThen(s.cmp(CmpIPredicate::eq, seen,
                                s.load(words, s.word(remainingAt, e))),
                          [&] { s.store(s.toI32(t), words, s.word(tokensAt, e)); });
              });
  });
  b.create<memref::DeallocOp>(loc, keyBuffer);

  // 3. The ids, and everything else.
  cg.expertChoiceThresholds[op] = {words, keysAt, tokensAt};
  cg.reuseRowsFrom(firstRow, endRow);
  tokenLoop([&] {
    if (failed(emitAll()))
      status = failure();
  });
  cg.reuseRowsFrom(0, 0);
  b.create<memref::DeallocOp>(loc, words);
  return status;
}

//===----------------------------------------------------------------------===//
// GPU: a cooperative grid; the keys recomputed in each pass.
//===----------------------------------------------------------------------===//

LogicalResult lowerExpertChoiceGridKernel(ExpertChoiceOp op, RowCodegen &cg,
                                          Value numTokens, Value scratch,
                                          int64_t tokensPerBlock,
                                          int64_t lanesPerToken,
                                          EmitTokenOps emitBefore,
                                          EmitTokenOps emitAll) {
  using namespace moegen::abi;
  Select s(op, cg);
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t numExperts = s.numExperts;
  if (cast<MemRefType>(scratch.getType()).getNumElements() !=
      expertChoiceScratchWords(numExperts))
    return op.emitOpError("scratch buffer of ")
           << cast<MemRefType>(scratch.getType()).getNumElements()
           << " words; the ABI needs " << expertChoiceScratchWords(numExperts);
  const int64_t flagAt = kExpertChoiceTieFlagWord;
  const int64_t keysAt = kExpertChoiceHeaderWords,
                remainingAt = keysAt + numExperts,
                tokensAt = remainingAt + numExperts,
                tiePrefixAt = tokensAt + numExperts,
                binsAt = tiePrefixAt + numExperts;

  Value thread = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
  Value block = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
  Value grid = b.create<gpu::GridDimOp>(loc, gpu::Dimension::x);
  Value blockThreads = cg.index(tokensPerBlock * lanesPerToken);
  Value gridThread = s.add(s.mul(block, blockThreads), thread);
  Value gridThreads = s.mul(grid, blockThreads);
  Value segment =
      s.add(s.mul(block, cg.index(tokensPerBlock)),
            b.create<arith::DivUIOp>(loc, thread, cg.index(lanesPerToken)));
  Value segments = s.mul(grid, cg.index(tokensPerBlock));
  Value segmentLane =
      b.create<arith::RemUIOp>(loc, thread, cg.index(lanesPerToken));
  Value trips = b.create<arith::DivUIOp>(
      loc, s.add(numTokens, s.sub(segments, cg.index(1))), segments);

  LogicalResult status = success();
  // Every segment runs the same number of trips (the grid barriers and the
  // warps' shuffles need them all); a trip past the last token routes the
  // last token again, with `valid` false.
  auto tokenLoop = [&](function_ref<void(Value valid)> body) {
    cg.forLoop(cg.index(0), trips, {}, [&](Value i, ValueRange) {
      Value token = s.add(segment, s.mul(i, segments));
      Value valid = s.cmp(CmpIPredicate::ult, token, numTokens);
      cg.token = b.create<arith::MinUIOp>(loc, token,
                                          s.sub(numTokens, cg.index(1)));
      body(valid);
      return SmallVector<Value>{};
    });
  };
  // body(e) for the experts [from, E) in steps of `step`.
  auto strided = [&](Value from, Value step, function_ref<void(Value)> body) {
    b.create<scf::ForOp>(loc, from, cg.index(numExperts), step, ValueRange{},
                         [&](OpBuilder &nested, Location, Value e, ValueRange) {
                           OpBuilder::InsertionGuard guard(b);
                           b.setInsertionPointToStart(nested.getInsertionBlock());
                           body(e);
                           b.create<scf::YieldOp>(loc);
                         });
  };
  auto overExperts = [&](function_ref<void(Value)> body) {
    strided(gridThread, gridThreads, body);
  };
  auto bins = [&](Value e) {
    return s.word(binsAt, s.mul(e, cg.index(kDigits)));
  };
  auto zeroBins = [&](Value e) {
    Value first = bins(e);
    cg.forLoop(0, kDigits, {}, [&](Value d, ValueRange) {
      s.store(cg.i32(0), scratch, s.add(first, d));
      return SmallVector<Value>{};
    });
  };
  auto countIn = [&](Value bin) {
    b.create<memref::AtomicRMWOp>(loc, arith::AtomicRMWKind::addi, cg.i32(1),
                                  scratch, ValueRange{bin});
  };
  // A pass over the tokens: the ops before the selection, then body(key,
  // e) for the segment lane's experts of a valid token.
  size_t firstRow = 0, endRow = 0;
  bool firstPass = true;
  auto keyPass = [&](function_ref<void(Value, Value)> body) {
    if (!firstPass)
      cg.reuseRowsFrom(firstRow, endRow);
    else
      firstRow = cg.numStackRows();
    tokenLoop([&](Value valid) {
      if (failed(emitBefore())) {
        status = failure();
        return;
      }
      RowRef keys = cg.rowOf(op.getKeys());
      cg.ifThen(valid, [&] {
        strided(segmentLane, cg.index(lanesPerToken), [&](Value e) {
          body(expertChoiceOrder(cg, cg.loadF32(keys, e)), e);
        });
      });
    });
    if (firstPass)
      endRow = cg.numStackRows();
    firstPass = false;
    cg.reuseRowsFrom(0, 0);
  };

  Value capacity = dispatchCapacity(cg, numTokens, 1, numExperts,
                                    op.getCapacityFactor().convertToDouble());
  cg.ifThen(s.cmp(CmpIPredicate::eq, gridThread, cg.index(0)),
            [&] { s.store(cg.i32(0), scratch, cg.index(flagAt)); });
  overExperts([&](Value e) {
    s.store(cg.i32(0), scratch, s.word(keysAt, e));
    s.store(capacity, scratch, s.word(remainingAt, e));
    s.store(cg.i32(-1), scratch, s.word(tokensAt, e));
    s.store(cg.i32(0), scratch, s.word(tiePrefixAt, e));
    zeroBins(e);
  });
  emitGridBarrier(cg, scratch);

  // The radix selects, a digit a pass, as one loop (each pass recomputes
  // the keys, the entry's ops before the selection, and a copy of those
  // per pass made the kernel's code generation the slowest of every
  // template's). Passes 0-3 find each expert's threshold key K_e from the
  // top digit down; passes 4-7 run only when some expert must tell tied
  // tokens apart (the flag, set by pass 3 and the same for the whole grid,
  // so is the branch) and find, among the tokens whose key is K_e, the
  // remaining-th smallest token index, from the top digit down as well.
  constexpr int64_t kPasses = 32 / kDigitBits;
  cg.forLoop(0, 2 * kPasses, {}, [&](Value pass, ValueRange) {
    Value ties = s.cmp(CmpIPredicate::uge, pass, cg.index(kPasses));
    Value needed = s.cmp(CmpIPredicate::ne,
                         s.load(scratch, cg.index(flagAt)), cg.i32(0));
    cg.ifThen(s.ori(s.notb(ties), needed), [&] {
      Value shift = s.passShift(
          b.create<arith::RemUIOp>(loc, pass, cg.index(kPasses)));
      Value decided = s.decidedMask(shift);
      keyPass([&](Value key, Value e) {
        Value token = s.toI32(cg.token);
        Value threshold = s.load(scratch, s.word(keysAt, e));
        // A key pass counts keys under the prefix found so far; a tie pass
        // counts the tokens of an open expert whose key is K_e and whose
        // index is under the token prefix found so far.
        Value keyMatches = s.select(
            ties, s.cmp(CmpIPredicate::eq, key, threshold),
            s.cmp(CmpIPredicate::eq, s.andi(key, decided), threshold));
        Value open = s.cmp(CmpIPredicate::eq,
                           s.load(scratch, s.word(tokensAt, e)), cg.i32(-1));
        Value tokenMatches = s.andi(
            open, s.cmp(CmpIPredicate::eq, s.andi(token, decided),
                        s.load(scratch, s.word(tiePrefixAt, e))));
        Value matches =
            s.andi(keyMatches, s.ori(s.notb(ties), tokenMatches));
        cg.ifThen(matches, [&] {
          countIn(s.add(bins(e), s.digitOf(s.select(ties, token, key), shift)));
        });
      });
      emitGridBarrier(cg, scratch);
      overExperts([&](Value e) {
        Value open = s.cmp(CmpIPredicate::eq,
                           s.load(scratch, s.word(tokensAt, e)), cg.i32(-1));
        cg.ifThen(s.ori(s.notb(ties), open), [&] {
          // Keys: the c-th largest, from the largest digit down; tied
          // tokens: the remaining-th smallest index, from the smallest up.
          SmallVector<Value> walk = s.walkBins(
              scratch, bins(e), s.load(scratch, s.word(remainingAt, e)),
              s.notb(ties));
          Value found = b.create<arith::ShLIOp>(loc, walk[2], shift);
          Value at = s.select(ties, s.word(tiePrefixAt, e), s.word(keysAt, e));
          s.store(s.ori(s.load(scratch, at), found), scratch, at);
          s.store(walk[0], scratch, s.word(remainingAt, e));
          cg.ifThen(s.andi(s.notb(ties),
                           s.cmp(CmpIPredicate::eq, shift, cg.i32(0))),
                    [&] {
                      // The last bin holds the tokens whose key is K_e: when
                      // the expert takes them all, every one is taken; else
                      // the tie passes must tell them apart by token.
                      Value all = s.cmp(CmpIPredicate::eq, walk[3], walk[0]);
                      s.store(s.select(all, cg.i32(INT32_MAX), cg.i32(-1)),
                              scratch, s.word(tokensAt, e));
                      cg.ifThen(s.notb(all), [&] {
                        s.store(cg.i32(1), scratch, cg.index(flagAt));
                      });
                    });
        });
        zeroBins(e);
      });
      emitGridBarrier(cg, scratch);
    });
    return SmallVector<Value>{};
  });
  if (failed(status))
    return failure();
  // The experts whose ties were told apart take their last token.
  Value needed = s.cmp(CmpIPredicate::ne, s.load(scratch, cg.index(flagAt)),
                       cg.i32(0));
  cg.ifThen(needed, [&] {
    overExperts([&](Value e) {
      Value open = s.cmp(CmpIPredicate::eq,
                         s.load(scratch, s.word(tokensAt, e)), cg.i32(-1));
      cg.ifThen(open, [&] {
        s.store(s.load(scratch, s.word(tiePrefixAt, e)), scratch,
                s.word(tokensAt, e));
      });
    });
    emitGridBarrier(cg, scratch);
  });

  // The ids, and everything else.
  cg.expertChoiceThresholds[op] = {scratch, keysAt, tokensAt};
  cg.reuseRowsFrom(firstRow, endRow);
  tokenLoop([&](Value) {
    if (failed(emitAll()))
      status = failure();
  });
  cg.reuseRowsFrom(0, 0);
  return status;
}

LogicalResult lowerExpertChoice(ExpertChoiceOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  auto found = cg.expertChoiceThresholds.find(op);
  if (found == cg.expertChoiceThresholds.end())
    return op.emitOpError("spans the tokens of the batch: its entry point "
                          "must be lowered as one kernel over all tokens");
  const RowCodegen::ExpertChoiceThresholds thresholds = found->second;
  RowRef keys = cg.rowOf(op.getKeys());
  RowRef ids = cg.newRow(op.getIds());
  const int64_t k = op.getK();
  // The listed experts' keys, parallel to ids; filled from slot 0.
  RowRef listKeys = cg.allocScalarRow(b.getI32Type(), k);
  cg.forLoop(0, k, {}, [&](Value j, ValueRange) {
    cg.store(cg.i32(-1), ids, j);
    cg.store(cg.i32(0), listKeys, j);
    return SmallVector<Value>{};
  });
  Value token = b.create<arith::IndexCastOp>(loc, b.getI32Type(), cg.token);
  auto ugt = [&](Value x, Value y) -> Value {
    return b.create<arith::CmpIOp>(loc, CmpIPredicate::ugt, x, y);
  };
  cg.forLoop(
      0, keys.size, {cg.index(0)},
      [&](Value e, ValueRange listed) -> SmallVector<Value> {
        Value key = expertChoiceOrder(cg, cg.loadF32(keys, e));
        Value threshold = b.create<memref::LoadOp>(
            loc, thresholds.words,
            ValueRange{b.create<arith::AddIOp>(loc, e,
                                               cg.index(thresholds.keys))});
        Value lastTaken = b.create<memref::LoadOp>(
            loc, thresholds.words,
            ValueRange{b.create<arith::AddIOp>(loc, e,
                                               cg.index(thresholds.tokens))});
        Value taken = b.create<arith::OrIOp>(
            loc, ugt(key, threshold),
            b.create<arith::AndIOp>(
                loc,
                b.create<arith::CmpIOp>(loc, CmpIPredicate::eq, key, threshold),
                b.create<arith::CmpIOp>(loc, CmpIPredicate::sle, token,
                                        lastTaken)));
        // It enters the list if there is room or it beats the last entry
        // (strictly: an equal key of a lower expert stays ahead).
        Value full = b.create<arith::CmpIOp>(loc, CmpIPredicate::eq, listed[0],
                                             cg.index(k));
        Value beatsLast = ugt(key, cg.load(listKeys, cg.index(k - 1)));
        Value enters = b.create<arith::AndIOp>(
            loc, taken,
            b.create<arith::OrIOp>(
                loc, b.create<arith::XOrIOp>(loc, full, cg.boolean(true)),
                beatsLast));
        cg.ifThen(enters, [&] {
          // From the last slot it may take, move entries it beats down
          // one slot until the one before holds a key >= its own.
          Value start = b.create<arith::MinUIOp>(loc, listed[0],
                                                 cg.index(k - 1));
          cg.forLoop(0, k, {cg.boolean(false)},
                     [&](Value i, ValueRange placed) -> SmallVector<Value> {
                       Value j = b.create<arith::SubIOp>(loc, cg.index(k - 1), i);
                       Value active = b.create<arith::AndIOp>(
                           loc,
                           b.create<arith::XOrIOp>(loc, placed[0],
                                                   cg.boolean(true)),
                           b.create<arith::CmpIOp>(loc, CmpIPredicate::ule, j,
                                                   start));
                       Value atTop = b.create<arith::CmpIOp>(
                           loc, CmpIPredicate::eq, j, cg.index(0));
                       // The slot before (slot 0 for j = 0, unread then).
                       Value before = b.create<arith::SelectOp>(
                           loc, atTop, cg.index(0),
                           b.create<arith::SubIOp>(loc, j, cg.index(1)));
                       Value beforeKey = cg.load(listKeys, before);
                       Value moves = b.create<arith::AndIOp>(
                           loc, active,
                           b.create<arith::AndIOp>(
                               loc,
                               b.create<arith::XOrIOp>(loc, atTop,
                                                       cg.boolean(true)),
                               ugt(key, beforeKey)));
                       Value settles = b.create<arith::AndIOp>(
                           loc, active,
                           b.create<arith::XOrIOp>(loc, moves,
                                                   cg.boolean(true)));
                       cg.ifThen(moves, [&] {
                         cg.store(beforeKey, listKeys, j);
                         cg.store(cg.load(ids, before), ids, j);
                       });
                       cg.ifThen(settles, [&] {
                         cg.store(key, listKeys, j);
                         cg.store(b.create<arith::IndexCastOp>(
                                      loc, b.getI32Type(), e),
                                  ids, j);
                       });
                       return {b.create<arith::OrIOp>(loc, placed[0], settles)};
                     });
        });
        Value grown = b.create<arith::MinUIOp>(
            loc, b.create<arith::AddIOp>(loc, listed[0], cg.index(1)),
            cg.index(k));
        return {b.create<arith::SelectOp>(loc, enters, grown, listed[0])};
      });
  return success();
}

} // namespace mlir::moe::loops
