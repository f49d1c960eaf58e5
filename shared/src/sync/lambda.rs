//! The Lambda edge: turns an invocation into a step run and its error into a `Diagnostic`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use tokio::time::Instant;
use tracing::Instrument;

use super::{Deps, StepInput, StepOutput, run_step};
use crate::clock::Clock;
use crate::config::Integration;
use crate::qualys::QualysApi;
use crate::store::Store;

/// Handles one invocation of `integration`'s function.
pub async fn handle<Q: QualysApi, S: Store, C: Clock>(
    integration: Integration,
    deps: Deps<'_, Q, S, C>,
    event: LambdaEvent<StepInput>,
) -> Result<StepOutput, Diagnostic> {
    let deadline = deadline_from_context(&event.context);
    let input = event.payload;
    let span = tracing::info_span!(
        "step",
        %integration,
        run_id = %input.run_id,
        request_id = %event.context.request_id
    );
    run_step(integration, deps, &input, deadline)
        .instrument(span)
        .await
        .map_err(Diagnostic::from)
}

/// The invocation's deadline as a monotonic instant. Lambda sends epoch milliseconds; a
/// value before 2001 cannot be one, and is read as the time left instead (`cargo lambda
/// watch` sends its timeout that way); none at all means 15 minutes.
pub fn deadline_from_context(context: &Context) -> Instant {
    Instant::now() + time_left(context.deadline, SystemTime::now())
}

fn time_left(deadline_ms: u64, now: SystemTime) -> Duration {
    const EPOCH_2001_MS: u64 = 978_307_200_000;
    if deadline_ms == 0 {
        return Duration::from_secs(900);
    }
    if deadline_ms < EPOCH_2001_MS {
        return Duration::from_millis(deadline_ms);
    }
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let left_ms = u128::from(deadline_ms).saturating_sub(now_ms);
    Duration::from_millis(u64::try_from(left_ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_as_epoch_ms_or_as_time_left() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        assert_eq!(time_left(1_800_000_060_000, now), Duration::from_secs(60));
        assert_eq!(
            time_left(1_799_999_999_000, now),
            Duration::ZERO,
            "already past"
        );
        assert_eq!(
            time_left(600_000, now),
            Duration::from_secs(600),
            "cargo lambda watch"
        );
        assert_eq!(time_left(0, now), Duration::from_secs(900));
    }
}
