//===- GpuToEmulator.cpp - gpu.func kernels as host thread functions ------===//
//
// See the pass description in Passes.td. The kernel body is kept as the
// NVPTX backend built it; only the operations that exist on a GPU alone
// (thread coordinates, shuffles, warp syncs, shared memory) become calls
// into the emulation runtime, and every memory access is announced to it
// first, so that the runtime can stop a thread before a bad access happens.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/gpuemu/EmuRuntime.h"
#include "compiler/backend/gpuemu/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/ADT/TypeSwitch.h"

namespace moegen::gpuemu {
#define GEN_PASS_DEF_CONVERTGPUTOEMULATOR
#include "compiler/backend/gpuemu/Passes.h.inc"
} // namespace moegen::gpuemu

using namespace mlir;

namespace {

/// The emulation runtime's entry points (EmuRuntime.h), as the lowered
/// kernels call them.
constexpr llvm::StringLiteral kShuffleXor = "moegen_emu_shfl_xor_i32";
constexpr llvm::StringLiteral kRedux = "moegen_emu_redux_i32";
constexpr llvm::StringLiteral kBallot = "moegen_emu_ballot_i32";
constexpr llvm::StringLiteral kMatchAny = "moegen_emu_match_any_i32";
constexpr llvm::StringLiteral kWarpSync = "moegen_emu_warp_sync";
constexpr llvm::StringLiteral kBarrier = "moegen_emu_barrier";
constexpr llvm::StringLiteral kYield = "moegen_emu_yield";
constexpr llvm::StringLiteral kSharedBase = "moegen_emu_shared_base";
constexpr llvm::StringLiteral kGridDim = "moegen_emu_grid_dim";
constexpr llvm::StringLiteral kSharedBytes = "moegen_emu_shared_bytes";
constexpr llvm::StringLiteral kCheckAccess = "moegen_emu_check_access";

constexpr int64_t kWarpSize = 32;

enum class Fault { None, LaneMapping, NoWarpSync, SharedRowOffset };

/// moegen_emu_check_access's `isWrite`: atomics do not race with each
/// other, only with plain accesses.
enum class Access { Read = 0, Write = 1, Atomic = 2 };

bool isShared(Type type) {
  auto memref = dyn_cast<MemRefType>(type);
  auto space = memref ? dyn_cast_or_null<gpu::AddressSpaceAttr>(
                            memref.getMemorySpace())
                      : nullptr;
  return space && space.getValue() == gpu::AddressSpace::Workgroup;
}

/// The runtime's name of a redux.sync operation.
moegen::gpuemu::ReduxKind emulatedReduxKind(NVVM::ReduxKind kind) {
  using namespace moegen::gpuemu;
  switch (kind) {
  case NVVM::ReduxKind::ADD:
    return kReduxAdd;
  case NVVM::ReduxKind::AND:
    return kReduxAnd;
  case NVVM::ReduxKind::OR:
    return kReduxOr;
  case NVVM::ReduxKind::XOR:
    return kReduxXor;
  case NVVM::ReduxKind::MAX:
    return kReduxMax;
  case NVVM::ReduxKind::MIN:
    return kReduxMin;
  case NVVM::ReduxKind::UMAX:
    return kReduxUMax;
  case NVVM::ReduxKind::UMIN:
    return kReduxUMin;
  }
  llvm_unreachable("every redux.sync kind is listed");
}

/// `type` in host memory: workgroup memrefs lose their address space.
Type hostType(Type type) {
  if (!isShared(type))
    return type;
  auto memref = cast<MemRefType>(type);
  return MemRefType::get(memref.getShape(), memref.getElementType(),
                         memref.getLayout());
}

void declareRuntime(ModuleOp module) {
  MLIRContext *ctx = module.getContext();
  OpBuilder b = OpBuilder::atBlockBegin(module.getBody());
  Type ptr = LLVM::LLVMPointerType::get(ctx);
  Type i32 = b.getI32Type(), i64 = b.getI64Type();
  auto declare = [&](StringRef name, TypeRange inputs, TypeRange results) {
    if (module.lookupSymbol(name))
      return;
    auto fn = b.create<func::FuncOp>(module.getLoc(), name,
                                     b.getFunctionType(inputs, results));
    fn.setPrivate();
  };
  declare(kShuffleXor, {ptr, i32, i32, i32, i32}, {i32});
  declare(kRedux, {ptr, i32, i32, i32}, {i32});
  declare(kBallot, {ptr, i32, i32}, {i32});
  declare(kMatchAny, {ptr, i32, i32}, {i32});
  declare(kWarpSync, {ptr, i32}, {});
  declare(kBarrier, {ptr}, {});
  declare(kYield, {ptr}, {});
  declare(kSharedBase, {ptr}, {ptr});
  declare(kGridDim, {ptr}, {i64});
  declare(kSharedBytes, {ptr}, {i64});
  declare(kCheckAccess, {ptr, ptr, i64, i32, i32, i32}, {});
}

class KernelConverter {
public:
  KernelConverter(gpu::GPUFuncOp kernel, ModuleOp module, Fault fault)
      : kernel(kernel), module(module), fault(fault),
        b(kernel.getContext()) {}

