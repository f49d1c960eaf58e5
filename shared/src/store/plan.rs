//! The change detection both stores share, so the in-memory twin counts exactly as the
//! DynamoDB adapter does: content hashes, work keys, and the plan of an upsert (which records
//! are new, updated or unchanged, and which must be written).
//!
//! Nothing here performs I/O; each store reads what is stored, asks for a plan and writes it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Finding, FindingStatus};
use crate::run::Counts;

use super::{StoreError, WorkKind};

/// Hex sha256 of the record's JSON form: a fingerprint of its content. Serde writes struct
/// fields in declaration order, so equal records always hash alike.
pub(crate) fn content_hash<T: Serialize>(
    record: &T,
    table: &str,
    key: &str,
) -> Result<String, StoreError> {
    let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
        table: table.to_owned(),
        key: key.to_owned(),
        detail: format!("record cannot be serialised: {e}"),
    })?;
    Ok(format!("{:x}", Sha256::digest(json)))
}

/// The `kind` of a pending work item.
pub(crate) fn work_kind(kind: WorkKind) -> &'static str {
    match kind {
        WorkKind::Image => "image",
        WorkKind::Qid => "qid",
    }
}

/// Width of a QID in a work key: zero-padded so key order is numeric order.
const QID_WIDTH: usize = 10;

/// The stored sort key of a pending work item: the image sha as is, or the QID zero-padded.
pub(crate) fn work_key(kind: WorkKind, key: &str, table: &str) -> Result<String, StoreError> {
    let refuse = |detail: &str| StoreError::Corrupt {
        table: table.to_owned(),
        key: key.to_owned(),
        detail: detail.to_owned(),
    };
    match kind {
        WorkKind::Image if key.is_empty() => Err(refuse("an image key must be a non-empty sha")),
        WorkKind::Image => Ok(key.to_owned()),
        WorkKind::Qid => {
            let qid: crate::model::Qid = key
                .parse()
                .map_err(|_| refuse("a QID key must be a decimal number up to 4294967295"))?;
            Ok(format!("{qid:0QID_WIDTH$}"))
        }
    }
}

/// The caller's form of a stored work key (a QID without its padding).
pub(crate) fn work_key_back(
    kind: WorkKind,
    stored: &str,
    table: &str,
) -> Result<String, StoreError> {
    match kind {
        WorkKind::Image => Ok(stored.to_owned()),
        WorkKind::Qid => stored
            .parse::<crate::model::Qid>()
            .map(|q| q.to_string())
            .map_err(|_| StoreError::Corrupt {
                table: table.to_owned(),
                key: stored.to_owned(),
                detail: "a pending QID key is not a number".to_owned(),
            }),
    }
}

/// What an upsert must do: its counts and the records to write, one per key, in key order.
#[derive(Debug)]
pub(crate) struct Plan<T> {
    /// New, updated and unchanged as if the records were upserted one after another.
    pub counts: Counts,
    /// The final version of every record whose content differs from what is stored.
    pub writes: Vec<T>,
}

/// Builds a [`Plan`] from the stored hashes, one record at a time.
#[derive(Debug)]
pub(crate) struct Planner<T> {
    stored: BTreeMap<String, String>,
    current: BTreeMap<String, String>,
    writes: BTreeMap<String, T>,
    counts: Counts,
}

impl<T> Planner<T> {
    /// A planner over the stored content hashes by key.
    pub(crate) fn new(stored: BTreeMap<String, String>) -> Self {
        Planner {
            current: stored.clone(),
            stored,
            writes: BTreeMap::new(),
            counts: Counts::default(),
        }
    }

    /// Offers one reported record: counted against the latest version of its key (stored, or
    /// offered earlier in the same call), written unless it ends up as stored.
    pub(crate) fn offer(&mut self, key: String, hash: String, record: T) {
        self.counts.fetched += 1;
        match self.current.get(&key) {
            None => self.counts.new += 1,
            Some(latest) if *latest == hash => self.counts.unchanged += 1,
            Some(_) => self.counts.updated += 1,
        }
        if self.stored.get(&key) == Some(&hash) {
            self.writes.remove(&key);
        } else {
            self.writes.insert(key.clone(), record);
        }
        self.current.insert(key, hash);
    }

    /// Writes a record that was not reported (a finding marked fixed); counted as updated.
    fn force(&mut self, key: String, record: T) {
        self.counts.updated += 1;
        self.writes.insert(key, record);
    }

    /// The finished plan.
    pub(crate) fn finish(self) -> Plan<T> {
        Plan {
            counts: self.counts,
            writes: self.writes.into_values().collect(),
        }
    }
}

/// A finding as stored, with the fingerprint of what was written.
#[derive(Debug, Clone)]
pub(crate) struct StoredFinding {
    /// The stored finding (long text may be trimmed).
    pub finding: Finding,
    /// The content hash written with it.
    pub hash: String,
}

/// Plans a container's findings: the reported ones are stored open under `container_sha`;
/// stored open findings not reported are marked fixed at `now` (counted as updated); stored
/// fixed findings not reported stay as they are and are not counted.
pub(crate) fn plan_findings(
    container_sha: &str,
    stored: &BTreeMap<String, StoredFinding>,
    reported: &[Finding],
    now: DateTime<Utc>,
    table: &str,
) -> Result<Plan<Finding>, StoreError> {
    let mut planner = Planner::new(
        stored
            .iter()
            .map(|(key, s)| (key.clone(), s.hash.clone()))
            .collect(),
    );
    let mut seen = BTreeSet::new();
    for finding in reported {
        let open = Finding {
            container_sha: container_sha.to_owned(),
            status: FindingStatus::Open,
            fixed_at: None,
            ..finding.clone()
        };
        let key = open.key();
        let hash = content_hash(&open, table, &key)?;
        seen.insert(key.clone());
        planner.offer(key, hash, open);
    }
    for (key, stored) in stored {
        if seen.contains(key) || stored.finding.status == FindingStatus::Fixed {
            continue;
        }
        let fixed = Finding {
            status: FindingStatus::Fixed,
            fixed_at: Some(now),
            ..stored.finding.clone()
        };
        planner.force(key.clone(), fixed);
    }
    Ok(planner.finish())
}
