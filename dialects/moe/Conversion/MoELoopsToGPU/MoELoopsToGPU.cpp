//===- MoELoopsToGPU.cpp - nvptx row kernels on warp segments per token ---===//
//
// Moves every nvptx kernel that convert-moe-to-loops produced into a
// gpu.module as a gpu.func with the bare-pointer ABI of docs/kernel-abi.md,
// and maps its schedule onto the GPU:
//
// - a row kernel runs a token on `vector_width` = W lanes of a warp (a
//   segment; 32 / W tokens per warp), `tokens_per_task` tokens per block:
//   the token range [t0, t1) becomes [token, token + 1) for
//   token = blockIdx.x * tokens_per_task + threadIdx.x / W, and the W
//   vector lanes become the segment's lanes (LaneDistribution.h);
// - its stack rows become per-token slices of dynamic shared memory;
// - a route with a fused dispatch runs the dispatch's one-block phases
//   after its token loop (ParallelDispatchToLoops.cpp), in shared memory
//   its rows no longer need;
// - the dispatch kernel (ParallelDispatchToLoops.cpp) already speaks of
//   threads, blocks and the grid; it runs cooperatively, blocks of
//   abi::kDispatchBlockThreads threads, as many as the runtime's rule
//   (abi::dispatchGridDim) gives, with abi::dispatchSharedBytes(E) of
//   dynamic shared memory for a one-block grid's counters.
//
// This file owns the bare-pointer ABI: parameters (each carrying the
// `#moe.kernel_arg` of its memref, or a `#moe.kernel_size`), descriptors
// rebuilt from bare pointers, and the launch attributes the manifest
// reports.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoELoopsToGPU/LaneDistribution.h"
#include "dialects/moe/Conversion/Passes.h"
#include "dialects/moe/IR/MoEAttrs.h"
#include "dialects/moe/IR/MoEDialect.h"

#include "abi/KernelAbi.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOELOOPSTOGPU
#include "dialects/moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::gpu_lowering;

namespace {

/// Shared-memory rows start at multiples of this (vector loads of the
/// largest element type stay aligned).
constexpr int64_t kRowAlignment = 16;

int64_t elementBytes(Type type) {
  return std::max<int64_t>(1, (type.getIntOrFloatBitWidth() + 7) / 8);
}

class KernelConverter {
public:
  KernelConverter(func::FuncOp func, gpu::GPUModuleOp gpuModule)
      : func(func), gpuModule(gpuModule), b(func.getContext()) {}