  LogicalResult convert() {
    if (kernel.getNumWorkgroupAttributions() ||
        kernel.getNumPrivateAttributions())
      return kernel.emitOpError("memory attributions cannot be emulated; "
                                "the NVPTX backend uses dynamic shared "
                                "memory");
    MLIRContext *ctx = kernel.getContext();
    Type i64 = b.getI64Type();
    SmallVector<Type> inputs(kernel.getArgumentTypes());
    inputs.append({i64, i64, LLVM::LLVMPointerType::get(ctx)});
    b.setInsertionPointToEnd(module.getBody());
    fn = b.create<func::FuncOp>(kernel.getLoc(), kernel.getName(),
                                b.getFunctionType(inputs, {}));
    for (NamedAttribute attr : kernel->getAttrs())
      if (attr.getName().getValue().starts_with("moe."))
        fn->setAttr(attr.getName(), attr.getValue());
    for (unsigned i = 0; i < kernel.getNumArguments(); ++i)
      if (DictionaryAttr attrs = kernel.getArgAttrDict(i))
        fn.setArgAttrs(i, attrs);
    fn.getBody().takeBody(kernel.getBody());
    Block &entry = fn.getBody().front();
    blockIdx = entry.addArgument(i64, kernel.getLoc());
    threadIdx = entry.addArgument(i64, kernel.getLoc());
    context = entry.addArgument(LLVM::LLVMPointerType::get(ctx),
                                kernel.getLoc());

    b.setInsertionPointToStart(&entry);
    Location loc = kernel.getLoc();
    Value laneI64 =
        b.create<arith::RemUIOp>(loc, threadIdx, constantI64(loc, kWarpSize));
    // The injected bug: lanes off by one (lane 31 becomes 32).
    if (fault == Fault::LaneMapping)
      laneI64 = b.create<arith::AddIOp>(loc, laneI64, constantI64(loc, 1));
    threadIndex = b.create<arith::IndexCastOp>(loc, b.getIndexType(), threadIdx);
    blockIndex = b.create<arith::IndexCastOp>(loc, b.getIndexType(), blockIdx);
    laneIndex = b.create<arith::IndexCastOp>(loc, b.getIndexType(), laneI64);
    laneI32 = b.create<arith::TruncIOp>(loc, b.getI32Type(), laneI64);

    SmallVector<Operation *> ops;
    fn.walk([&](Operation *op) {
      if (op != fn.getOperation())
        ops.push_back(op);
    });
    for (Operation *op : ops)
      if (failed(rewrite(op)))
        return failure();
    stripSharedAddressSpace();
    return success();
  }

private:
  Value constantI64(Location loc, int64_t value) {
    return b.create<arith::ConstantIntOp>(loc, value, 64);
  }
  Value constantI32(Location loc, int64_t value) {
    return b.create<arith::ConstantIntOp>(loc, value, 32);
  }
  Value call(Location loc, StringRef name, TypeRange results,
             ValueRange operands) {
    auto op = b.create<func::CallOp>(loc, name, results, operands);
    return op.getNumResults() ? op.getResult(0) : Value();
  }

