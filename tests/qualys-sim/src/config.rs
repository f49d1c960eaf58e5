//! Settings of one simulator run: where the account comes from, credentials, token lifetime,
//! rate limits, response switches and the faults armed at start.
//!
//! This module only describes a run; it does not build the account or serve anything.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::faults::FaultRule;

/// Everything a simulator needs to start.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// TCP port on 127.0.0.1; 0 lets the OS pick one.
    pub port: u16,
    /// Number of containers of the generated account (ignored with `fixtures`).
    pub containers: usize,
    /// Seed of the generated account; the same seed and size give the same account.
    pub seed: u64,
    /// Serve the account recorded in this fixture directory instead of a generated one.
    pub fixtures: Option<PathBuf>,
    /// Required username; `None` accepts any.
    pub username: Option<String>,
    /// Required password; `None` accepts any.
    pub password: Option<String>,
    /// Lifetime of issued JWTs; the token's `exp` claim is `iat` plus this.
    pub token_lifetime_secs: u64,
    /// Rate and concurrency limits per endpoint family.
    pub limits: RateLimits,
    /// Envelope of `GET /containers/{sha}/vuln` answers.
    pub vuln_envelope: VulnEnvelope,
    /// Send `Link: null` on the last bulk page instead of leaving the header out.
    pub null_link: bool,
    /// Answer every KnowledgeBase call with HTTP 200 + `SIMPLE_RETURN` 2001 (account expired).
    pub kb_account_expired: bool,
    /// Time the generated account is anchored at (epoch ms); `None` means the start time.
    pub start_ms: Option<i64>,
    /// Faults armed from the start.
    pub faults: Vec<FaultRule>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            containers: 100,
            seed: 1,
            fixtures: None,
            username: None,
            password: None,
            token_lifetime_secs: 14_400,
            limits: RateLimits::default(),
            vuln_envelope: VulnEnvelope::Mixed,
            null_link: false,
            kb_account_expired: false,
            start_ms: None,
            faults: Vec::new(),
        }
    }
}

impl SimConfig {
    /// A generated account of `containers` containers from `seed`, everything else default.
    pub fn generated(containers: usize, seed: u64) -> Self {
        Self {
            containers,
            seed,
            ..Self::default()
        }
    }

    /// The account recorded in the fixture directory `dir`, everything else default.
    pub fn fixtures(dir: impl Into<PathBuf>) -> Self {
        Self {
            fixtures: Some(dir.into()),
            ..Self::default()
        }
    }
}

/// Which envelope `GET /csapi/v1.3/containers/{sha}/vuln` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VulnEnvelope {
    /// `{"details":{"vulns":[...]}}` for every container.
    Vulns,
    /// `{"details":[...]}` for every container.
    Array,
    /// Alternate by container: even account positions get `vulns`, odd ones `array`.
    Mixed,
}

impl FromStr for VulnEnvelope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vulns" => Ok(Self::Vulns),
            "array" => Ok(Self::Array),
            "mixed" => Ok(Self::Mixed),
            other => Err(format!(
                "unknown envelope {other:?}; use vulns, array or mixed"
            )),
        }
    }
}

/// A sliding window: at most `limit` calls in any `window_secs` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Calls allowed in the window.
    pub limit: u32,
    /// Window length in seconds.
    pub window_secs: u64,
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("rate limit {s:?} is not CALLS/SECONDS, e.g. 120/60");
        let (limit, window) = s.split_once('/').ok_or_else(bad)?;
        let limit = limit.trim().parse().map_err(|_| bad())?;
        let window_secs: u64 = window.trim().parse().map_err(|_| bad())?;
        if window_secs == 0 {
            return Err(bad());
        }
        Ok(Self { limit, window_secs })
    }
}

/// Limits per endpoint family, defaulting to the documented Qualys values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// `GET /csapi/v1.3/containers/list` (bulk): 120 per 60 s.
    pub containers_list: Window,
    /// Every other `/csapi/v1.3/containers/**` call: 5000 per 60 s.
    pub containers: Window,
    /// `/csapi/v1.3/images/**`: 5000 per 60 s.
    pub images: Window,
    /// KnowledgeBase: 300 per 3600 s.
    pub kb: Window,
    /// KnowledgeBase calls allowed to run at the same time: 2.
    pub kb_concurrency: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            containers_list: Window {
                limit: 120,
                window_secs: 60,
            },
            containers: Window {
                limit: 5000,
                window_secs: 60,
            },
            images: Window {
                limit: 5000,
                window_secs: 60,
            },
            kb: Window {
                limit: 300,
                window_secs: 3600,
            },
            kb_concurrency: 2,
        }
    }
}
