//! The domain records qcvr syncs: containers, their findings, images and KnowledgeBase
//! entries, in the shape the store keeps them.
//!
//! The Qualys client turns API payloads into these types; the store persists them; the sync
//! steps move them from one to the other. Nothing here performs I/O.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A Qualys vulnerability id (QID).
pub type Qid = u32;

/// A container as listed by `/csapi/v1.3/containers` (or the bulk `/containers/list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Container {
    /// 64-hex container id; the key of every per-container call.
    pub sha: String,
    /// First 12 hex characters of `sha`.
    pub container_id: Option<String>,
    /// Qualys UUID of the container.
    pub uuid: Option<String>,
    /// Container name.
    pub name: Option<String>,
    /// `RUNNING`, `STOPPED`, `DELETED`, or whatever Qualys reports.
    pub state: Option<String>,
    /// 64-hex id of the image, when Qualys knows it.
    pub image_sha: Option<String>,
    /// Image digest; the only image link on some cluster-sourced containers.
    pub image_digest: Option<String>,
    /// When the container was created.
    pub created: Option<DateTime<Utc>>,
    /// When Qualys last changed the record; the incremental window is on this field.
    pub updated: Option<DateTime<Utc>>,
    /// When the state last changed.
    pub state_changed: Option<DateTime<Utc>>,
    /// When the container was last scanned.
    pub last_scanned: Option<DateTime<Utc>>,
    /// Host name of the node running the container.
    pub host_name: Option<String>,
    /// IP address of that node.
    pub host_ip: Option<String>,
    /// Operating system of the container.
    pub operating_system: Option<String>,
    /// Kubernetes namespace, when the container runs in a cluster.
    pub namespace: Option<String>,
    /// Kubernetes pod name, when the container runs in a cluster.
    pub pod: Option<String>,
}

/// One vulnerability of a container as `/containers/{sha}/vuln` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Vulnerability {
    /// The QID.
    pub qid: Qid,
    /// Title.
    pub title: Option<String>,
    /// Severity 1..5.
    pub severity: Option<u8>,
    /// `CONFIRMED` or `POTENTIAL`.
    pub type_detected: Option<String>,
    /// First time Qualys saw it on this container.
    pub first_found: Option<DateTime<Utc>>,
    /// Last time Qualys saw it on this container.
    pub last_found: Option<DateTime<Utc>>,
    /// Whether a patch exists.
    pub patch_available: Option<bool>,
    /// CVE ids.
    pub cve_ids: Vec<String>,
    /// Qualys Detection Score.
    pub qds_score: Option<u32>,
    /// The scanner's evidence table.
    pub result: Option<String>,
    /// The vulnerable packages; empty when Qualys names none.
    pub software: Vec<Software>,
}

/// A vulnerable package inside a vulnerability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Software {
    /// Package name.
    pub name: Option<String>,
    /// Installed version.
    pub version: Option<String>,
    /// Version that fixes it.
    pub fix_version: Option<String>,
    /// Path of the package on disk (JARs and other SCA finds).
    pub package_path: Option<String>,
}

/// Whether a finding is present on the container's latest sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingStatus {
    /// Reported by the latest sync of its container.
    Open,
    /// Missing from the latest sync of its container.
    Fixed,
}

/// One finding: a container × QID × package/path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The container it was found on.
    pub container_sha: String,
    /// The QID.
    pub qid: Qid,
    /// Package name, if any.
    pub package: Option<String>,
    /// Installed version, if any.
    pub version: Option<String>,
    /// Fixing version, if any.
    pub fix_version: Option<String>,
    /// Path of the package, if any.
    pub path: Option<String>,
    /// Title of the vulnerability.
    pub title: Option<String>,
    /// Severity 1..5.
    pub severity: Option<u8>,
    /// `CONFIRMED` or `POTENTIAL`.
    pub type_detected: Option<String>,
    /// First time Qualys saw it.
    pub first_found: Option<DateTime<Utc>>,
    /// Last time Qualys saw it.
    pub last_found: Option<DateTime<Utc>>,
    /// Whether a patch exists.
    pub patch_available: Option<bool>,
    /// CVE ids.
    pub cve_ids: Vec<String>,
    /// The scanner's evidence.
    pub result: Option<String>,
    /// Open, or fixed since the given time.
    pub status: FindingStatus,
    /// When qcvr first saw it missing; `None` while open.
    pub fixed_at: Option<DateTime<Utc>>,
}