  LogicalResult rewrite(Operation *op) {
    b.setInsertionPoint(op);
    Location loc = op->getLoc();
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        .Case([&](gpu::ThreadIdOp id) {
          return replaceCoordinate(id, id.getDimension(), threadIndex);
        })
        .Case([&](gpu::BlockIdOp id) {
          return replaceCoordinate(id, id.getDimension(), blockIndex);
        })
        .Case([&](gpu::GridDimOp dim) {
          Value x = dim.getDimension() == gpu::Dimension::x
                        ? b.create<arith::IndexCastOp>(
                               loc, b.getIndexType(),
                               call(loc, kGridDim, b.getI64Type(), {context}))
                              .getResult()
                        : b.create<arith::ConstantIndexOp>(loc, 1).getResult();
          dim.replaceAllUsesWith(x);
          dim.erase();
          return success();
        })
        .Case([&](LLVM::CallIntrinsicOp intrinsic) -> LogicalResult {
          if (intrinsic.getIntrin() == "llvm.nvvm.match.any.sync.i32") {
            // (mask, value): the member lanes holding this lane's value.
            Value same = call(loc, kMatchAny, b.getI32Type(),
                              {context, intrinsic.getArgs()[1],
                               intrinsic.getArgs()[0]});
            intrinsic.getResult(0).replaceAllUsesWith(same);
            intrinsic.erase();
            return success();
          }
          // Memory is sequentially consistent here: fences are no-ops.
          if (intrinsic.getIntrin() != "llvm.nvvm.membar.gl")
            return intrinsic.emitOpError("cannot be emulated on the host");
          intrinsic.erase();
          return success();
        })
        .Case([&](gpu::LaneIdOp lane) {
          lane.replaceAllUsesWith(laneIndex);
          lane.erase();
          return success();
        })
        .Case([&](gpu::ShuffleOp shuffle) { return rewriteShuffle(shuffle); })
        .Case([&](NVVM::ShflOp shuffle) { return rewriteNvvmShuffle(shuffle); })
        .Case([&](NVVM::ReduxOp redux) { return rewriteRedux(redux); })
        .Case([&](NVVM::VoteBallotOp ballot) { return rewriteBallot(ballot); })
        .Case([&](NVVM::SyncWarpOp sync) {
          if (fault != Fault::NoWarpSync)
            call(loc, kWarpSync, {}, {context, sync.getMask()});
          sync.erase();
          return success();
        })
        .Case([&](gpu::BarrierOp barrier) {
          call(loc, kBarrier, {}, {context});
          barrier.erase();
          return success();
        })
        .Case([&](gpu::DynamicSharedMemoryOp shared) {
          shared.replaceAllUsesWith(sharedMemory(loc));
          shared.erase();
          return success();
        })
        .Case([&](memref::ViewOp view) {
          if (fault == Fault::SharedRowOffset && isShared(view.getType()))
            view.getByteShiftMutable().assign(b.create<arith::AddIOp>(
                loc, view.getByteShift(),
                b.create<arith::ConstantIndexOp>(loc, 4)));
          return success();
        })
        .Case([&](memref::LoadOp load) {
          checkAccess(loc, load.getMemRef(), load.getIndices(), Access::Read);
          return success();
        })
        .Case([&](memref::StoreOp store) {
          checkAccess(loc, store.getMemRef(), store.getIndices(),
                      Access::Write);
          return success();
        })
        .Case([&](memref::AtomicRMWOp atomic) {
          checkAccess(loc, atomic.getMemref(), atomic.getIndices(),
                      Access::Atomic);
          b.setInsertionPointAfter(atomic);
          call(loc, kYield, {}, {context});
          return success();
        })
        .Case([&](gpu::ReturnOp ret) {
          b.create<func::ReturnOp>(loc);
          ret.erase();
          return success();
        })
        .Default([&](Operation *other) -> LogicalResult {
          if (isa<gpu::GPUDialect, NVVM::NVVMDialect>(other->getDialect()))
            return other->emitOpError("cannot be emulated on the host");
          return success();
        });
  }

