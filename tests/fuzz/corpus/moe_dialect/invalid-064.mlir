//===----------------------------------------------------------------------===//
// moe.normalize
//===----------------------------------------------------------------------===//

func.func @normalize_negative_epsilon(%w: tensor<?x8xf32>) {
  %n = moe.normalize %w epsilon -1.0e-20 : tensor<?x8xf32>
  return
}
