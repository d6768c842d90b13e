//===- SpecToMoE.cpp - Routing spec to moe dialect IR ---------------------===//
//
// Each entry point is the composition of moe ops that the spec's keys ask
// for: scoring, then selection (top-k with optional bias and group mask,
// hash, or forced ids), then the weights (gather, normalize, scale), and
// optionally capture. Dispatch is its own entry point because it spans
// tokens; permute and combine, which move hidden rows by dispatch's
// metadata, are one op each.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/SpecToMoE.h"

#include "dialects/moe/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

using namespace mlir;

namespace moegen {

namespace {

moe::ScoringKind toScoringKind(Scoring scoring) {
  switch (scoring) {
  case Scoring::Softmax:
    return moe::ScoringKind::softmax;
  case Scoring::Sigmoid:
    return moe::ScoringKind::sigmoid;
  case Scoring::SqrtSoftplus:
    return moe::ScoringKind::sqrtsoftplus;
  }
  return moe::ScoringKind::softmax;
}

Type toLogitsElementType(LogitsDType dtype, MLIRContext &context) {
  switch (dtype) {
  case LogitsDType::F32:
    return Float32Type::get(&context);
  case LogitsDType::BF16:
    return BFloat16Type::get(&context);
  case LogitsDType::F16:
    return Float16Type::get(&context);
  }
  return Float32Type::get(&context);
}

/// Builds the entry points of one spec.
class RouterBuilder {
public:
  RouterBuilder(const RoutingSpec &spec, ModuleOp module)
      : spec(spec), module(module), context(*module.getContext()),
        builder(&context),
        loc(NameLoc::get(StringAttr::get(&context, spec.name))) {
    const int64_t dyn = ShapedType::kDynamic;
    Type f32 = builder.getF32Type(), i32 = builder.getI32Type();
    logitsType = RankedTensorType::get(
        {dyn, spec.numExperts}, toLogitsElementType(spec.logitsDType, context));
    scoresType = RankedTensorType::get({dyn, spec.numExperts}, f32);
    biasType = RankedTensorType::get({spec.numExperts}, f32);
    idsType = RankedTensorType::get({dyn, spec.topK}, i32);
    weightsType = RankedTensorType::get({dyn, spec.topK}, f32);
    hiddenType = RankedTensorType::get(
        {dyn, dyn}, toLogitsElementType(spec.hiddenDType, context));
    // vLLM's routed_experts layout; i16 halves the buffer when it can.
    captureType = RankedTensorType::get(
        {dyn, dyn, spec.topK},
        spec.numExperts <= 32767 ? builder.getI16Type() : i32);
  }

  void buildRoute() {
    bool hash = spec.selection == Selection::Hash;
    SmallVector<Type> inputs{logitsType};
    if (hash) {
      inputs.push_back(RankedTensorType::get({ShapedType::kDynamic},
                                             builder.getI32Type()));
      inputs.push_back(RankedTensorType::get(
          {ShapedType::kDynamic, spec.topK}, builder.getI32Type()));
    } else if (spec.scoreBias) {
      inputs.push_back(biasType);
    }
    func::FuncOp func = beginEntry(hash ? entry::kRouteHash : entry::kRoute,
                                   inputs, /*withCapture=*/spec.capture);
    Block &body = func.getBody().front();
    Value scores = score(body.getArgument(0));
    Value ids;
    if (hash) {
      ids = builder.create<moe::HashSelectOp>(
          loc, idsType, body.getArgument(1), body.getArgument(2),
          spec.numExperts);
    } else {
      Value keys = scores;
      if (spec.scoreBias)
        keys = builder.create<moe::AddBiasOp>(loc, scoresType, scores,
                                              body.getArgument(1));
      if (spec.isGrouped())
        keys = builder.create<moe::GroupMaskOp>(
            loc, scoresType, keys, spec.groups, spec.topkGroups,
            spec.groupScore == GroupScore::Top2Sum
                ? moe::GroupScoreKind::top2_sum
                : moe::GroupScoreKind::max);
      ids = builder.create<moe::TopKOp>(loc, idsType, keys, spec.topK);
    }
    SmallVector<Value> results{ids, weights(scores, ids)};
    if (spec.capture) {
      unsigned n = body.getNumArguments();
      results.push_back(builder.create<moe::CaptureOp>(
          loc, captureType, ids, body.getArgument(n - 2), body.getArgument(n - 1),
          spec.numExperts));
    }
    builder.create<func::ReturnOp>(loc, results);
  }

  void buildReplay() {
    func::FuncOp func = beginEntry(entry::kReplay, {logitsType, idsType},
                                   /*withCapture=*/false);
    Block &body = func.getBody().front();
    Value scores = score(body.getArgument(0));
    Value ids = builder.create<moe::ForcedSelectOp>(
        loc, idsType, body.getArgument(1), spec.numExperts);
    builder.create<func::ReturnOp>(loc,
                                   ValueRange{ids, weights(scores, ids)});
  }