  LogicalResult convert() {
    KernelConfigAttr config = getKernelConfig(func);
    if (!config)
      return func.emitOpError("needs 'moe.kernel_config'");
    // The attribute's verifier keeps blocks whole warps of at most
    // kMaxBlockThreads threads.
    lanesPerToken = config.getVectorWidth();
    tokensPerBlock = config.getTokensPerTask();
    auto entry = func->getAttrOfType<StringAttr>(kEntryAttrName);
    isDispatch = entry && entry.getValue() == "dispatch";
    isUpdateBias = entry && entry.getValue() == "update_bias";
    // Kernels that speak of threads themselves and take no token range.
    isGridKernel = isDispatch || isUpdateBias;

    // The ABI stamp of every argument says what it is; the token range
    // (host tasks) is replaced by the launch grid.
    Block &body = func.getBody().front();
    unsigned numArgs = body.getNumArguments();
    for (unsigned i = 0; i < numArgs; ++i) {
      auto arg = func.getArgAttrOfType<KernelArgAttr>(i, kKernelArgAttrName);
      if (!arg)
        return func.emitOpError("argument #")
               << i << " has no '" << kKernelArgAttrName
               << "': kernels come from convert-moe-to-loops";
      args.push_back(arg);
      if (arg.getRole() == KernelArgRole::TokenBegin)
        tokenBegin = i;
      else if (arg.getRole() == KernelArgRole::TokenEnd)
        tokenEnd = i;
    }
    // A row kernel without a token range strides over the tokens itself
    // (an expert-choice route): a cooperative grid, synchronized through
    // its scratch buffer.
    const bool hasScratch = llvm::any_of(args, [](KernelArgAttr arg) {
      return arg.getRole() == KernelArgRole::Scratch;
    });
    isCooperativeRowKernel = !isGridKernel && !tokenBegin && !tokenEnd &&
                             hasScratch;
    if (!isGridKernel && !isCooperativeRowKernel &&
        (!tokenBegin || !tokenEnd ||
         !isa<MemRefType>(body.getArgument(0).getType())))
      return func.emitOpError("row kernels take the token range (token_begin, "
                              "token_end) and start with a memref");
    if (isGridKernel && func
                          .walk([](Operation *op) {
                            return isa<memref::AllocaOp>(op) ||
                                           llvm::any_of(op->getResultTypes(),
                                                        [](Type t) {
                                                          return isa<VectorType>(t);
                                                        })
                                       ? WalkResult::interrupt()
                                       : WalkResult::advance();
                          })
                          .wasInterrupted())
      return func.emitOpError("the dispatch and update_bias kernels are "
                              "scalar per thread: they may hold neither "
                              "vectors nor stack rows");

    if (isDispatch && llvm::none_of(args, [](KernelArgAttr arg) {
          return arg.getRole() == KernelArgRole::Scratch;
        }))
      return func.emitOpError("the dispatch kernel synchronizes its grid "
                              "through a 'scratch' argument, and has none");

    // The token-lanes layout (convert-moe-to-loops): a segment's lanes
    // hold as many consecutive tokens, one each.
    isTokenLanes = !isGridKernel && !isCooperativeRowKernel &&
                   config.getTopk() == TopKMethod::TokenLanes;

    createKernel();
    return fillBody();
  }

private:
  void createKernel() {
    MLIRContext *ctx = func.getContext();
    Type ptr = LLVM::LLVMPointerType::get(ctx);
    SmallVector<Type> params;
    SmallVector<NamedAttribute> paramAttrs;
    Block &body = func.getBody().front();
    for (unsigned i = 0; i < body.getNumArguments(); ++i) {
      if (isTokenRange(i))
        continue;
      Type type = body.getArgument(i).getType();
      params.push_back(isa<MemRefType>(type) ? ptr : b.getI64Type());
      paramAttrs.push_back(b.getNamedAttr(kKernelArgAttrName, args[i]));
      if (auto memref = dyn_cast<MemRefType>(type)) {
        for (int64_t dim = 0; dim < memref.getRank(); ++dim) {
          if (!memref.isDynamicDim(dim))
            continue;
          params.push_back(b.getI64Type());
          paramAttrs.push_back(b.getNamedAttr(
              kKernelSizeAttrName,
              KernelSizeAttr::get(ctx, args[i].getName(), dim)));
        }
      }
    }
    b.setInsertionPoint(gpuModule.getBody()->getTerminator());
    kernel = b.create<gpu::GPUFuncOp>(func.getLoc(), func.getName(),
                                      b.getFunctionType(params, {}));
    for (auto [index, attr] : llvm::enumerate(paramAttrs))
      kernel.setArgAttrs(index, b.getDictionaryAttr(attr));
    kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
    int32_t blockDim = static_cast<int32_t>(
        isDispatch     ? moegen::abi::kDispatchBlockThreads
        : isUpdateBias ? moegen::abi::kUpdateBiasBlockThreads
                       : tokensPerBlock * lanesPerToken);
    kernel.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({blockDim, 1, 1}));
    // A token-lanes kernel needs about 40 registers a thread; left to
    // itself, ptxas -O3 aims at full occupancy (32 registers) and spills.
    // Half of an SM's threads, 64 registers each, is occupancy enough.
    if (isTokenLanes)
      kernel->setAttr("nvvm.minctasm",
                      b.getI32IntegerAttr(
                          std::max<int32_t>(1, 1024 / std::max(blockDim, 1))));
    // A route with a fused dispatch serves small calls only (a few blocks),
    // so occupancy matters less than the registers of the route and the
    // sort in one kernel: a quarter of an SM's threads, up to 128
    // registers each (at 64, ptxas spilled Qwen3's; left to aim at full
    // occupancy, Qwen2-57B's).
    else if (func->hasAttr(kFusedDispatchAttrName))
      kernel->setAttr("nvvm.minctasm",
                      b.getI32IntegerAttr(
                          std::max<int32_t>(1, 512 / std::max(blockDim, 1))));
    // An expert-choice route is a cooperative grid of at most one block per
    // SM (abi::cooperativeGridDim): no second block competes for the SM's
    // registers, and ptxas, aiming at occupancy it cannot have, spilled.
    else if (isCooperativeRowKernel)
      kernel->setAttr("nvvm.minctasm", b.getI32IntegerAttr(1));
    for (NamedAttribute attr : func->getAttrs())
      if (attr.getName().getValue().starts_with("moe."))
        kernel->setAttr(attr.getName(), attr.getValue());
  }

