func.func @entry_not_a_string() attributes {moe.entry = 5} {
  return
}
