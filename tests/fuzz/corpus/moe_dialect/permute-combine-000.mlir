// Permute and combine entry points, as a spec with permute: true gives them.

func.func @permute(%hidden: tensor<?x?xbf16>, %slots: tensor<?xi32>) -> tensor<?x?xbf16> attributes {moe.entry = "permute"} {
  %p = moe.permute %hidden[%slots] k 8 : tensor<?x?xbf16>, tensor<?xi32> -> tensor<?x?xbf16>
  return %p : tensor<?x?xbf16>
}

func.func @combine(%w: tensor<?x8xf32>, %pos: tensor<?xi32>, %out: tensor<?x?xbf16>) -> tensor<?x?xbf16> attributes {moe.entry = "combine"} {
  %c = moe.combine %out[%pos] weights %w : tensor<?x?xbf16>, tensor<?xi32>, tensor<?x8xf32> -> tensor<?x?xbf16>
  return %c : tensor<?x?xbf16>
}
