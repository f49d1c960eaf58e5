//! Running the real state machine file on a Step Functions endpoint (moto locally): filling
//! its `${...}` placeholders, creating or updating the machine, starting an execution named
//! after the run id, and waiting for it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_sfn::types::ExecutionStatus;

/// The placeholders of an ASL document, in order of first appearance.
pub fn placeholders(asl: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = asl;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = after[..end].to_owned();
        if !found.contains(&name) {
            found.push(name);
        }
        rest = &after[end + 1..];
    }
    found
}

/// Fills every placeholder; a placeholder without a value is an error, so the file and the
/// substitutions cannot drift apart unnoticed.
pub fn substitute(asl: &str, values: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let missing: Vec<String> = placeholders(asl)
        .into_iter()
        .filter(|p| !values.contains_key(p))
        .collect();
    if !missing.is_empty() {
        bail!("the state machine needs values for {}", missing.join(", "));
    }
    let mut filled = asl.to_owned();
    for (name, value) in values {
        filled = filled.replace(&format!("${{{name}}}"), value);
    }
    Ok(filled)
}

/// Tells moto to execute state machines (it only stores them otherwise). Must happen before
/// the machine is created.
pub async fn enable_moto_execution(moto_url: &str) -> anyhow::Result<()> {
    let url = format!("{}/moto-api/config", moto_url.trim_end_matches('/'));
    let body = serde_json::json!({
        "stepfunctions": { "execute_state_machine": true },
        "lambda": { "use_docker": false }
    });
    let answer = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("moto is not reachable at {url}"))?;
    if !answer.status().is_success() {
        bail!("moto refused its config at {url}: HTTP {}", answer.status());
    }
    Ok(())
}

/// Creates the machine, or updates its definition when one of that name exists; returns its ARN.
pub async fn create_or_update(
    sfn: &aws_sdk_sfn::Client,
    name: &str,
    definition: &str,
    role_arn: &str,
) -> anyhow::Result<String> {
    let existing = sfn
        .list_state_machines()
        .send()
        .await
        .context("listing state machines")?;
    if let Some(machine) = existing.state_machines().iter().find(|m| m.name() == name) {
        sfn.update_state_machine()
            .state_machine_arn(machine.state_machine_arn())
            .definition(definition)
            .send()
            .await
            .context("updating the state machine")?;
        return Ok(machine.state_machine_arn().to_owned());
    }
    let created = sfn
        .create_state_machine()
        .name(name)
        .definition(definition)
        .role_arn(role_arn)
        .send()
        .await
        .context("creating the state machine")?;
    Ok(created.state_machine_arn().to_owned())
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionResult {
    /// `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED`.
    pub status: String,
    /// The execution's output, when it succeeded.
    pub output: Option<String>,
    /// The error name, when it failed.
    pub error: Option<String>,
    /// The error cause, when it failed.
    pub cause: Option<String>,
}

/// Starts an execution named `run_id` with `input` and polls until it ends or `timeout` passes.
pub async fn execute(
    sfn: &aws_sdk_sfn::Client,
    machine_arn: &str,
    run_id: &str,
    input: &str,
    timeout: Duration,
) -> anyhow::Result<ExecutionResult> {
    let started = sfn
        .start_execution()
        .state_machine_arn(machine_arn)
        .name(run_id)
        .input(input)
        .send()
        .await
        .context("starting the execution")?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let described = sfn
            .describe_execution()
            .execution_arn(started.execution_arn())
            .send()
            .await
            .context("describing the execution")?;
        if described.status() != &ExecutionStatus::Running {
            return Ok(ExecutionResult {
                status: described.status().as_str().to_owned(),
                output: described.output().map(str::to_owned),
                error: described.error().map(str::to_owned),
                cause: described.cause().map(str::to_owned),
            });
        }
        if tokio::time::Instant::now() > deadline {
            bail!("execution {run_id} still running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_once_each_and_all_must_be_filled() {
        let asl = r#"{"A":"${One}","B":"${Two}","C":"${One}"}"#;
        assert_eq!(placeholders(asl), vec!["One".to_owned(), "Two".to_owned()]);

        let mut values = BTreeMap::new();
        values.insert("One".to_owned(), "1".to_owned());
        let missing = substitute(asl, &values).expect_err("Two is missing");
        assert!(missing.to_string().contains("Two"));

        values.insert("Two".to_owned(), "2".to_owned());
        assert_eq!(
            substitute(asl, &values).expect("all filled"),
            r#"{"A":"1","B":"2","C":"1"}"#
        );
    }
}
