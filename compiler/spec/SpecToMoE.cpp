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

#include "compiler/spec/Program.h"
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
  case Scoring::Identity:
    return moe::ScoringKind::identity;
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
    sharedGateLogitsType = RankedTensorType::get(
        {dyn, 1}, toLogitsElementType(spec.logitsDType, context));
    sharedGateType = RankedTensorType::get({dyn, 1}, f32);
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
    appendSharedGate(body, results);
    if (spec.capture) {
      unsigned n = body.getNumArguments() - (spec.sharedGate ? 1 : 0);
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
    SmallVector<Value> results{ids, weights(scores, ids)};
    appendSharedGate(body, results);
    builder.create<func::ReturnOp>(loc, results);
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
        loc, results, body.getArgument(0),
        builder.getI64IntegerAttr(spec.numExperts), UnitAttr(), FloatAttr());
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
  /// Creates an entry func in the kernel ABI's order: inputs, then the
  /// capture buffer and layer index when `withCapture`, then the shared
  /// expert's gate logits with the spec's shared gate; results ids and
  /// weights, the shared gate, then the updated capture buffer.
  func::FuncOp beginEntry(StringRef name, SmallVector<Type> inputs,
                          bool withCapture) {
    SmallVector<Type> results{idsType, weightsType};
    if (withCapture) {
      inputs.push_back(captureType);
      inputs.push_back(builder.getIndexType());
    }
    if (spec.sharedGate) {
      inputs.push_back(sharedGateLogitsType);
      results.push_back(sharedGateType);
    }
    if (withCapture)
      results.push_back(captureType);
    return createFunc(name, inputs, results);
  }

  /// The shared expert's gate from the entry's last argument.
  void appendSharedGate(Block &body, SmallVector<Value> &results) {
    if (!spec.sharedGate)
      return;
    results.push_back(builder.create<moe::SharedGateOp>(
        loc, sharedGateType,
        body.getArgument(body.getNumArguments() - 1)));
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
      captureType, hiddenType, sharedGateLogitsType, sharedGateType;
};

/// Builds the entry points of a gating program: one func per entry, one op
/// per call, in the program's order. The types are the program's (checked
/// by the parser against the kernel ABI); each op's location names the
/// spec and the call's place in the program text.
class ProgramBuilder {
public:
  ProgramBuilder(const RoutingSpec &spec, const program::Program &program,
                 ModuleOp module)
      : spec(spec), program(program), module(module),
        context(*module.getContext()), builder(&context),
        name(StringAttr::get(&context, spec.name)) {}

  void build() {
    for (const program::Entry &entry : program.entries)
      buildEntry(entry);
  }

private:
  Type elementType(abi::DType dtype) {
    switch (dtype) {
    case abi::DType::F32:
      return builder.getF32Type();
    case abi::DType::BF16:
      return builder.getBF16Type();
    case abi::DType::F16:
      return builder.getF16Type();
    case abi::DType::I16:
      return builder.getI16Type();
    case abi::DType::I32:
      return builder.getI32Type();
    case abi::DType::I64:
      return builder.getI64Type();
    }
    return builder.getF32Type();
  }

  Type typeOf(int value) {
    const program::ValueType &type = program.values[value];
    if (type.dims.empty())
      return builder.getIndexType();
    SmallVector<int64_t> shape;
    for (abi::DimRule dim : type.dims)
      shape.push_back(dim == abi::DimRule::Experts        ? spec.numExperts
                      : dim == abi::DimRule::ExpertsPlus1 ? spec.numExperts + 1
                      : dim == abi::DimRule::TopK         ? program.topK
                      : dim == abi::DimRule::One          ? 1
                                                          : ShapedType::kDynamic);
    return RankedTensorType::get(shape, elementType(type.dtype));
  }

  Location locOf(program::Location where) {
    return NameLoc::get(name, FileLineColLoc::get(&context, "program",
                                                  where.line, where.column));
  }

  void buildEntry(const program::Entry &entry) {
    SmallVector<Type> inputs, results;
    for (int param : entry.params)
      inputs.push_back(typeOf(param));
    for (int result : entry.results)
      results.push_back(typeOf(result));
    builder.setInsertionPointToEnd(module.getBody());
    StringRef entryName = abi::toString(entry.kind);
    auto func = builder.create<func::FuncOp>(
        NameLoc::get(name), entryName, builder.getFunctionType(inputs, results));
    func->setAttr(kEntryAttrName, builder.getStringAttr(entryName));
    Block *body = func.addEntryBlock();
    builder.setInsertionPointToStart(body);
    values.clear();
    for (auto [index, param] : llvm::enumerate(entry.params))
      values[param] = body->getArgument(index);
    for (const program::Op &op : entry.ops)
      buildOp(op);
    SmallVector<Value> returned;
    for (int result : entry.results)
      returned.push_back(values.at(result));
    builder.create<func::ReturnOp>(NameLoc::get(name), returned);
  }

