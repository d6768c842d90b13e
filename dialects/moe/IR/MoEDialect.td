//===- MoEDialect.td - The moe dialect ---------------------*- tablegen -*-===//
//
// The `moe` dialect describes Mixture-of-Experts routing ("gating") as a
// pipeline of row-wise tensor ops; see docs/MoEDialectRationale.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEDIALECT_TD
#define MOEGEN_DIALECT_MOE_IR_MOEDIALECT_TD

include "mlir/IR/OpBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Mixture-of-Experts routing: scoring, selection, weights, dispatch";
  let description = [{
    The `moe` dialect composes an MoE router out of small ops on tensors of
    shape `[T, E]` (T tokens, dynamic or static; E experts, static). Every op
    except `moe.dispatch` acts on each token's row independently, so a whole
    routing entry point fuses into one kernel. Each gating variant (softmax
    top-k, DeepSeek-V3 grouped top-k with a selection bias, DeepSeek-V4 hash
    layers, router replay) is a composition of these ops, not a special op.

    The exact semantics of every op are in docs/semantics.md.
  }];
  let dependentDialects = ["::mlir::tensor::TensorDialect"];
  // Checks where `moe.entry`, `moe.kernel_config` and `moe.launch` sit and
  // rejects unknown `moe.*` attributes; the typed attributes (MoEAttrs.td)
  // check their own contents.
  let hasOperationAttrVerify = 1;
  // `moe.kernel_arg` and `moe.kernel_size` on kernel arguments.
  let hasRegionArgAttrVerify = 1;
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerAttributes();
  }];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOEGEN_DIALECT_MOE_IR_MOEDIALECT_TD
