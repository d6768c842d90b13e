//===- CaptureToLoops.cpp - moe.capture on a row --------------------------===//
//
// Writes the token's ids into buffer[token, layer, :] in place (the entry's
// result is the buffer argument itself). A layer outside the buffer is
// reported and nothing is written.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

namespace mlir::moe::loops {

LogicalResult lowerCapture(CaptureOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef ids = cg.rowOf(op.getIds());
  Value buffer = cg.rowOf(op.getBuffer()).memref;
  Value layer = cg.scalars.lookup(op.getLayer());
  if (!buffer || !layer)
    return op.emitOpError("buffer and layer must be arguments of the entry "
                          "point");
  Type element = cast<MemRefType>(buffer.getType()).getElementType();
  Value layers = b.create<memref::DimOp>(loc, buffer, 1);
  Value valid = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, layer,
                                        layers);
  cg.ifThen(b.create<arith::XOrIOp>(loc, valid, cg.boolean(true)), [&] {
    cg.recordError(KernelErrorCode::CaptureLayerOutOfRange, cg.token, layers,
                   layer);
  });
  // A vector chunk of ids at a time: on a GPU one coalesced store per
  // chunk.
  cg.ifThen(valid, [&] {
    cg.forEachChunk(ids.size, {}, [&](Value e0, int64_t count, ValueRange) {
      Value chunk = cg.loadChunk(ids, e0, count, cg.i32(0));
      if (element != b.getI32Type())
        chunk = b.create<arith::TruncIOp>(loc, cg.vectorOf(element), chunk);
      Value mask = b.create<vector::ConstantMaskOp>(
          loc, VectorType::get({cg.width}, b.getI1Type()),
          b.getI64ArrayAttr({count}));
      b.create<vector::MaskedStoreOp>(loc, buffer,
                                      ValueRange{cg.token, layer, e0}, mask,
                                      chunk);
      return SmallVector<Value>{};
    });
  });
  return success();
}

} // namespace mlir::moe::loops
