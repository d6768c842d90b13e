func.func @bad_entry_kind() attributes {moe.entry = "reroute"} {
  return
}
