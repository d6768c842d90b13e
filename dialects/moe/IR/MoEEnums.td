//===- MoEEnums.td - Enumerations of the moe dialect -------*- tablegen -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEENUMS_TD
#define MOEGEN_DIALECT_MOE_IR_MOEENUMS_TD

include "mlir/IR/EnumAttr.td"

def MoE_ScoringSoftmax      : I32EnumAttrCase<"softmax", 0>;
def MoE_ScoringSigmoid      : I32EnumAttrCase<"sigmoid", 1>;
def MoE_ScoringSqrtSoftplus : I32EnumAttrCase<"sqrtsoftplus", 2>;
def MoE_ScoringIdentity     : I32EnumAttrCase<"identity", 3>;

def MoE_ScoringKindAttr : I32EnumAttr<"ScoringKind",
    "how gate logits become expert scores",
    [MoE_ScoringSoftmax, MoE_ScoringSigmoid, MoE_ScoringSqrtSoftplus,
     MoE_ScoringIdentity]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_GroupScoreTop2Sum : I32EnumAttrCase<"top2_sum", 0>;
def MoE_GroupScoreMax     : I32EnumAttrCase<"max", 1>;

def MoE_GroupScoreKindAttr : I32EnumAttr<"GroupScoreKind",
    "how a group of experts is scored for grouped top-k",
    [MoE_GroupScoreTop2Sum, MoE_GroupScoreMax]> {
  let cppNamespace = "::mlir::moe";
}

// Schedule and ABI enums: parameters of the attributes in MoEAttrs.td, not
// attributes of their own.

def MoE_KernelTargetCpu   : I32EnumAttrCase<"Cpu", 0, "cpu">;
def MoE_KernelTargetNvptx : I32EnumAttrCase<"Nvptx", 1, "nvptx">;

def MoE_KernelTarget : I32EnumAttr<"KernelTarget",
    "what a kernel is compiled for: the host (cpu) or NVIDIA GPUs (nvptx)",
    [MoE_KernelTargetCpu, MoE_KernelTargetNvptx]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

// Both give the same ids (the total order of docs/semantics.md); they differ
// in cost.
def MoE_TopKArgmaxPasses : I32EnumAttrCase<"ArgmaxPasses", 0, "argmax_passes">;
def MoE_TopKInsertion    : I32EnumAttrCase<"Insertion", 1, "insertion">;
def MoE_TopKLaneLists    : I32EnumAttrCase<"LaneLists", 2, "lane_lists">;
def MoE_TopKTokenLanes   : I32EnumAttrCase<"TokenLanes", 3, "token_lanes">;
def MoE_TopKLaneTree     : I32EnumAttrCase<"LaneTree", 4, "lane_tree">;

def MoE_TopKMethod : I32EnumAttr<"TopKMethod",
    "how a row's top-k is found: k passes of a vectorized arg-max "
    "(argmax_passes), one pass keeping a sorted list of k (insertion), or "
    "a list per lane in registers (its chunk elements sorted, or on rows "
    "of more than 16 chunks a lane its keys above a bound from the lanes' "
    "maxima), then k arg-max rounds over the lanes' heads (lane_lists); "
    "or tokens across the lanes: vector_width tokens at once (on nvptx a "
    "token a thread), an insertion into k slots over the experts "
    "(token_lanes); or, on the "
    "host, the lane lists merged by a bitonic tree across the lanes, "
    "log2(vector_width) levels instead of k rounds (lane_tree)",
    [MoE_TopKArgmaxPasses, MoE_TopKInsertion, MoE_TopKLaneLists,
     MoE_TopKTokenLanes, MoE_TopKLaneTree]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

// The roles and accesses of abi/KernelAbi.h, case for case (checked by a
// static_assert in MoEAttrs.cpp).
def MoE_ArgRoleTensor      : I32EnumAttrCase<"Tensor", 0, "tensor">;
def MoE_ArgRoleScalar      : I32EnumAttrCase<"Scalar", 1, "scalar">;
def MoE_ArgRoleErrorRecord : I32EnumAttrCase<"ErrorRecord", 2, "error_record">;
def MoE_ArgRoleTokenBegin  : I32EnumAttrCase<"TokenBegin", 3, "token_begin">;
def MoE_ArgRoleTokenEnd    : I32EnumAttrCase<"TokenEnd", 4, "token_end">;
def MoE_ArgRoleScratch     : I32EnumAttrCase<"Scratch", 5, "scratch">;

def MoE_KernelArgRole : I32EnumAttr<"KernelArgRole",
    "how a kernel argument is passed",
    [MoE_ArgRoleTensor, MoE_ArgRoleScalar, MoE_ArgRoleErrorRecord,
     MoE_ArgRoleTokenBegin, MoE_ArgRoleTokenEnd, MoE_ArgRoleScratch]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_AccessRead      : I32EnumAttrCase<"Read", 0, "read">;
def MoE_AccessWrite     : I32EnumAttrCase<"Write", 1, "write">;
def MoE_AccessReadWrite : I32EnumAttrCase<"ReadWrite", 2, "readwrite">;

def MoE_KernelArgAccess : I32EnumAttr<"KernelArgAccess",
    "what a kernel does with an argument's memory",
    [MoE_AccessRead, MoE_AccessWrite, MoE_AccessReadWrite]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

#endif // MOEGEN_DIALECT_MOE_IR_MOEENUMS_TD