  LogicalResult replaceCoordinate(Operation *op, gpu::Dimension dimension,
                                  Value x) {
    Value value =
        dimension == gpu::Dimension::x
            ? x
            : b.create<arith::ConstantIndexOp>(op->getLoc(), 0).getResult();
    op->getResult(0).replaceAllUsesWith(value);
    op->erase();
    return success();
  }

  LogicalResult rewriteShuffle(gpu::ShuffleOp shuffle) {
    Location loc = shuffle.getLoc();
    if (shuffle.getMode() != gpu::ShuffleMode::XOR)
      return shuffle.emitOpError("only xor shuffles are emulated");
    Type type = shuffle.getValue().getType();
    if (!type.isF32() && !type.isInteger(32))
      return shuffle.emitOpError("shuffles of ") << type << " are not emulated";
    // The NVVM lowering turns a narrower width into a partial member mask,
    // which the runtime does not model; the backend only emits whole warps.
    auto width = shuffle.getWidth().getDefiningOp<arith::ConstantIntOp>();
    if (!width || width.value() != kWarpSize)
      return shuffle.emitOpError("only shuffles over a whole warp (width ")
             << kWarpSize << ") are emulated";
    Value bits = shuffle.getValue();
    if (type.isF32())
      bits = b.create<arith::BitcastOp>(loc, b.getI32Type(), bits);
    Value result =
        call(loc, kShuffleXor, b.getI32Type(),
             {context, bits, shuffle.getOffset(), shuffle.getWidth(),
              constantI32(loc, -1)});
    if (type.isF32())
      result = b.create<arith::BitcastOp>(loc, type, result);
    // PTX: the partner lane^offset is valid when it is a lane of the warp
    // (width is 32, checked above).
    Value segmentMask = b.create<arith::SubIOp>(loc, constantI32(loc, 0),
                                                shuffle.getWidth());
    Value partner =
        b.create<arith::XOrIOp>(loc, laneI32, shuffle.getOffset());
    Value valid = b.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::eq,
        b.create<arith::AndIOp>(loc, partner, segmentMask),
        b.create<arith::AndIOp>(loc, laneI32, segmentMask));
    shuffle.getShuffleResult().replaceAllUsesWith(result);
    shuffle.getValid().replaceAllUsesWith(valid);
    shuffle.erase();
    return success();
  }

  /// nvvm.shfl.sync bfly over a member mask, in segments that its c
  /// operand ((32 - width) << 8 | 31, CUDA's __shfl_xor_sync) names.
  LogicalResult rewriteNvvmShuffle(NVVM::ShflOp shuffle) {
    Location loc = shuffle.getLoc();
    if (shuffle.getKind() != NVVM::ShflKind::bfly ||
        shuffle.getReturnValueAndIsValid())
      return shuffle.emitOpError("only bfly shuffles without a validity "
                                 "result are emulated");
    Type type = shuffle.getVal().getType();
    if (!type.isF32() && !type.isInteger(32))
      return shuffle.emitOpError("shuffles of ") << type << " are not emulated";
    auto clamp = shuffle.getMaskAndClamp().getDefiningOp<arith::ConstantIntOp>();
    int64_t segmentBits = clamp ? (clamp.value() >> 8) & 31 : -1;
    int64_t width = kWarpSize - segmentBits;
    if (!clamp || (clamp.value() & 0x1f1f) != clamp.value() ||
        (clamp.value() & 31) != 31 || !llvm::isPowerOf2_64(width))
      return shuffle.emitOpError("only a constant c = (32 - width) << 8 | 31 "
                                 "with a power-of-two width is emulated");
    Value bits = shuffle.getVal();
    if (type.isF32())
      bits = b.create<arith::BitcastOp>(loc, b.getI32Type(), bits);
    Value result = call(loc, kShuffleXor, b.getI32Type(),
                        {context, bits, shuffle.getOffset(),
                         constantI32(loc, width), shuffle.getThreadMask()});
    if (type.isF32())
      result = b.create<arith::BitcastOp>(loc, type, result);
    shuffle.getResult().replaceAllUsesWith(result);
    shuffle.erase();
    return success();
  }