  void buildDispatch() {
    Type i32 = builder.getI32Type();
    SmallVector<Type> results{
        RankedTensorType::get({spec.numExperts}, i32),
        RankedTensorType::get({spec.numExperts + 1}, i32),
        RankedTensorType::get({ShapedType::kDynamic}, i32),
        RankedTensorType::get({ShapedType::kDynamic}, i32)};
    func::FuncOp func = createFunc(entry::kDispatch, {idsType}, results);
    Block &body = func.getBody().front();
    auto dispatch = builder.create<moe::DispatchOp>(
        loc, results, body.getArgument(0), spec.numExperts);
    builder.create<func::ReturnOp>(loc, dispatch.getResults());
  }

  void buildPermute() {
    Type i32 = builder.getI32Type();
    auto slotsType = RankedTensorType::get({ShapedType::kDynamic}, i32);
    func::FuncOp func = createFunc(entry::kPermute, {hiddenType, slotsType},
                                   {hiddenType});
    Block &body = func.getBody().front();
    Value permuted = builder.create<moe::PermuteOp>(
        loc, hiddenType, body.getArgument(0), body.getArgument(1), spec.topK);
    builder.create<func::ReturnOp>(loc, permuted);
  }

  /// Arguments in the ABI's order: the [T, k] weights first, so that dim 0
  /// of the first argument is the token count, as for every row kernel.
  void buildCombine() {
    Type i32 = builder.getI32Type();
    auto positionsType = RankedTensorType::get({ShapedType::kDynamic}, i32);
    func::FuncOp func =
        createFunc(entry::kCombine, {weightsType, positionsType, hiddenType},
                   {hiddenType});
    Block &body = func.getBody().front();
    Value combined = builder.create<moe::CombineOp>(
        loc, hiddenType, body.getArgument(2), body.getArgument(1),
        body.getArgument(0));
    builder.create<func::ReturnOp>(loc, combined);
  }

private:
  /// Creates an entry func whose results are ids and weights (and the
  /// updated capture buffer when `withCapture`), appending the capture
  /// buffer and layer index to `inputs`.
  func::FuncOp beginEntry(StringRef name, SmallVector<Type> inputs,
                          bool withCapture) {
    SmallVector<Type> results{idsType, weightsType};
    if (withCapture) {
      inputs.push_back(captureType);
      inputs.push_back(builder.getIndexType());
      results.push_back(captureType);
    }
    return createFunc(name, inputs, results);
  }

  func::FuncOp createFunc(StringRef name, TypeRange inputs,
                          TypeRange results) {
    builder.setInsertionPointToEnd(module.getBody());
    auto func = builder.create<func::FuncOp>(
        loc, name, builder.getFunctionType(inputs, results));
    func->setAttr(kEntryAttrName, builder.getStringAttr(name));
    builder.setInsertionPointToStart(func.addEntryBlock());
    return func;
  }

  Value score(Value logits) {
    FloatAttr temperature, softcap;
    if (spec.temperature != 1.0)
      temperature = builder.getF64FloatAttr(spec.temperature);
    if (spec.logitSoftcap != 0.0)
      softcap = builder.getF64FloatAttr(spec.logitSoftcap);
    return builder.create<moe::ScoreOp>(loc, scoresType,
                                        toScoringKind(spec.scoring), logits,
                                        temperature, softcap);
  }

  /// Weights are always the unbiased scores at the chosen ids.
  Value weights(Value scores, Value ids) {
    Value weights = builder.create<moe::GatherOp>(loc, weightsType, scores, ids);
    if (spec.normalize)
      weights = builder.create<moe::NormalizeOp>(
          loc, weightsType, weights, builder.getF64FloatAttr(spec.normalizeEpsilon));
    if (spec.scalingFactor != 1.0)
      weights = builder.create<moe::ScaleOp>(
          loc, weightsType, weights, builder.getF64FloatAttr(spec.scalingFactor));
    return weights;
  }

  const RoutingSpec &spec;
  ModuleOp module;
  MLIRContext &context;
  OpBuilder builder;
  Location loc;
  RankedTensorType logitsType, scoresType, biasType, idsType, weightsType,
      captureType, hiddenType;
};

} // namespace

OwningOpRef<ModuleOp> buildRouterModule(const RoutingSpec &spec,
                                        MLIRContext &context) {
  OwningOpRef<ModuleOp> module =
      ModuleOp::create(NameLoc::get(StringAttr::get(&context, spec.name)),
                       StringRef(spec.name));
  RouterBuilder builder(spec, *module);
  builder.buildRoute();
  if (spec.replay)
    builder.buildReplay();
  if (spec.dispatch)
    builder.buildDispatch();
  if (spec.permute) {
    builder.buildPermute();
    builder.buildCombine();
  }
  return module;
}

} // namespace moegen
