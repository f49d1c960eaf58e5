//! The operator CLI's library: the pieces `qcvr` commands are made of, public so the
//! integration tests drive the same code (the local Lambda endpoint above all).

pub mod commands;
pub mod local_lambda;
pub mod report;
pub mod stepfunctions;