  void buildOp(const program::Op &op) {
    Location loc = locOf(op.loc);
    auto operand = [&](size_t i) { return values.at(op.operands[i]); };
    Type result = op.results.empty() ? Type() : typeOf(op.results.front());
    auto f64 = [&](std::optional<double> v) {
      return v ? builder.getF64FloatAttr(*v) : FloatAttr();
    };
    Operation *built = nullptr;
    switch (op.kind) {
    case program::OpKind::Score:
      built = builder.create<moe::ScoreOp>(loc, result,
                                           toScoringKind(op.scoring),
                                           operand(0), f64(op.temperature),
                                           f64(op.softcap));
      break;
    case program::OpKind::AddBias:
      built = builder.create<moe::AddBiasOp>(loc, result, operand(0), operand(1));
      break;
    case program::OpKind::GroupMask:
      built = builder.create<moe::GroupMaskOp>(
          loc, result, operand(0), op.groups, op.keep,
          op.by == GroupScore::Top2Sum ? moe::GroupScoreKind::top2_sum
                                       : moe::GroupScoreKind::max);
      break;
    case program::OpKind::TopK:
      built = builder.create<moe::TopKOp>(loc, result, operand(0), op.k);
      break;
    case program::OpKind::TopP:
      built = builder.create<moe::TopPOp>(loc, result, operand(0),
                                          builder.getI64IntegerAttr(op.k),
                                          builder.getF64FloatAttr(op.p));
      break;
    case program::OpKind::ExpertChoice:
      built = builder.create<moe::ExpertChoiceOp>(
          loc, result, operand(0), builder.getI64IntegerAttr(op.k),
          builder.getF64FloatAttr(*op.capacityFactor));
      break;
    case program::OpKind::Hash:
      built = builder.create<moe::HashSelectOp>(loc, result, operand(0),
                                                operand(1), spec.numExperts);
      break;
    case program::OpKind::Forced:
      built = builder.create<moe::ForcedSelectOp>(
          loc, result, operand(0), spec.numExperts, program.unusedSlots);
      break;
    case program::OpKind::Gather:
      built = builder.create<moe::GatherOp>(loc, result, operand(0), operand(1));
      break;
    case program::OpKind::Normalize:
      built = builder.create<moe::NormalizeOp>(
          loc, result, operand(0), builder.getF64FloatAttr(op.epsilon));
      break;
    case program::OpKind::Scale:
      built = builder.create<moe::ScaleOp>(loc, result, operand(0),
                                           builder.getF64FloatAttr(op.factor));
      break;
    case program::OpKind::Sparsemixer:
      built = builder.create<moe::SparsemixerOp>(
          loc, result, operand(0), operand(1),
          builder.getF64FloatAttr(op.jitterEps));
      break;
    case program::OpKind::Capture:
      built = builder.create<moe::CaptureOp>(loc, result, operand(0),
                                             operand(1), operand(2),
                                             spec.numExperts);
      break;
    case program::OpKind::SharedGate:
      built = builder.create<moe::SharedGateOp>(loc, result, operand(0));
      break;
    case program::OpKind::Dispatch: {
      SmallVector<Type> types;
      for (int value : op.results)
        types.push_back(typeOf(value));
      built = builder.create<moe::DispatchOp>(
          loc, types, operand(0), builder.getI64IntegerAttr(spec.numExperts),
          program.unusedSlots ? builder.getUnitAttr() : UnitAttr(),
          op.capacityFactor ? builder.getF64FloatAttr(*op.capacityFactor)
                            : FloatAttr());
      break;
    }
    case program::OpKind::Permute:
      built = builder.create<moe::PermuteOp>(loc, result, operand(0),
                                             operand(1), program.topK,
                                             rowsMayBeMissing());
      break;
    case program::OpKind::UpdateBias:
      built = builder.create<moe::UpdateBiasOp>(
          loc, result, operand(0), operand(1), builder.getF64FloatAttr(op.rate));
      break;
    case program::OpKind::Combine:
      built = builder.create<moe::CombineOp>(loc, result, operand(0),
                                             operand(1), operand(2),
                                             rowsMayBeMissing());
      break;
    }
    for (auto [index, value] : llvm::enumerate(op.results))
      values[value] = built->getResult(index);
  }

  /// Dispatch's metadata may hold -1 (an unused or dropped slot): the
  /// route selects by top-p or dispatch has a capacity.
  bool rowsMayBeMissing() const {
    return program.unusedSlots || program.capacityFactor.has_value();
  }

  const RoutingSpec &spec;
  const program::Program &program;
  ModuleOp module;
  MLIRContext &context;
  OpBuilder builder;
  StringAttr name;
  llvm::DenseMap<int, Value> values;
};

} // namespace

OwningOpRef<ModuleOp> buildRouterModule(const RoutingSpec &spec,
                                        MLIRContext &context) {
  OwningOpRef<ModuleOp> module =
      ModuleOp::create(NameLoc::get(StringAttr::get(&context, spec.name)),
                       StringRef(spec.name));
  if (spec.isProgram()) {
    // Valid specs only (validateRoutingSpec parses the program too); an
    // invalid one gives a module without entry points, which every
    // consumer rejects.
    program::ProgramError error;
    if (std::optional<program::Program> program = program::parseProgram(
            spec.program,
            {spec.numExperts, spec.logitsDType, spec.hiddenDType}, error))
      ProgramBuilder(spec, *program, *module).build();
    return module;
  }
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
