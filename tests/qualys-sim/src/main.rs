//! `qualys-sim`: serves a simulated Qualys account on 127.0.0.1.

fn main() {}
