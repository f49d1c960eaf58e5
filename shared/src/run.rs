//! Run records ("integration runs"): one per integration per chain run, with the window it
//! covered, its counts and the error a person can act on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Integration;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An EventBridge Scheduler schedule.
    Schedule,
    /// A person: a manual execution or a local invoke.
    Manual,
    /// The previous integration of the chain.
    Chained,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Started and not finished (possibly across several invocations).
    Running,
    /// Finished; every item was written.
    Succeeded,
    /// Stopped on an error; see `error`.
    Failed,
    /// Not run because the integration is inactive.
    Skipped,
}

/// Item counts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Counts {
    /// Items read from Qualys.
    pub fetched: u64,
    /// Items written for the first time.
    pub new: u64,
    /// Items whose content changed.
    pub updated: u64,
    /// Items already stored as they are.
    pub unchanged: u64,
    /// Items that could not be synced (see the run's error).
    pub failed: u64,
}

impl Counts {
    /// Adds another set of counts to this one.
    pub fn add(&mut self, other: Counts) {
        self.fetched += other.fetched;
        self.new += other.new;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.failed += other.failed;
    }
}

/// A time window `[since, until]` on Qualys's `updated` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive lower bound.
    pub since: DateTime<Utc>,
    /// Inclusive upper bound: the run's start minus a safety margin.
    pub until: DateTime<Utc>,
}

/// One integration's run within one chain run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The chain run's id (the Step Functions execution name).
    pub run_id: String,
    /// Which integration ran.
    pub integration: Integration,
    /// What started it.
    pub trigger: Trigger,
    /// Where it stands.
    pub state: RunState,
    /// When the first invocation started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub ended_at: Option<DateTime<Utc>>,
    /// The window of container updates it covered.
    pub window: Option<Window>,
    /// Item counts (containers, images or KB entries).
    pub counts: Counts,
    /// Finding counts (containers integration only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Counts>,
    /// How many Lambda invocations it took.
    pub invocations: u32,
    /// The stable error type (`RateLimited`, `AuthFailed`, ...), when it failed.
    pub error_type: Option<String>,
    /// What went wrong and what to do, when it failed or was skipped.
    pub error: Option<String>,
}

impl RunRecord {
    /// A fresh record in the `Running` state.
    pub fn start(
        run_id: &str,
        integration: Integration,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> Self {
        RunRecord {
            run_id: run_id.to_owned(),
            integration,
            trigger,
            state: RunState::Running,
            started_at: now,
            ended_at: None,
            window: None,
            counts: Counts::default(),
            findings: None,
            invocations: 0,
            error_type: None,
            error: None,
        }
    }
}
