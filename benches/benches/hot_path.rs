//! Hot-path benches (placeholder until the stage benches land).

fn main() {}
