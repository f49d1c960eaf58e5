//! Integration configuration: one record per integration, seeded with the product's
//! defaults on first use and validated on every read and write.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::qualys::qql::Qql;

/// The three integrations, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Integration {
    /// Container Vulnerability sync.
    Containers,
    /// Image sync.
    Images,
    /// KnowledgeBase sync.
    Kb,
}

impl Integration {
    /// All integrations in chain order.
    pub const ALL: [Integration; 3] = [
        Integration::Containers,
        Integration::Images,
        Integration::Kb,
    ];

    /// The stable name used in tables, payloads and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Integration::Containers => "containers",
            Integration::Images => "images",
            Integration::Kb => "kb",
        }
    }

    /// The integration that follows this one in the default chain.
    pub fn default_next(self) -> Option<Integration> {
        match self {
            Integration::Containers => Some(Integration::Images),
            Integration::Images => Some(Integration::Kb),
            Integration::Kb => None,
        }
    }
}

impl fmt::Display for Integration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Integration {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Integration::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| ConfigError::UnknownIntegration(s.to_owned()))
    }
}

/// How the chain is started. Only the first integration's run type drives the schedules;
/// the others run when chained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunType {
    /// Every day at a time.
    Daily,
    /// Every week on a day at a time.
    Weekly,
    /// Every month on a day at a time.
    Monthly,
    /// Every N minutes or hours.
    Periodically,
    /// Once, at a date and time.
    Once,
    /// Only when started by hand.
    OnDemand,
    /// At the start of each business-calendar entry.
    CalendarStart,
    /// At the end of each business-calendar entry.
    CalendarEnd,
}

/// Bounds of the Qualys page size.
pub const PAGE_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;

/// The product's default container filter.
pub const DEFAULT_FILTER: &str = "state:'RUNNING'";

/// The product's default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// How far back an empty "import data since" reaches.
pub const DEFAULT_LOOKBACK_DAYS: i64 = 7;

/// How containers are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListingMode {
    /// The paged `/containers` endpoint, walked by keyset on `updated` so the 10,000-record
    /// cap and records changing mid-run lose nothing.
    #[default]
    Paged,
    /// The bulk cursor `/containers/list` (page size capped at 250).
    Bulk,
}

/// One integration's configuration record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationConfig {
    /// Which integration this configures.
    pub integration: Integration,
    /// An inactive integration is skipped, and says so in its run record.
    pub active: bool,
    /// How the chain is started (meaningful on the first integration).
    pub run_type: RunType,
    /// QQL filter (containers only).
    pub filter: String,
    /// API page size, 1..=1000.
    pub page_size: u32,
    /// Import data since; `None` means the last 7 days. Moves after each successful run.
    pub import_since: Option<DateTime<Utc>>,
    /// The integration this one triggers when it succeeds.
    pub next_integration: Option<Integration>,
    /// How containers are listed (containers only).
    #[serde(default)]
    pub listing_mode: ListingMode,
}

impl IntegrationConfig {
    /// The defaults a new deployment starts with.
    pub fn default_for(integration: Integration) -> Self {
        IntegrationConfig {
            integration,
            active: true,
            run_type: RunType::OnDemand,
            filter: DEFAULT_FILTER.to_owned(),
            page_size: DEFAULT_PAGE_SIZE,
            import_since: None,
            next_integration: integration.default_next(),
            listing_mode: ListingMode::Paged,
        }
    }

    /// Checks every field; `now` is used to refuse an "import since" in the future.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), ConfigError> {
        if !PAGE_SIZE_RANGE.contains(&self.page_size) {
            return Err(ConfigError::PageSize(self.page_size));
        }
        self.qql()?;
        if let Some(since) = self.import_since
            && since > now
        {
            return Err(ConfigError::SinceInFuture(since));
        }
        if self.next_integration.is_some_and(|n| n <= self.integration) {
            return Err(ConfigError::Chain {
                from: self.integration,
                to: self.next_integration.unwrap_or(self.integration),
            });
        }
        Ok(())
    }

    /// The filter as validated QQL.
    pub fn qql(&self) -> Result<Qql, ConfigError> {
        Qql::parse(&self.filter).map_err(ConfigError::Filter)
    }

    /// Start of the next window: the watermark, or `now` minus the default look-back.
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.import_since
            .unwrap_or(now - Duration::days(DEFAULT_LOOKBACK_DAYS))
    }
}

/// A configuration that cannot be used. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Page size out of range.
    #[error("page size {0} is out of range: set page_size between 1 and 1000")]
    PageSize(u32),
    /// The filter does not parse.
    #[error("the filter is not valid QQL: {0}; fix the filter in the integration's config")]
    Filter(crate::qualys::qql::QqlError),
    /// The watermark is in the future.
    #[error("import_since {0} is in the future: clear it or set a past date")]
    SinceInFuture(DateTime<Utc>),
    /// The chain goes backwards or loops.
    #[error("next_integration of {from} is {to}: the chain must run containers → images → kb")]
    Chain {
        /// The integration whose config is wrong.
        from: Integration,
        /// The integration it names.
        to: Integration,
    },
    /// A name that is not an integration.
    #[error("unknown integration {0:?}: use containers, images or kb")]
    UnknownIntegration(String),
}
