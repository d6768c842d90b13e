func.func @gather_forced_ids_wrong_experts(%f: tensor<?x2xi32>, %s: tensor<?x8xf32>) {
  %ids = moe.forced_select %f experts 1000 : tensor<?x2xi32> -> tensor<?x2xi32>
  %w = moe.gather %s[%ids] : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return
}