  /// redux.sync over its member mask: every member ends with the members'
  /// result, as PTX defines it.
  LogicalResult rewriteRedux(NVVM::ReduxOp redux) {
    Location loc = redux.getLoc();
    if (!redux.getType().isInteger(32))
      return redux.emitOpError("only i32 redux.sync is emulated");
    Value value = call(loc, kRedux, b.getI32Type(),
                       {context, redux.getVal(),
                        constantI32(loc, emulatedReduxKind(redux.getKind())),
                        redux.getMaskAndClamp()});
    redux.getResult().replaceAllUsesWith(value);
    redux.erase();
    return success();
  }

  /// vote.sync.ballot over its member mask: every member ends with the bits
  /// of the members whose predicate is true.
  LogicalResult rewriteBallot(NVVM::VoteBallotOp ballot) {
    Location loc = ballot.getLoc();
    if (!ballot.getType().isInteger(32) ||
        !ballot.getPred().getType().isInteger(1))
      return ballot.emitOpError("only an i32 ballot of an i1 is emulated");
    Value predicate =
        b.create<arith::ExtUIOp>(loc, b.getI32Type(), ballot.getPred());
    Value value = call(loc, kBallot, b.getI32Type(),
                       {context, predicate, ballot.getMask()});
    ballot.getResult().replaceAllUsesWith(value);
    ballot.erase();
    return success();
  }


