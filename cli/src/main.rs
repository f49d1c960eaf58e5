//! `qcvr`: the operator CLI. Set up tables and the secret, show and change integration
//! configs, run the chain (in-process or through the real state machine on a local Step
//! Functions), list run records, print schedule expressions and manage the business calendar.

use std::io::IsTerminal;

use clap::Parser;
use qcvr_cli::commands::{Cli, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QCVR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("qcvr: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
