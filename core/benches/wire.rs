//! Wire codec benchmark (being written).
fn main() {}