  /// The block's dynamic shared memory as a memref<?xi8> over the
  /// runtime's buffer.
  Value sharedMemory(Location loc) {
    MLIRContext *ctx = b.getContext();
    Type ptr = LLVM::LLVMPointerType::get(ctx);
    Type i64 = b.getI64Type();
    Value base = call(loc, kSharedBase, ptr, {context});
    Value bytes = call(loc, kSharedBytes, i64, {context});
    auto array = LLVM::LLVMArrayType::get(i64, 1);
    auto descriptorType =
        LLVM::LLVMStructType::getLiteral(ctx, {ptr, ptr, i64, array, array});
    Value descriptor = b.create<LLVM::UndefOp>(loc, descriptorType);
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, base, 0);
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, base, 1);
    Value zero = b.create<LLVM::ConstantOp>(loc, i64, b.getI64IntegerAttr(0));
    Value one = b.create<LLVM::ConstantOp>(loc, i64, b.getI64IntegerAttr(1));
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, zero, 2);
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, bytes,
                                               ArrayRef<int64_t>{3, 0});
    descriptor = b.create<LLVM::InsertValueOp>(loc, descriptor, one,
                                               ArrayRef<int64_t>{4, 0});
    auto type = MemRefType::get({ShapedType::kDynamic}, b.getI8Type());
    return b.create<UnrealizedConversionCastOp>(loc, type, descriptor)
        .getResult(0);
  }

  /// Announces an access of one element of `memref` at `indices` to the
  /// runtime, before it happens.
  void checkAccess(Location loc, Value memref, ValueRange indices,
                   Access access) {
    auto type = cast<MemRefType>(memref.getType());
    auto metadata = b.create<memref::ExtractStridedMetadataOp>(loc, memref);
    Value linear = metadata.getOffset();
    for (auto [i, at] : llvm::enumerate(indices))
      linear = b.create<arith::AddIOp>(
          loc, linear,
          b.create<arith::MulIOp>(loc, at, metadata.getStrides()[i]));
    int64_t elementBytes =
        std::max<int64_t>(1, (type.getElementTypeBitWidth() + 7) / 8);
    Value base = alignedAddress(loc, memref);
    Value address = b.create<arith::AddIOp>(
        loc, base,
        b.create<arith::MulIOp>(
            loc, linear, b.create<arith::ConstantIndexOp>(loc, elementBytes)));
    Value pointer = b.create<LLVM::IntToPtrOp>(
        loc, LLVM::LLVMPointerType::get(b.getContext()),
        b.create<arith::IndexCastOp>(loc, b.getI64Type(), address));
    call(loc, kCheckAccess, {},
         {context, pointer, constantI64(loc, elementBytes),
          constantI32(loc, static_cast<int>(access)),
          constantI32(loc, isShared(type) ? 1 : 0),
          constantI32(loc, nextSite++)});
  }

  /// The address of `memref`'s first element. A memref.view keeps its byte
  /// shift in the aligned pointer, which expand-strided-metadata would
  /// fold away (it rewrites the query to the view's source), so views are
  /// followed to their source here.
  Value alignedAddress(Location loc, Value memref) {
    if (auto view = memref.getDefiningOp<memref::ViewOp>())
      return b.create<arith::AddIOp>(
          loc, alignedAddress(loc, view.getSource()), view.getByteShift());
    return b.create<memref::ExtractAlignedPointerAsIndexOp>(
        loc, b.getIndexType(), memref);
  }

  /// Workgroup memrefs become host memrefs, everywhere in the function.
  void stripSharedAddressSpace() {
    fn.walk([&](Operation *op) {
      for (Value result : op->getResults())
        result.setType(hostType(result.getType()));
      for (Region &region : op->getRegions())
        for (Block &block : region)
          for (BlockArgument arg : block.getArguments())
            arg.setType(hostType(arg.getType()));
    });
  }

  gpu::GPUFuncOp kernel;
  ModuleOp module;
  Fault fault;
  OpBuilder b;
  func::FuncOp fn;
  Value blockIdx, threadIdx, context;
  Value threadIndex, blockIndex, laneIndex, laneI32;
  /// Numbers the kernel's memory accesses (moegen_emu_check_access's site).
  int32_t nextSite = 0;
};

struct ConvertGpuToEmulatorPass
    : public moegen::gpuemu::impl::ConvertGpuToEmulatorBase<
          ConvertGpuToEmulatorPass> {
  using ConvertGpuToEmulatorBase::ConvertGpuToEmulatorBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    std::optional<Fault> fault =
        llvm::StringSwitch<std::optional<Fault>>(injectFault)
            .Case("", Fault::None)
            .Case("lane-mapping", Fault::LaneMapping)
            .Case("no-warp-sync", Fault::NoWarpSync)
            .Case("shared-row-offset", Fault::SharedRowOffset)
            .Default(std::nullopt);
    if (!fault) {
      module.emitError() << "convert-gpu-to-emulator: inject-fault = '"
                         << injectFault
                         << "': must be lane-mapping, no-warp-sync or "
                            "shared-row-offset";
      return signalPassFailure();
    }
    SmallVector<gpu::GPUModuleOp> gpuModules(module.getOps<gpu::GPUModuleOp>());
    if (gpuModules.empty())
      return;
    declareRuntime(module);
    for (gpu::GPUModuleOp gpuModule : gpuModules) {
      SmallVector<gpu::GPUFuncOp> kernels(gpuModule.getOps<gpu::GPUFuncOp>());
      for (gpu::GPUFuncOp kernel : kernels) {
        if (!kernel.isKernel())
          return (void)(kernel.emitOpError("only kernels are emulated"),
                        signalPassFailure());
        if (failed(KernelConverter(kernel, module, *fault).convert()))
          return signalPassFailure();
      }
      gpuModule.erase();
    }
    module->removeAttr(gpu::GPUDialect::getContainerModuleAttrName());
  }
};

} // namespace
