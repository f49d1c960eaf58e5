//! The simulated Qualys account: containers, images, their vulnerabilities and the KnowledgeBase.
//!
//! Owns the records, the JSON shapes the Container Security API answers with (built lazily,
//! one record at a time), the truth view for tests and the mutations. Records come either from
//! the generator (key fields only; cosmetic fields are re-derived from a seed when rendered) or
//! from fixture files (kept as JSON and replayed with the mutable fields patched in).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kb::KbEntry;
use crate::rng::SplitMix;

/// The account.
#[derive(Debug, Default)]
pub(crate) struct Account {
    pub seed: u64,
    pub customer_uuid: String,
    pub containers: Vec<Container>,
    pub by_sha: HashMap<String, usize>,
    pub images: Vec<Image>,
    pub image_by_sha: HashMap<String, usize>,
    pub kb: BTreeMap<u32, KbEntry>,
}

/// One container.
#[derive(Clone, Debug)]
pub(crate) struct Container {
    pub sha: String,
    pub uuid: String,
    pub state: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub state_changed_ms: i64,
    /// Image the container runs (also for digest-only records).
    pub image: Option<usize>,
    /// The record names its image by `imageDigest` only (`imageSha`/`imageId` null).
    pub digest_only: bool,
    /// Own vulnerabilities; `None` means exactly those of the image.
    pub vulns: Option<Vec<Vuln>>,
    /// Severity counts as recorded in a fixture, until a vulnerability changes.
    pub recorded_counts: Option<Value>,
    pub body: ContainerBody,
}

/// Where a container's other fields come from.
#[derive(Clone, Debug)]
pub(crate) enum ContainerBody {
    /// Derived from the account seed and this ordinal.
    Generated { ordinal: u64 },
    /// Recorded list shape and, when recorded, the detail shape.
    Fixture {
        list: Box<Value>,
        detail: Option<Box<Value>>,
    },
}

/// One image.
#[derive(Clone, Debug)]
pub(crate) struct Image {
    pub sha: String,
    pub uuid: String,
    pub digest: String,
    /// False: the image has no scan data (404 CMS-2002).
    pub scanned: bool,
    pub vulns: Vec<Vuln>,
    pub body: ImageBody,
}

/// Where an image's other fields come from.
#[derive(Clone, Debug)]
pub(crate) enum ImageBody {
    /// Derived from the account seed.
    Generated {
        ordinal: u64,
        app: String,
        team: String,
        os: &'static str,
        created_ms: i64,
        scanned_ms: i64,
        layers: Vec<String>,
    },
    /// Recorded image detail without its `vulnerabilities`.
    Fixture(Box<Value>),
}

/// One vulnerability object (one QID, one or more packages).
#[derive(Clone, Debug)]
pub(crate) enum Vuln {
    /// Recorded JSON object.
    Fixture(Box<Value>),
    /// Built from the KnowledgeBase entry of its QID.
    Generated(GenVuln),
}

/// A generated vulnerability object.
#[derive(Clone, Debug)]
pub(crate) struct GenVuln {
    pub qid: u32,
    pub packages: Vec<Package>,
    pub potential: bool,
    pub first_found_ms: i64,
    pub last_found_ms: i64,
    /// Index of the image layer that brought it.
    pub layer: usize,
}

/// One package (a `software[]` entry).
#[derive(Clone, Debug)]
pub(crate) struct Package {
    pub name: String,
    pub version: String,
    pub fix_version: Option<String>,
    pub path: Option<String>,
}

impl Vuln {
    pub(crate) fn qid(&self) -> u32 {
        match self {
            Vuln::Fixture(value) => value["qid"].as_u64().unwrap_or(0) as u32,
            Vuln::Generated(g) => g.qid,
        }
    }

    fn severity(&self, kb: &BTreeMap<u32, KbEntry>) -> Option<u8> {
        match self {
            Vuln::Fixture(value) => value["severity"].as_u64().map(|s| s as u8),
            Vuln::Generated(g) => kb.get(&g.qid).map(|entry| entry.severity),
        }
    }