impl Finding {
    /// Splits one vulnerability into its findings: one per package (a QID found in two
    /// packages is two findings), or one without a package when Qualys names none.
    pub fn from_vulnerability(container_sha: &str, vuln: &Vulnerability) -> Vec<Finding> {
        let base = |software: Option<&Software>| Finding {
            container_sha: container_sha.to_owned(),
            qid: vuln.qid,
            package: software.and_then(|s| s.name.clone()),
            version: software.and_then(|s| s.version.clone()),
            fix_version: software.and_then(|s| s.fix_version.clone()),
            path: software.and_then(|s| s.package_path.clone()),
            title: vuln.title.clone(),
            severity: vuln.severity,
            type_detected: vuln.type_detected.clone(),
            first_found: vuln.first_found,
            last_found: vuln.last_found,
            patch_available: vuln.patch_available,
            cve_ids: vuln.cve_ids.clone(),
            result: vuln.result.clone(),
            status: FindingStatus::Open,
            fixed_at: None,
        };
        if vuln.software.is_empty() {
            vec![base(None)]
        } else {
            vuln.software.iter().map(|s| base(Some(s))).collect()
        }
    }

    /// The finding's key within its container: `QID#package#version#path`.
    pub fn key(&self) -> String {
        format!(
            "{}#{}#{}#{}",
            self.qid,
            self.package.as_deref().unwrap_or(""),
            self.version.as_deref().unwrap_or(""),
            self.path.as_deref().unwrap_or("")
        )
    }
}

/// Turns a container's vulnerabilities into its findings, merging duplicates that share a
/// key (Qualys may list the same QID and package twice).
pub fn findings_of(container_sha: &str, vulns: &[Vulnerability]) -> Vec<Finding> {
    let mut seen = BTreeSet::new();
    vulns
        .iter()
        .flat_map(|v| Finding::from_vulnerability(container_sha, v))
        .filter(|f| seen.insert(f.key()))
        .collect()
}

/// Where an image lives: one registry/repository/tag triple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageRepo {
    /// Registry host.
    pub registry: Option<String>,
    /// Repository path.
    pub repository: Option<String>,
    /// Tag.
    pub tag: Option<String>,
}

/// An image as `/csapi/v1.3/images/{sha}` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Image {
    /// 64-hex image id.
    pub sha: String,
    /// First 12 hex characters.
    pub image_id: Option<String>,
    /// Qualys UUID.
    pub uuid: Option<String>,
    /// Registries, repositories and tags.
    pub repos: Vec<ImageRepo>,
    /// Repository digests (`sha256` hex).
    pub digests: Vec<String>,
    /// Operating system.
    pub operating_system: Option<String>,
    /// CPU architecture.
    pub architecture: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Number of layers.
    pub layers_count: Option<u32>,
    /// When the image was created.
    pub created: Option<DateTime<Utc>>,
    /// When Qualys last changed the record.
    pub updated: Option<DateTime<Utc>>,
    /// When the image was last scanned.
    pub last_scanned: Option<DateTime<Utc>>,
    /// Containers using it, per Qualys.
    pub associated_containers_count: Option<u64>,
    /// Whether other images build on it.
    pub is_base_image: Option<bool>,
    /// QIDs Qualys reports on the image.
    pub qids: Vec<Qid>,
}

/// A CVE reference of a KB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CveRef {
    /// `CVE-YYYY-NNNN`.
    pub id: String,
    /// Link to the CVE record.
    pub url: Option<String>,
}

/// CVSS scores and vector of one CVSS version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cvss {
    /// Base score, as Qualys prints it.
    pub base: Option<String>,
    /// Temporal score.
    pub temporal: Option<String>,
    /// Vector string.
    pub vector: Option<String>,
    /// Access / attack vector code.
    pub access_vector: Option<String>,
    /// Access / attack complexity code.
    pub access_complexity: Option<String>,
}

/// A KnowledgeBase entry, from `KNOWLEDGE_BASE_VULN_LIST_OUTPUT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KbEntry {
    /// The QID.
    pub qid: Qid,
    /// `Vulnerability`, `Potential Vulnerability`, ...
    pub vuln_type: Option<String>,
    /// Severity 1..5.
    pub severity: Option<u8>,
    /// Title.
    pub title: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// CVEs with links.
    pub cves: Vec<CveRef>,
    /// Diagnosis (HTML as Qualys sends it).
    pub diagnosis: Option<String>,
    /// Consequence, i.e. the impact (HTML).
    pub consequence: Option<String>,
    /// Solution (HTML).
    pub solution: Option<String>,
    /// CVSS v2.
    pub cvss_v2: Option<Cvss>,
    /// CVSS v3.
    pub cvss_v3: Option<Cvss>,
    /// When Qualys published it.
    pub published: Option<DateTime<Utc>>,
    /// When Qualys last changed it (`LAST_SERVICE_MODIFICATION_DATETIME`).
    pub last_modified: Option<DateTime<Utc>>,
    /// Whether a patch exists.
    pub patchable: Option<bool>,
    /// Affected products, as `vendor product`.
    pub software: Vec<String>,
    /// Vendor advisory ids.
    pub vendor_references: Vec<String>,
    /// Threat intelligence labels.
    pub threat_intel: Vec<String>,
    /// Whether the vulnerability is PCI relevant.
    pub pci_flag: Option<bool>,
}
