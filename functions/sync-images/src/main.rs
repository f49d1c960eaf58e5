//! Lambda entry point of the qcvr `sync-images` step. Everything it does lives in
//! `qcvr::sync`; this file builds the clients once and hands each invocation over.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use qcvr::bootstrap::Production;
use qcvr::config::Integration;
use qcvr::sync::{StepInput, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let production = Production::from_env().await?;
    run(service_fn(|event: LambdaEvent<StepInput>| {
        handle(Integration::Images, production.deps(), event)
    }))
    .await
}
