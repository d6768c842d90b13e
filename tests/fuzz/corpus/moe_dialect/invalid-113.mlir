func.func @unknown_moe_attribute() attributes {moe.bogus} {
  return
}
