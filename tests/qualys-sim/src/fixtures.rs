//! Builds an account from the recorded fixture files (`shared/fixtures/qualys`).
//!
//! Containers come from `cs/containers-page-*.json` (detail shapes from
//! `cs/containers-list-bulk.json`), findings of the first two containers from the two
//! `cs/container-vuln-details-*.json` files (as the fixture README chains them), images from
//! `cs/image-*.json`, and the KnowledgeBase from every `kb/*.xml` that holds a `VULN_LIST`.
//! Containers without a findings file carry the vulnerabilities of their image.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::account::{Account, Container, ContainerBody, Image, ImageBody, Vuln};
use crate::kb;

/// Findings files and the position (in `updated` order) of the container they belong to.
const FINDINGS_FILES: &[(&str, usize)] = &[
    ("cs/container-vuln-details-vulns.json", 0),
    ("cs/container-vuln-details-array.json", 1),
];

/// Why the fixture directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A file could not be read.
    #[error(
        "cannot read fixture file {path}: {source}; check --fixtures points at shared/fixtures/qualys"
    )]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("fixture file {path} is not as expected: {reason}")]
    Shape {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn read(dir: &Path, name: &str) -> Result<String, FixtureError> {
    std::fs::read_to_string(dir.join(name)).map_err(|source| FixtureError::Read {
        path: dir.join(name).display().to_string(),
        source,
    })
}

fn json(dir: &Path, name: &str) -> Result<Value, FixtureError> {
    serde_json::from_str(&read(dir, name)?).map_err(|e| FixtureError::Shape {
        path: name.to_string(),
        reason: e.to_string(),
    })
}

fn shape(path: &str, reason: &str) -> FixtureError {
    FixtureError::Shape {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

fn ms(value: &Value) -> i64 {
    value.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Loads the account recorded in `dir`.
pub(crate) fn account(dir: &Path) -> Result<Account, FixtureError> {
    let mut account = Account {
        seed: 0,
        ..Account::default()
    };

    let mut image_files: Vec<String> = std::fs::read_dir(dir.join("cs"))
        .map_err(|source| FixtureError::Read {
            path: dir.join("cs").display().to_string(),
            source,
        })?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("image-") && name.ends_with(".json"))
        .collect();
    image_files.sort();
    for name in image_files {
        let path = format!("cs/{name}");
        let mut body = json(dir, &path)?;
        let vulns = match body
            .as_object_mut()
            .and_then(|m| m.remove("vulnerabilities"))
        {
            Some(Value::Array(list)) => list
                .into_iter()
                .map(|v| Vuln::Fixture(Box::new(v)))
                .collect(),
            _ => Vec::new(),
        };
        let text = |key: &str| body[key].as_str().map(str::to_string);
        let sha = text("sha").ok_or_else(|| shape(&path, "no sha"))?;
        let image = Image {
            uuid: text("uuid").unwrap_or_default(),
            digest: body["repoDigests"][0]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            sha: sha.clone(),
            scanned: true,
            vulns,
            body: ImageBody::Fixture(Box::new(body)),
        };
        account.image_by_sha.insert(sha, account.images.len());
        account.images.push(image);
    }

    let bulk = json(dir, "cs/containers-list-bulk.json")?;
    let details: HashMap<String, Value> = bulk["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["sha"].as_str()?.to_string(), strip_vulns(c.clone()))))
        .collect();

    for page in ["cs/containers-page-1.json", "cs/containers-page-2.json"] {
        let body = json(dir, page)?;
        let data = body["data"]
            .as_array()
            .ok_or_else(|| shape(page, "no data array"))?;
        for list in data {
            let sha = list["sha"]
                .as_str()
                .ok_or_else(|| shape(page, "container without sha"))?
                .to_string();
            let image = list["imageSha"]
                .as_str()
                .and_then(|image_sha| account.image_by_sha.get(image_sha).copied());
            let container = Container {
                uuid: list["uuid"].as_str().unwrap_or_default().to_string(),
                state: list["state"].as_str().unwrap_or_default().to_string(),
                created_ms: ms(&list["created"]),
                updated_ms: ms(&list["updated"]),
                state_changed_ms: ms(&list["stateChanged"]),
                image,
                digest_only: list["imageSha"].is_null() && !list["imageDigest"].is_null(),
                vulns: if image.is_some() {
                    None
                } else {
                    Some(Vec::new())
                },
                recorded_counts: Some(list["vulnerabilities"].clone()),
                body: ContainerBody::Fixture {
                    detail: details.get(&sha).cloned().map(Box::new),
                    list: Box::new(strip_vulns(list.clone())),
                },
                sha: sha.clone(),
            };
            account.by_sha.insert(sha, account.containers.len());
            account.containers.push(container);
        }
    }

    for (file, position) in FINDINGS_FILES {
        let body = json(dir, file)?;
        let list = match &body["details"] {
            Value::Array(list) => list.clone(),
            details => details["vulns"]
                .as_array()
                .cloned()
                .ok_or_else(|| shape(file, "neither details[] nor details.vulns[]"))?,
        };
        let container = account
            .containers
            .get_mut(*position)
            .ok_or_else(|| shape(file, "its container is missing from the pages"))?;
        container.vulns = Some(
            list.into_iter()
                .map(|v| Vuln::Fixture(Box::new(v)))
                .collect(),
        );
    }

    let mut kb = BTreeMap::new();
    let mut kb_files: Vec<String> = std::fs::read_dir(dir.join("kb"))
        .map_err(|source| FixtureError::Read {
            path: dir.join("kb").display().to_string(),
            source,
        })?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".xml"))
        .collect();
    kb_files.sort();
    for name in kb_files {
        let path = format!("kb/{name}");
        let xml = read(dir, &path)?;
        for entry in kb::entries_from_recording(&xml).map_err(|e| shape(&path, &e))? {
            kb.entry(entry.qid).or_insert(entry);
        }
    }
    account.kb = kb;
    account.customer_uuid = account
        .containers
        .first()
        .and_then(|c| match &c.body {
            ContainerBody::Fixture { list, .. } => {
                list["customerUuid"].as_str().map(str::to_string)
            }
            ContainerBody::Generated { .. } => None,
        })
        .unwrap_or_default();
    Ok(account)
}

fn strip_vulns(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("vulnerabilities");
    }
    value
}