    /// `(package, version, path)` per software entry; one all-`None` row when there is none.
    fn packages(&self) -> Vec<(Option<String>, Option<String>, Option<String>)> {
        let rows: Vec<_> = match self {
            Vuln::Fixture(value) => value["software"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|s| {
                            let text = |key: &str| s[key].as_str().map(str::to_string);
                            (text("name"), text("version"), text("packagePath"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Vuln::Generated(g) => g
                .packages
                .iter()
                .map(|p| {
                    (
                        Some(p.name.clone()),
                        Some(p.version.clone()),
                        p.path.clone(),
                    )
                })
                .collect(),
        };
        if rows.is_empty() {
            vec![(None, None, None)]
        } else {
            rows
        }
    }
}

/// Which shape of container object to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `GET /containers` items: `vulnerabilities` is a counts object.
    List,
    /// `GET /containers/{sha}`: detail fields, counts.
    Detail,
    /// `GET /containers/list` items: detail fields, `vulnerabilities` trimmed to qid/result/software.
    Bulk,
}

/// The truth served by `/sim/truth`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Truth {
    /// Every container.
    pub containers: Vec<TruthContainer>,
    /// One row per container × vulnerability object × software entry.
    pub findings: Vec<TruthFinding>,
    /// Every image.
    pub images: Vec<TruthImage>,
    /// Every KnowledgeBase entry.
    pub kb: Vec<TruthKb>,
}

/// A container as the truth sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TruthContainer {
    /// Container sha.
    pub sha: String,
    /// Qualys UUID.
    pub uuid: String,
    /// RUNNING / STOPPED / DELETED.
    pub state: String,
    /// `updated`, epoch ms.
    pub updated_ms: i64,
    /// `imageSha` as served (null for digest-only records).
    pub image_sha: Option<String>,
    /// `imageDigest` as served.
    pub image_digest: Option<String>,
}

/// A finding as the truth sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TruthFinding {
    /// Container sha.
    pub container_sha: String,
    /// QID.
    pub qid: u32,
    /// Package name.
    pub package: Option<String>,
    /// Installed version.
    pub version: Option<String>,
    /// Package path (library files only).
    pub path: Option<String>,
}

/// An image as the truth sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TruthImage {
    /// Image sha.
    pub sha: String,
}

/// A KnowledgeBase entry as the truth sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TruthKb {
    /// QID.
    pub qid: u32,
    /// Title.
    pub title: String,
}

/// A change to the account, as posted to `/sim/mutate`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Mutation {
    /// Bump `updated` to now, or to `updated_ms`.
    Touch {
        /// Container sha.
        sha: String,
        /// New `updated`; default now.
        #[serde(default)]
        updated_ms: Option<i64>,
    },
    /// Add a vulnerability object for a QID of the KnowledgeBase; bumps `updated`.
    AddVuln {
        /// Container sha.
        sha: String,
        /// QID (must exist in the KnowledgeBase).
        qid: u32,
    },
    /// Remove every vulnerability object of a QID; bumps `updated`.
    FixVuln {
        /// Container sha.
        sha: String,
        /// QID.
        qid: u32,
    },
    /// Change the state; bumps `updated` and `stateChanged`.
    SetState {
        /// Container sha.
        sha: String,
        /// New state, e.g. `STOPPED`.
        state: String,
    },
    /// Mark an image as (not) scanned; an unscanned image answers 404 CMS-2002.
    SetImageScanned {
        /// Image sha.
        sha: String,
        /// Whether scan data exists.
        scanned: bool,
    },
}

/// Why a mutation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutationError {
    /// No container or image with that sha.
    #[error("no container or image with sha {0}; read /sim/truth for valid shas")]
    UnknownSha(String),
    /// The QID is not in the KnowledgeBase.
    #[error("QID {0} is not in the simulated KnowledgeBase; pick one from /sim/truth kb")]
    UnknownQid(u32),
    /// The container does not have that QID.
    #[error("container {sha} has no vulnerability with QID {qid}")]
    NotVulnerable {
        /// Container sha.
        sha: String,
        /// QID.
        qid: u32,
    },
}

