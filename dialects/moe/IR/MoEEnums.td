//===- MoEEnums.td - Enumerations of the moe dialect -------*- tablegen -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEENUMS_TD
#define MOEGEN_DIALECT_MOE_IR_MOEENUMS_TD

include "mlir/IR/EnumAttr.td"

def MoE_ScoringSoftmax      : I32EnumAttrCase<"softmax", 0>;
def MoE_ScoringSigmoid      : I32EnumAttrCase<"sigmoid", 1>;
def MoE_ScoringSqrtSoftplus : I32EnumAttrCase<"sqrtsoftplus", 2>;

def MoE_ScoringKindAttr : I32EnumAttr<"ScoringKind",
    "how gate logits become expert scores",
    [MoE_ScoringSoftmax, MoE_ScoringSigmoid, MoE_ScoringSqrtSoftplus]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_GroupScoreTop2Sum : I32EnumAttrCase<"top2_sum", 0>;
def MoE_GroupScoreMax     : I32EnumAttrCase<"max", 1>;

def MoE_GroupScoreKindAttr : I32EnumAttr<"GroupScoreKind",
    "how a group of experts is scored for grouped top-k",
    [MoE_GroupScoreTop2Sum, MoE_GroupScoreMax]> {
  let cppNamespace = "::mlir::moe";
}

#endif // MOEGEN_DIALECT_MOE_IR_MOEENUMS_TD