  /// Rebuilds the memref descriptor of a bare pointer: offset 0, the given
  /// sizes (static ones as constants), row-major strides.
  Value rebuildMemRef(Location loc, MemRefType type, Value pointer,
                      ArrayRef<Value> dynamicSizes) {
    MLIRContext *ctx = type.getContext();
    Type i64 = b.getI64Type();
    int64_t rank = type.getRank();
    Type ptr = LLVM::LLVMPointerType::get(ctx);
    auto array = LLVM::LLVMArrayType::get(i64, rank);
    auto descriptorType =
        LLVM::LLVMStructType::getLiteral(ctx, {ptr, ptr, i64, array, array});
    auto constant = [&](int64_t v) -> Value {
      return b.create<LLVM::ConstantOp>(loc, i64, b.getI64IntegerAttr(v));
    };
    SmallVector<Value> sizes;
    unsigned next = 0;
    for (int64_t dim = 0; dim < rank; ++dim)
      sizes.push_back(type.isDynamicDim(dim) ? dynamicSizes[next++]
                                             : constant(type.getDimSize(dim)));
    SmallVector<Value> strides(rank);
    Value stride = constant(1);
    for (int64_t dim = rank - 1; dim >= 0; --dim) {
      strides[dim] = stride;
      stride = b.create<LLVM::MulOp>(loc, stride, sizes[dim]);
    }
    Value descriptor = b.create<LLVM::UndefOp>(loc, descriptorType);
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, pointer, 0);
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, pointer, 1);
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, constant(0), 2);
    for (int64_t dim = 0; dim < rank; ++dim) {
      descriptor = b.create<LLVM::InsertValueOp>(
          loc, descriptor, sizes[dim], ArrayRef<int64_t>{3, dim});
      descriptor = b.create<LLVM::InsertValueOp>(
          loc, descriptor, strides[dim], ArrayRef<int64_t>{4, dim});
    }
    return b.create<UnrealizedConversionCastOp>(loc, type, descriptor)
        .getResult(0);
  }

  LogicalResult fillBody() {
    Location loc = func.getLoc();
    Block &source = func.getBody().front();
    Block &target = kernel.getBody().front();
    b.setInsertionPointToStart(&target);
    IRMapping mapping;

    // Parameters back to the memrefs and indices the body uses.
    unsigned param = 0;
    Value numTokens;
    for (unsigned i = 0; i < source.getNumArguments(); ++i) {
      if (isTokenRange(i))
        continue;
      BlockArgument arg = source.getArgument(i);
      if (auto type = dyn_cast<MemRefType>(arg.getType())) {
        Value pointer = target.getArgument(param++);
        SmallVector<Value> sizes;
        for (int64_t dim = 0; dim < type.getRank(); ++dim)
          if (type.isDynamicDim(dim))
            sizes.push_back(target.getArgument(param++));
        if (i == 0 && type.isDynamicDim(0))
          numTokens = b.create<arith::IndexCastOp>(loc, b.getIndexType(),
                                                   sizes.front());
        mapping.map(arg, rebuildMemRef(loc, type, pointer, sizes));
      } else {
        mapping.map(arg, b.create<arith::IndexCastOp>(
                             loc, b.getIndexType(), target.getArgument(param++)));
      }
    }

    Value laneId = b.create<gpu::LaneIdOp>(loc, /*upperBound=*/nullptr);
    Value threadId = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    // The lane within the token's segment, and the token within the block.
    Value lane = laneId;
    Value slot = b.create<arith::ConstantIndexOp>(loc, 0);
    if (!isGridKernel) {
      if (lanesPerToken < kWarpSize)
        lane = b.create<arith::AndIOp>(
            loc, laneId,
            b.create<arith::ConstantIndexOp>(loc, lanesPerToken - 1));
      slot = b.create<arith::DivUIOp>(
          loc, threadId, b.create<arith::ConstantIndexOp>(loc, lanesPerToken));
    }
    Value wholeWarp = b.create<arith::ConstantIntOp>(loc, -1, 32);
    Value memberMask =
        isGridKernel || lanesPerToken == kWarpSize
            ? wholeWarp
            : segmentMemberMask(b, loc, laneId, lanesPerToken);
    llvm::DenseSet<Operation *> skip;
    LaneDistributor distributor(b, mapping, lane, memberMask, wholeWarp,
                                isGridKernel ? kWarpSize : lanesPerToken);

    if (!isGridKernel) {
      if (!numTokens)
        return func.emitOpError("the first argument's first dimension must "
                                "be the tokens");
      if (isTokenLanes) {
        // A segment's W lanes take W consecutive tokens, [first, first +
        // W) within [0, T): the kernel walks them as one group of W (lane
        // i its token first + i), or, in the last segment, or where a
        // group holds an invalid input, one by one on all W lanes. Its
        // loops' trip counts differ between segments, so their
        // collectives name the segment's lanes.
        Value first = b.create<arith::AddIOp>(
            loc,
            b.create<arith::MulIOp>(
                loc, b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x),
                b.create<arith::ConstantIndexOp>(
                    loc, tokensPerBlock * lanesPerToken)),
            b.create<arith::MulIOp>(
                loc, slot,
                b.create<arith::ConstantIndexOp>(loc, lanesPerToken)));
        Value begin = b.create<arith::MinUIOp>(loc, first, numTokens);
        Value end = b.create<arith::MinUIOp>(
            loc,
            b.create<arith::AddIOp>(
                loc, first,
                b.create<arith::ConstantIndexOp>(loc, lanesPerToken)),
            numTokens);
        mapping.map(source.getArgument(*tokenBegin), begin);
        mapping.map(source.getArgument(*tokenEnd), end);
      } else if (!isCooperativeRowKernel) {
        // A cooperative row kernel computes its segments' tokens itself.
        // One token per segment: [token, token + 1). A segment past the last
        // token (in the last block only; no block is launched for T = 0)
        // routes the last token again and writes what its owner writes. So
        // the token loop has one trip in every segment, and ptxas sees the
        // body's shuffles in straight-line code: with a loop that may run
        // zero times it must assume divergence and wraps every shuffle in a
        // collective sequence.
        Value token = b.create<arith::AddIOp>(
            loc,
            b.create<arith::MulIOp>(
                loc, b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x),
                b.create<arith::ConstantIndexOp>(loc, tokensPerBlock)),
            slot);
        token = b.create<arith::MinUIOp>(
            loc, token,
            b.create<arith::SubIOp>(loc, numTokens,
                                    b.create<arith::ConstantIndexOp>(loc, 1)));
        Value end = b.create<arith::AddIOp>(
            loc, token, b.create<arith::ConstantIndexOp>(loc, 1));
        mapping.map(source.getArgument(*tokenBegin), token);
        mapping.map(source.getArgument(*tokenEnd), end);
        distributor.tokenBegin = source.getArgument(*tokenBegin);
        distributor.tokenEnd = source.getArgument(*tokenEnd);
      }

      // Stack rows: slices of this token's share of dynamic shared memory.
      SmallVector<memref::AllocaOp> rows;
      int64_t bytesPerToken = 0;
      SmallVector<int64_t> offsets;
      for (auto alloca : source.getOps<memref::AllocaOp>()) {
        MemRefType type = alloca.getType();
        if (!type.hasStaticShape() || type.getRank() != 1 ||
            !type.getElementType().isIntOrFloat())
          return alloca.emitOpError("stack rows must be static 1-D rows of "
                                    "scalars");
        offsets.push_back(bytesPerToken);
        bytesPerToken += llvm::alignTo(
            type.getNumElements() * elementBytes(type.getElementType()),
            kRowAlignment);
        rows.push_back(alloca);
      }
      if (!rows.empty()) {
        auto workgroup = gpu::AddressSpaceAttr::get(
            b.getContext(), gpu::AddressSpace::Workgroup);
        Value shared = b.create<gpu::DynamicSharedMemoryOp>(
            loc, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                 MemRefLayoutAttrInterface{}, workgroup));
        Value tokenBase = b.create<arith::MulIOp>(
            loc, slot, b.create<arith::ConstantIndexOp>(loc, bytesPerToken));
        for (auto [alloca, offset] : llvm::zip(rows, offsets)) {
          MemRefType type = alloca.getType();
          Value shift = b.create<arith::AddIOp>(
              loc, tokenBase, b.create<arith::ConstantIndexOp>(loc, offset));
          Value view = b.create<memref::ViewOp>(
              loc,
              MemRefType::get(type.getShape(), type.getElementType(),
                              MemRefLayoutAttrInterface{}, workgroup),
              shared, shift, ValueRange{});
          mapping.map(alloca.getResult(), view);
          distributor.sharedMemrefs.insert(view);
          skip.insert(alloca);
        }
      }
      sharedBytes = bytesPerToken * tokensPerBlock;
    }

    // The body, minus its return: gpu.func ends in gpu.return.
    skip.insert(source.getTerminator());
    if (failed(distributor.cloneBlock(source, skip)))
      return failure();
    b.create<gpu::ReturnOp>(loc);

    using namespace moegen::abi;
    int64_t numExperts = 0, topK = 0;
    for (KernelArgAttr arg : args) {
      if (arg.getName() == "expert_counts")
        numExperts = cast<IntegerAttr>(arg.getShape()[0]).getInt();
      if (arg.getName() == "topk_ids")
        topK = cast<IntegerAttr>(arg.getShape()[1]).getInt();
    }
    // A fused dispatch's counters and flag reuse the rows' shared memory
    // once the block's tokens are routed.
    if (func->hasAttr(kFusedDispatchAttrName))
      sharedBytes = std::max(
          sharedBytes,
          fusedDispatchSharedBytes(numExperts,
                                   getKernelConfig(func).getWarpsPerBlock()));
    kernel->setAttr(
        kLaunchAttrName,
        isCooperativeRowKernel
            ? LaunchAttr::get(b.getContext(), tokensPerBlock * lanesPerToken,
                              0, sharedBytes, kExpertChoiceMaxBlocks,
                              tokensPerBlock * topK, 0)
        : isDispatch   ? LaunchAttr::get(b.getContext(), kDispatchBlockThreads,
                                         0, dispatchSharedBytes(numExperts),
                                         dispatchMaxBlocks(numExperts),
                                         kDispatchSlotsPerBlock, 0)
        : isUpdateBias ? LaunchAttr::get(b.getContext(),
                                         kUpdateBiasBlockThreads, 0, 0, 0, 0,
                                         0)
        // A token per thread: the runtime's grid is ceil(T / block_dim).
        : isTokenLanes ? LaunchAttr::get(b.getContext(),
                                         tokensPerBlock * lanesPerToken,
                                         tokensPerBlock * lanesPerToken,
                                         sharedBytes, 0, 0, 1)
                       : LaunchAttr::get(b.getContext(),
                                         tokensPerBlock * lanesPerToken,
                                         tokensPerBlock, sharedBytes, 0, 0,
                                         lanesPerToken));
    return success();
  }

  bool isTokenRange(unsigned i) const {
    return (tokenBegin && i == *tokenBegin) || (tokenEnd && i == *tokenEnd);
  }

  func::FuncOp func;
  gpu::GPUModuleOp gpuModule;
  OpBuilder b;
  gpu::GPUFuncOp kernel;
  int64_t lanesPerToken = kWarpSize;
  int64_t tokensPerBlock = 1;
  bool isDispatch = false, isUpdateBias = false, isGridKernel = false,
       isCooperativeRowKernel = false, isTokenLanes = false;
  SmallVector<KernelArgAttr> args;
  std::optional<unsigned> tokenBegin, tokenEnd;
  int64_t sharedBytes = 0;
};

struct ConvertMoELoopsToGPUPass
    : public moe::impl::ConvertMoELoopsToGPUBase<ConvertMoELoopsToGPUPass> {
  using ConvertMoELoopsToGPUBase::ConvertMoELoopsToGPUBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> kernels;
    for (auto func : module.getOps<func::FuncOp>()) {
      KernelConfigAttr config = getKernelConfig(func);
      if (func->hasAttr(kEntryAttrName) && config &&
          config.getTarget() == KernelTarget::Nvptx)
        kernels.push_back(func);
    }
    if (kernels.empty())
      return;

    OpBuilder b(module.getBodyRegion());
    b.setInsertionPointToEnd(module.getBody());
    auto gpuModule = b.create<gpu::GPUModuleOp>(module.getLoc(), moduleName);
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    b.getUnitAttr());
    for (func::FuncOp func : kernels) {
      if (failed(KernelConverter(func, gpuModule).convert()))
        return signalPassFailure();
      func.erase();
    }
  }
};

} // namespace
