//! Container Security JSON: lenient serde shapes of the `/csapi/v1.3` answers and their
//! mapping into the domain model.
//!
//! Unknown fields are ignored and every field may be null or missing; `data` may be one
//! object instead of a list; a record without `sha` is counted and skipped, never fatal.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::BodyError;
use super::time::lenient;
use crate::model::{Container, Image, ImageRepo, Qid, Software, Vulnerability};

/// `data` as a list, or (defensively) a single object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(Box<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(one) => vec![*one],
        }
    }
}

/// The `{data, count}` envelope of the container lists.
#[derive(Debug, Deserialize)]
struct ListEnvelope {
    #[serde(default)]
    data: Option<OneOrMany<CsContainer>>,
    #[serde(default, deserialize_with = "lenient_u64")]
    count: Option<u64>,
}

/// A container record as listed (paged or bulk).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CsContainer {
    sha: Option<String>,
    container_id: Option<String>,
    uuid: Option<String>,
    name: Option<String>,
    state: Option<String>,
    image_sha: Option<String>,
    image_digest: Option<String>,
    #[serde(deserialize_with = "lenient")]
    created: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    updated: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    state_changed: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    last_scanned: Option<DateTime<Utc>>,
    host: Option<CsHost>,
    operating_system: Option<String>,
    cluster: Option<CsCluster>,
    label: Option<Vec<CsLabel>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CsHost {
    hostname: Option<String>,
    ip_address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CsCluster {
    k8s: Option<CsK8s>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CsK8s {
    pod: Option<CsPod>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CsPod {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CsLabel {
    key: Option<String>,
    value: Option<String>,
}

impl CsContainer {
    /// `updated` in epoch ms, the keyset of the paged walk.
    pub fn updated_ms(&self) -> Option<i64> {
        self.updated.map(|t| t.timestamp_millis())
    }

    /// The container's `sha`, when it has a usable one.
    pub fn sha(&self) -> Option<&str> {
        self.sha.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// The domain record; `None` for a record without `sha`.
    pub fn into_model(self) -> Option<Container> {
        let sha = self.sha()?.to_owned();
        let label = |key: &str| {
            self.label
                .iter()
                .flatten()
                .find(|l| l.key.as_deref() == Some(key))
                .and_then(|l| l.value.clone())
        };
        let pod = self
            .cluster
            .as_ref()
            .and_then(|c| c.k8s.as_ref())
            .and_then(|k| k.pod.as_ref());
        let namespace = pod
            .and_then(|p| p.namespace.clone())
            .or_else(|| label("io.kubernetes.pod.namespace"));
        let pod_name = pod
            .and_then(|p| p.name.clone())
            .or_else(|| label("io.kubernetes.pod.name"));
        let container_id = self
            .container_id
            .clone()
            .or_else(|| sha.get(..12).map(str::to_owned));
        Some(Container {
            container_id,
            uuid: self.uuid,
            name: self.name,
            state: self.state,
            image_sha: self.image_sha.filter(|s| !s.trim().is_empty()),
            image_digest: self.image_digest.filter(|s| !s.trim().is_empty()),
            created: self.created,
            updated: self.updated,
            state_changed: self.state_changed,
            last_scanned: self.last_scanned,
            host_name: self.host.as_ref().and_then(|h| h.hostname.clone()),
            host_ip: self.host.as_ref().and_then(|h| h.ip_address.clone()),
            operating_system: self.operating_system,
            namespace,
            pod: pod_name,
            sha,
        })
    }
}

/// One page of a container list: the raw records (with or without `sha`) and the total.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The records, in the order Qualys sent them.
    pub records: Vec<CsContainer>,
    /// The total number of matches (`count`), when present.
    pub count: Option<u64>,
}

/// Parses a `/containers` or `/containers/list` body. An empty body (204) is an empty page.
pub(crate) fn parse_container_list(body: &[u8]) -> Result<ListPage, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ListPage::default());
    }
    let envelope: ListEnvelope =
        serde_json::from_slice(body).map_err(|e| BodyError::from_json(&e))?;
    Ok(ListPage {
        records: envelope.data.map(OneOrMany::into_vec).unwrap_or_default(),
        count: envelope.count,
    })
}

/// The `/vuln` envelope: `{details:{vulns:[…]}}` or `{details:[…]}`.
#[derive(Debug, Deserialize)]
struct VulnEnvelope {
    #[serde(default)]
    details: Option<VulnDetails>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VulnDetails {
    List(Vec<CsVuln>),
    Wrapped {
        #[serde(default)]
        vulns: Option<Vec<CsVuln>>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CsVuln {
    #[serde(deserialize_with = "lenient_u64")]
    qid: Option<u64>,
    title: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    severity: Option<u64>,
    type_detected: Option<String>,
    #[serde(deserialize_with = "lenient")]
    first_found: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    last_found: Option<DateTime<Utc>>,
    patch_available: Option<bool>,
    cveids: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient_u64")]
    qds_score: Option<u64>,
    result: Option<String>,
    software: Option<Vec<CsSoftware>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CsSoftware {
    name: Option<String>,
    version: Option<String>,
    fix_version: Option<String>,
    package_path: Option<String>,
}

impl CsVuln {
    fn into_model(self) -> Option<Vulnerability> {
        let Some(qid) = self
            .qid
            .and_then(|q| Qid::try_from(q).ok())
            .filter(|q| *q > 0)
        else {
            tracing::debug!("vulnerability without a usable qid skipped");
            return None;
        };
        Some(Vulnerability {
            qid,
            title: self.title,
            severity: self.severity.and_then(|s| u8::try_from(s).ok()),
            type_detected: self.type_detected,
            first_found: self.first_found,
            last_found: self.last_found,
            patch_available: self.patch_available,
            cve_ids: self.cveids.unwrap_or_default(),
            qds_score: self.qds_score.and_then(|s| u32::try_from(s).ok()),
            result: self.result,
            software: self
                .software
                .unwrap_or_default()
                .into_iter()
                .map(|s| Software {
                    name: s.name,
                    version: s.version,
                    fix_version: s.fix_version,
                    package_path: s.package_path,
                })
                .collect(),
        })
    }
}

/// Parses a `/containers/{sha}/vuln` body in either envelope; neither → no vulnerabilities.
pub(crate) fn parse_vulnerabilities(body: &[u8]) -> Result<Vec<Vulnerability>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let envelope: VulnEnvelope =
        serde_json::from_slice(body).map_err(|e| BodyError::from_json(&e))?;
    let vulns = match envelope.details {
        Some(VulnDetails::List(list)) => list,
        Some(VulnDetails::Wrapped { vulns }) => vulns.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(vulns.into_iter().filter_map(CsVuln::into_model).collect())
}

/// An image as `/images/{sha}` returns it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CsImage {
    sha: Option<String>,
    image_id: Option<String>,
    uuid: Option<String>,
    repo: Option<Vec<CsRepo>>,
    repo_digests: Option<Vec<CsRepoDigest>>,
    operating_system: Option<String>,
    architecture: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    size: Option<u64>,
    #[serde(deserialize_with = "lenient_u64")]
    layers_count: Option<u64>,
    layers: Option<Vec<Value>>,
    #[serde(deserialize_with = "lenient")]
    created: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    updated: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    last_scanned: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_u64")]
    associated_containers_count: Option<u64>,
    #[serde(deserialize_with = "lenient_u64")]
    child_images_count: Option<u64>,
    vulnerabilities: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CsRepo {
    registry: Option<String>,
    repository: Option<String>,
    tag: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CsRepoDigest {
    digest: Option<String>,
}

/// Parses an `/images/{sha}` body; `requested_sha` fills a missing `sha`.
pub(crate) fn parse_image(body: &[u8], requested_sha: &str) -> Result<Image, BodyError> {
    let image: CsImage = serde_json::from_slice(body).map_err(|e| BodyError::from_json(&e))?;
    let sha = image
        .sha
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| requested_sha.to_owned());
    // `vulnerabilities` is a full list on the detail object but a count object elsewhere.
    let mut qids: Vec<Qid> = match &image.vulnerabilities {
        Some(Value::Array(vulns)) => vulns
            .iter()
            .filter_map(|v| v.get("qid"))
            .filter_map(|q| {
                q.as_u64()
                    .or_else(|| q.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .filter_map(|q| Qid::try_from(q).ok())
            .filter(|q| *q > 0)
            .collect(),
        _ => Vec::new(),
    };
    qids.sort_unstable();
    qids.dedup();
    let layers_count = image
        .layers_count
        .or_else(|| image.layers.as_ref().map(|l| l.len() as u64))
        .and_then(|n| u32::try_from(n).ok());
    Ok(Image {
        image_id: image.image_id.or_else(|| sha.get(..12).map(str::to_owned)),
        sha,
        uuid: image.uuid,
        repos: image
            .repo
            .unwrap_or_default()
            .into_iter()
            .map(|r| ImageRepo {
                registry: r.registry,
                repository: r.repository,
                tag: r.tag,
            })
            .collect(),
        digests: image
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.digest)
            .filter(|d| !d.trim().is_empty())
            .collect(),
        operating_system: image.operating_system,
        architecture: image.architecture,
        size: image.size,
        layers_count,
        created: image.created,
        updated: image.updated,
        last_scanned: image.last_scanned,
        associated_containers_count: image.associated_containers_count,
        is_base_image: image.child_images_count.map(|n| n > 0),
        qids,
    })
}

/// The CS error trio `{errorCode, message, timestamp}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ErrorTrio {
    /// e.g. `400 BAD_REQUEST`, `CMS-2002`.
    pub error_code: Option<String>,
    /// What went wrong.
    pub message: Option<String>,
}

/// Reads an error trio from a body, if it is one.
pub(crate) fn parse_error_trio(body: &[u8]) -> Option<ErrorTrio> {
    serde_json::from_slice::<ErrorTrio>(body)
        .ok()
        .filter(|t| t.error_code.is_some() || t.message.is_some())
}

/// Serde adapter: a non-negative integer from a number or a numeric string; else `None`.
fn lenient_u64<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f.round() as u64)
        }),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_data_and_null_sha() {
        let body = br#"{"data":{"sha":null,"updated":"5"},"count":1}"#;
        let page = parse_container_list(body).expect("parses");
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].updated_ms(), Some(5));
        assert!(page.records[0].clone().into_model().is_none());
        assert_eq!(page.count, Some(1));
    }

    #[test]
    fn empty_and_null_bodies() {
        assert!(parse_container_list(b"").expect("204").records.is_empty());
        assert!(
            parse_container_list(br#"{"data":null}"#)
                .expect("null")
                .records
                .is_empty()
        );
        assert!(
            parse_container_list(br#"{"data":[]}"#)
                .expect("empty")
                .records
                .is_empty()
        );
        assert!(
            parse_vulnerabilities(br#"{"details":null}"#)
                .expect("null")
                .is_empty()
        );
        assert!(
            parse_vulnerabilities(br#"{"other":1}"#)
                .expect("none")
                .is_empty()
        );
        assert!(
            parse_vulnerabilities(br#"{"details":{}}"#)
                .expect("{}")
                .is_empty()
        );
    }

    #[test]
    fn truncated_json_is_told_apart_from_wrong_json() {
        assert!(matches!(
            parse_container_list(br#"{"data":[{"sha":"ab"#),
            Err(BodyError::Truncated(_))
        ));
        assert!(matches!(
            parse_container_list(br#"{"data":"text"}"#),
            Err(BodyError::Invalid(_))
        ));
    }

    #[test]
    fn counts_object_on_an_image_gives_no_qids() {
        let body = br#"{"sha":null,"vulnerabilities":{"severity5Count":1},"childImagesCount":2,
            "layers":[{},{}]}"#;
        let image = parse_image(body, "abcdef0123456789").expect("parses");
        assert_eq!(image.sha, "abcdef0123456789");
        assert_eq!(image.image_id.as_deref(), Some("abcdef012345"));
        assert!(image.qids.is_empty());
        assert_eq!(image.is_base_image, Some(true));
        assert_eq!(image.layers_count, Some(2));
    }
}
