//! `qcvr`: the operator CLI.

fn main() {}