/// `2024-04-01T23:59:41.207Z` for epoch ms.
pub(crate) fn iso_millis(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Severity counts object; all null when `counts` is `None`.
fn counts_json(counts: Option<[u32; 5]>) -> Value {
    match counts {
        Some(c) => json!({
            "severity5Count": c[4], "severity3Count": c[2], "severity4Count": c[3],
            "severity1Count": c[0], "severity2Count": c[1],
        }),
        None => json!({
            "severity5Count": null, "severity3Count": null, "severity4Count": null,
            "severity1Count": null, "severity2Count": null,
        }),
    }
}

const APP_NAMES: &[&str] = &[
    "payments-api",
    "orders-worker",
    "catalog-svc",
    "auth-gateway",
    "metrics-sidecar",
    "inventory",
    "billing-batch",
    "search-indexer",
    "notifier",
    "checkout-web",
    "ledger",
    "profile-svc",
];
const TEAMS: &[&str] = &[
    "payments",
    "orders",
    "platform",
    "observability",
    "web",
    "data",
];

impl Account {
    /// The image record of a container, if any.
    pub(crate) fn image_of(&self, container: &Container) -> Option<&Image> {
        container.image.and_then(|i| self.images.get(i))
    }

    /// The vulnerability objects of a container.
    pub(crate) fn vulns_of<'a>(&'a self, container: &'a Container) -> &'a [Vuln] {
        match &container.vulns {
            Some(own) => own,
            None => self
                .image_of(container)
                .map(|image| image.vulns.as_slice())
                .unwrap_or(&[]),
        }
    }

    /// Distinct-QID counts per severity; `None` when nothing was ever scanned.
    fn counts(&self, container: &Container) -> Option<[u32; 5]> {
        let scanned =
            container.vulns.is_some() || self.image_of(container).is_some_and(|i| i.scanned);
        if !scanned {
            return None;
        }
        let mut seen = BTreeSet::new();
        let mut counts = [0u32; 5];
        for vuln in self.vulns_of(container) {
            if seen.insert(vuln.qid())
                && let Some(severity) = vuln.severity(&self.kb)
                && (1..=5).contains(&severity)
            {
                counts[usize::from(severity) - 1] += 1;
            }
        }
        Some(counts)
    }

    /// The JSON object of a container in the given shape.
    pub(crate) fn container_json(&self, index: usize, shape: Shape) -> Value {
        let container = &self.containers[index];
        let mut value = match &container.body {
            ContainerBody::Fixture { list, detail } => {
                let mut value = match (shape, detail) {
                    (Shape::List, _) | (_, None) => (**list).clone(),
                    (_, Some(detail)) => (**detail).clone(),
                };
                value["updated"] = json!(container.updated_ms.to_string());
                value["state"] = json!(container.state);
                value["stateChanged"] = json!(container.state_changed_ms.to_string());
                value
            }
            ContainerBody::Generated { ordinal } => self.generated_container(container, *ordinal),
        };
        if shape != Shape::List {
            for key in [
                "environment",
                "arguments",
                "command",
                "drift",
                "softwares",
                "lastComplianceScanned",
            ] {
                if value.get(key).is_none() {
                    value[key] = Value::Null;
                }
            }
        }
        value["vulnerabilities"] = match shape {
            Shape::Bulk => Value::Array(
                self.vulns_of(container)
                    .iter()
                    .map(|vuln| {
                        let full = self.vuln_json(vuln, false);
                        json!({"qid": full["qid"], "result": full["result"], "software": full["software"]})
                    })
                    .collect(),
            ),
            Shape::List | Shape::Detail => match &container.recorded_counts {
                Some(recorded) => recorded.clone(),
                None => counts_json(self.counts(container)),
            },
        };
        value
    }

    fn generated_container(&self, c: &Container, ordinal: u64) -> Value {
        let mut rng = SplitMix::derive(self.seed, 0xC0_0000 + ordinal);
        let image = self.image_of(c);
        let (app, team, os, scanned_ms) = match image.map(|i| &i.body) {
            Some(ImageBody::Generated {
                app,
                team,
                os,
                scanned_ms,
                ..
            }) => (app.clone(), team.clone(), Some(*os), Some(*scanned_ms)),
            _ => ("workload".to_string(), "default".to_string(), None, None),
        };
        let host_index = rng.below(((self.containers.len() / 20).max(1)) as u64);
        let mut host_rng = SplitMix::derive(self.seed, 0x40_0000 + host_index);
        let host_sensor = host_rng.uuid();
        let host_uuid = host_rng.uuid();
        let host_last = c.updated_ms - host_rng.range(0, 600_000);
        let kubernetes = !rng.percent(15);
        let pod_uid = rng.uuid();
        let pod_name = format!("{app}-{}-{}", rng.hex(9), rng.hex(5));
        let (label, cluster, name) = if kubernetes {
            (
                json!([
                    {"key": "io.kubernetes.container.name", "value": app},
                    {"key": "io.kubernetes.pod.name", "value": pod_name},
                    {"key": "io.kubernetes.pod.namespace", "value": team},
                    {"key": "io.kubernetes.pod.uid", "value": pod_uid},
                ]),
                json!({"type": "KUBERNETES", "k8s": {"project": null, "pod": {
                    "name": pod_name, "uuid": pod_uid, "namespace": team}}}),
                json!(format!("k8s_{app}_{pod_name}_{team}_{pod_uid}_0")),
            )
        } else {
            (
                Value::Null,
                Value::Null,
                json!(format!("{app}-{}", ordinal)),
            )
        };
        let shown_image = |value: Value| if c.digest_only { Value::Null } else { value };
        let source = if c.digest_only { "CLUSTER" } else { "GENERAL" };
        let last_scanned = scanned_ms.map(|ms| ms.min(c.updated_ms).to_string());
        json!({
            "portMapping": null,
            "imageId": shown_image(json!(image.map(|i| i.sha[..12].to_string()))),
            "created": c.created_ms.to_string(),
            "updated": c.updated_ms.to_string(),
            "label": label,
            "uuid": c.uuid,
            "sha": c.sha,
            "privileged": rng.percent(5),
            "path": format!("/usr/local/bin/{app}"),
            "imageSha": shown_image(json!(image.map(|i| i.sha.clone()))),
            "imageDigest": if c.digest_only { json!(image.map(|i| i.digest.clone())) } else { Value::Null },
            "macAddress": null,
            "customerUuid": self.customer_uuid,
            "ipv4": format!("10.244.{}.{}", rng.below(250), 2 + rng.below(250)),
            "ipv6": null,
            "name": name,
            "host": {
                "sensorUuid": host_sensor,
                "hostname": format!("k8s-worker-{:02}.lab.acmelabs.example", host_index + 1),
                "ipAddress": format!("192.0.2.{}", 1 + host_index % 254),
                "ipV6Address": null,
                "uuid": host_uuid,
                "lastUpdated": iso_millis(host_last),
            },
            "hostArchitecture": ["x86_64"],
            "state": c.state,
            "imageUuid": shown_image(json!(image.map(|i| i.uuid.clone()))),
            "containerId": c.sha[..12],
            "stateChanged": c.state_changed_ms.to_string(),
            "services": null,
            "users": [if rng.percent(30) { "root" } else { "app" }],
            "operatingSystem": os,
            "lastScanned": last_scanned,
            "source": source,
            "sources": [source],
            "riskScore": null,
            "riskScoreCalculatedDate": null,
            "formulaUsed": null,
            "maxQdsScore": null,
            "qdsSeverity": null,
            "scanTypes": ["DYNAMIC"],
            "criticality": null,
            "criticalityUpdated": null,
            "isVulnPropagated": null,
            "vulnPropagationDate": null,
            "sensorUuid": host_sensor,
            "isDrift": false,
            "isRoot": rng.percent(30),
            "lastVmScanDate": last_scanned,
            "cluster": cluster,
        })
    }

    /// The full vulnerability object; `with_layer` adds `layerSha` (image answers).
    pub(crate) fn vuln_json(&self, vuln: &Vuln, with_layer: bool) -> Value {
        match vuln {
            Vuln::Fixture(value) => {
                let mut value = (**value).clone();
                if !with_layer && let Some(map) = value.as_object_mut() {
                    map.remove("layerSha");
                }
                value
            }
            Vuln::Generated(g) => self.generated_vuln(g, with_layer, None),
        }
    }

    fn generated_vuln(&self, g: &GenVuln, with_layer: bool, layers: Option<&[String]>) -> Value {
        let fallback = KbEntry {
            qid: g.qid,
            severity: 3,
            ..KbEntry::default()
        };
        let kb = self.kb.get(&g.qid).unwrap_or(&fallback);
        let software: Vec<Value> = g
            .packages
            .iter()
            .map(|p| {
                let mut counts = [0u32; 5];
                if (1..=5).contains(&kb.severity) {
                    counts[usize::from(kb.severity) - 1] = 1;
                }
                json!({
                    "name": p.name,
                    "version": p.version,
                    "fixVersion": p.fix_version,
                    "packagePath": p.path,
                    "scanType": if p.path.is_some() { "SCA" } else { "DYNAMIC" },
                    "vulnerabilities": {
                        "severity5Count": counts[4], "severity4Count": counts[3],
                        "severity3Count": counts[2], "severity2Count": counts[1],
                        "severity1Count": counts[0],
                    },
                })
            })
            .collect();
        let result = match g.packages.first() {
            Some(p) if p.path.is_some() => format!(
                "#table cols=\"2\"\nFile_Path Version\n{} {}",
                p.path.as_deref().unwrap_or_default(),
                p.version
            ),
            Some(p) => format!(
                "#table cols=\"3\"\nPackage Installed_Version Required_Version\n{} {} {}",
                p.name,
                p.version,
                p.fix_version.as_deref().unwrap_or("-")
            ),
            None => "No vulnerable package details are available.".to_string(),
        };
        let library = g.packages.iter().any(|p| p.path.is_some());
        let scan_type = if library { "SCA" } else { "DYNAMIC" };
        let score = 20 + u64::from(kb.severity) * 15 + u64::from(g.qid % 7);
        let mut value = json!({
            "vulnerability": null,
            "result": result,
            "lastFound": g.last_found_ms.to_string(),
            "firstFound": g.first_found_ms.to_string(),
            "severity": kb.severity,
            "customerSeverity": kb.severity,
            "port": null,
            "typeDetected": if g.potential { "POTENTIAL" } else { "CONFIRMED" },
            "status": null,
            "risk": score.min(100),
            "category": kb.category,
            "discoveryType": ["AUTHENTICATED"],
            "authType": ["UNIX_AUTH"],
            "supportedBy": ["VM", "CA-Linux", "CS"],
            "product": [kb.product],
            "vendor": [kb.vendor],
            "cveids": kb.cves,
            "threatIntel": {
                "activeAttacks": if kb.severity == 5 { json!(true) } else { Value::Null },
                "denialOfService": null,
                "easyExploit": if kb.severity >= 4 { json!(true) } else { Value::Null },
                "exploitKit": null,
                "exploitKitNames": null,
                "highDataLoss": null,
                "highLateralMovement": null,
                "malware": null,
                "malwareNames": null,
                "noPatch": if kb.patchable { Value::Null } else { json!(true) },
                "publicExploit": if kb.severity >= 4 { json!(true) } else { Value::Null },
                "publicExploitNames": null,
                "zeroDay": null,
            },
            "software": software,
            "qid": g.qid,
            "title": kb.title,
            "published": kb.published_ms,
            "patchAvailable": kb.patchable,
            "qdsScore": score.min(100),
            "cvssInfo": {
                "baseScore": kb.cvss_base,
                "temporalScore": kb.cvss_temporal,
                "accessVector": kb.access_vector_name(),
            },
            "cvss3Info": {
                "baseScore": kb.cvss3_base,
                "temporalScore": kb.cvss3_temporal,
            },
            "scanType": [scan_type],
            "isExempted": false,
            "vendorData": null,
        });
        if with_layer {
            value["layerSha"] = json!(layers.and_then(|l| l.get(g.layer)).map(|sha| vec![sha]));
        }
        value
    }

    /// The image detail object.
    pub(crate) fn image_json(&self, index: usize) -> Value {
        let image = &self.images[index];
        match &image.body {
            ImageBody::Fixture(body) => {
                let mut value = (**body).clone();
                value["vulnerabilities"] = Value::Array(
                    image
                        .vulns
                        .iter()
                        .map(|v| self.vuln_json(v, true))
                        .collect(),
                );
                value
            }
            ImageBody::Generated {
                ordinal,
                app,
                team,
                os,
                created_ms,
                scanned_ms,
                layers,
            } => {
                let mut rng = SplitMix::derive(self.seed, 0x1A_0000 + ordinal);
                let version = format!("{}.{}.{}", 1 + rng.below(4), rng.below(20), rng.below(10));
                let mut repo = vec![json!({
                    "registry": "registry.acmelabs.example", "tag": version,
                    "repository": format!("{team}/{app}")})];
                if rng.percent(50) {
                    repo.push(
                        json!({"registry": "registry.acmelabs.example", "tag": "stable",
                        "repository": format!("{team}/{app}")}),
                    );
                }
                let layer_json: Vec<Value> = layers
                    .iter()
                    .enumerate()
                    .map(|(i, sha)| {
                        json!({
                            "size": (1_000_000 + rng.below(90_000_000)).to_string(),
                            "createdBy": if i == 0 { "ADD file:rootfs in / ".to_string() }
                                else { format!("/bin/sh -c install layer {i}") },
                            "created": (created_ms - 3_600_000 * (layers.len() - i) as i64).to_string(),
                            "comment": "",
                            "id": null,
                            "sha": sha,
                            "tags": null,
                        })
                    })
                    .collect();
                let users = self
                    .containers
                    .iter()
                    .filter(|c| c.image == Some(index))
                    .count();
                let distinct: BTreeSet<u32> = image.vulns.iter().map(Vuln::qid).collect();
                let vulns: Vec<Value> = image
                    .vulns
                    .iter()
                    .map(|v| match v {
                        Vuln::Generated(g) => self.generated_vuln(g, true, Some(layers)),
                        other => self.vuln_json(other, true),
                    })
                    .collect();
                json!({
                    "created": created_ms.to_string(),
                    "updated": scanned_ms.to_string(),
                    "lastUsedDate": scanned_ms.to_string(),
                    "author": format!("{team}-team@acmelabs.example"),
                    "repo": repo,
                    "repoDigests": [{"registry": "registry.acmelabs.example", "digest": image.digest,
                        "repository": format!("{team}/{app}")}],
                    "label": null,
                    "uuid": image.uuid,
                    "sha": image.sha,
                    "imageId": image.sha[..12],
                    "operatingSystem": os,
                    "customerUuid": self.customer_uuid,
                    "dockerVersion": null,
                    "architecture": "amd64",
                    "size": 20_000_000 + rng.below(400_000_000),
                    "layers": layer_json,
                    "layersCount": layers.len(),
                    "lastScanned": scanned_ms.to_string(),
                    "lastVmScanDate": scanned_ms.to_string(),
                    "scanTypes": ["DYNAMIC", "SCA"],
                    "source": ["GENERAL"],
                    "registryUuid": null,
                    "isDockerHubOfficial": false,
                    "associatedContainersCount": users,
                    "associatedHostsCount": users.min(3),
                    "childImagesCount": 0,
                    "totalVulCount": distinct.len().to_string(),
                    "softwares": null,
                    "vulnerabilities": vulns,
                })
            }
        }
    }

    /// The truth view.
    pub(crate) fn truth(&self) -> Truth {
        let mut findings = Vec::new();
        let containers = self
            .containers
            .iter()
            .map(|c| {
                for vuln in self.vulns_of(c) {
                    for (package, version, path) in vuln.packages() {
                        findings.push(TruthFinding {
                            container_sha: c.sha.clone(),
                            qid: vuln.qid(),
                            package,
                            version,
                            path,
                        });
                    }
                }
                let image = self.image_of(c);
                let (image_sha, image_digest) = match &c.body {
                    ContainerBody::Fixture { list, .. } => (
                        list["imageSha"].as_str().map(str::to_string),
                        list["imageDigest"].as_str().map(str::to_string),
                    ),
                    ContainerBody::Generated { .. } if c.digest_only => {
                        (None, image.map(|i| i.digest.clone()))
                    }
                    ContainerBody::Generated { .. } => (image.map(|i| i.sha.clone()), None),
                };
                TruthContainer {
                    sha: c.sha.clone(),
                    uuid: c.uuid.clone(),
                    state: c.state.clone(),
                    updated_ms: c.updated_ms,
                    image_sha,
                    image_digest,
                }
            })
            .collect();
        Truth {
            containers,
            findings,
            images: self
                .images
                .iter()
                .map(|i| TruthImage { sha: i.sha.clone() })
                .collect(),
            kb: self
                .kb
                .values()
                .map(|e| TruthKb {
                    qid: e.qid,
                    title: e.title.clone(),
                })
                .collect(),
        }
    }

    /// Applies a mutation at `now_ms`; returns the container's new `updated` when one changed.
    pub(crate) fn mutate(
        &mut self,
        mutation: &Mutation,
        now_ms: i64,
    ) -> Result<Option<i64>, MutationError> {
        if let Mutation::SetImageScanned { sha, scanned } = mutation {
            let index = *self
                .image_by_sha
                .get(sha)
                .ok_or_else(|| MutationError::UnknownSha(sha.clone()))?;
            self.images[index].scanned = *scanned;
            return Ok(None);
        }
        let sha = match mutation {
            Mutation::Touch { sha, .. }
            | Mutation::AddVuln { sha, .. }
            | Mutation::FixVuln { sha, .. }
            | Mutation::SetState { sha, .. }
            | Mutation::SetImageScanned { sha, .. } => sha,
        };
        let index = *self
            .by_sha
            .get(sha)
            .ok_or_else(|| MutationError::UnknownSha(sha.clone()))?;
        match mutation {
            Mutation::AddVuln { qid, .. } => {
                let entry = self.kb.get(qid).ok_or(MutationError::UnknownQid(*qid))?;
                let package = Package {
                    name: entry.product.clone(),
                    version: format!("{}.{}.{}", qid % 7, qid % 13, qid % 10),
                    fix_version: Some(format!("{}.{}.{}", qid % 7, qid % 13 + 1, 0)),
                    path: entry
                        .library
                        .then(|| format!("/app/lib/{}-{}.jar", entry.product, qid % 10)),
                };
                let vuln = Vuln::Generated(GenVuln {
                    qid: *qid,
                    packages: vec![package],
                    potential: false,
                    first_found_ms: now_ms,
                    last_found_ms: now_ms,
                    layer: 0,
                });
                self.own_vulns(index).push(vuln);
            }
            Mutation::FixVuln { qid, .. } => {
                let vulns = self.own_vulns(index);
                let before = vulns.len();
                vulns.retain(|v| v.qid() != *qid);
                if vulns.len() == before {
                    return Err(MutationError::NotVulnerable {
                        sha: sha.clone(),
                        qid: *qid,
                    });
                }
            }
            Mutation::SetState { state, .. } => {
                let container = &mut self.containers[index];
                container.state = state.clone();
                container.state_changed_ms = now_ms;
            }
            Mutation::Touch { .. } | Mutation::SetImageScanned { .. } => {}
        }
        let container = &mut self.containers[index];
        container.updated_ms = match mutation {
            Mutation::Touch {
                updated_ms: Some(at),
                ..
            } => *at,
            _ => now_ms.max(container.updated_ms + 1),
        };
        Ok(Some(container.updated_ms))
    }

    /// The container's own vulnerability list, copied from its image on first change.
    fn own_vulns(&mut self, index: usize) -> &mut Vec<Vuln> {
        if self.containers[index].vulns.is_none() {
            let inherited = self.vulns_of(&self.containers[index]).to_vec();
            self.containers[index].vulns = Some(inherited);
        }
        self.containers[index].recorded_counts = None;
        self.containers[index].vulns.get_or_insert_with(Vec::new)
    }

    /// Names for generated images.
    pub(crate) fn app_name(ordinal: u64) -> (String, String) {
        let base = APP_NAMES[(ordinal as usize) % APP_NAMES.len()];
        let round = ordinal as usize / APP_NAMES.len();
        let app = if round == 0 {
            base.to_string()
        } else {
            format!("{base}-{round}")
        };
        (app, TEAMS[(ordinal as usize) % TEAMS.len()].to_string())
    }
}
