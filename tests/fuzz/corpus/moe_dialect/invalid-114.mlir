module attributes {moe.entry = "route"} {
}
