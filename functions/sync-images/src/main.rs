//! Lambda entry point (filled in with the sync steps).

fn main() {}
