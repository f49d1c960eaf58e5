//! Helpers shared by the integration tests: a DynamoDB store on the local moto server (one
//! fresh table prefix per test), the Qualys simulator in-process, a client pointed at it, and
//! the simulator's truth narrowed to what a sync must find.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use qcvr::qualys::auth::StaticCredentials;
use qcvr::qualys::client::{ClientSettings, QualysClient};
use qcvr::qualys::limits::RetryPolicy;
use qcvr::store::dynamo::{DynamoStore, create_tables};
use qualys_sim::{SimConfig, SimHandle, Simulator};

/// The moto server `make test` starts; a test run without it fails with this advice.
pub fn moto_url() -> String {
    std::env::var("QCVR_TEST_DYNAMODB_URL").unwrap_or_else(|_| {
        panic!(
            "QCVR_TEST_DYNAMODB_URL is not set: run `make test`, or start moto with \
             `scripts/moto.sh start 5105` and export QCVR_TEST_DYNAMODB_URL=http://127.0.0.1:5105"
        )
    })
}

/// A table prefix no other test (or earlier run against the same moto) uses.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "it-{test}-{}-{nanos}-{}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An AWS SDK config for the local moto server.
pub async fn local_aws() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "qcvr-tests",
        ))
        .load()
        .await
}

/// A DynamoDB store on moto with freshly created tables.
pub async fn fresh_store(test: &str) -> DynamoStore {
    let client = aws_sdk_dynamodb::Client::new(&local_aws().await);
    let prefix = unique_prefix(test);
    create_tables(&client, &prefix)
        .await
        .expect("tables are created on moto");
    DynamoStore::new(client, prefix)
}

/// A generated simulator account whose images all have scan data, so every image of a
/// synced container is expected in the store.
pub async fn simulator(containers: usize, seed: u64) -> SimHandle {
    let sim = Simulator::start(SimConfig::generated(containers, seed))
        .await
        .expect("simulator starts");
    for image in sim.truth().images {
        sim.mutate(&qualys_sim::Mutation::SetImageScanned {
            sha: image.sha,
            scanned: true,
        })
        .expect("image exists");
    }
    sim
}

/// A client for the simulator, with waits shrunk so retries take milliseconds.
pub fn client_for(sim: &SimHandle) -> QualysClient<StaticCredentials> {
    let settings = ClientSettings {
        api_url: Some(sim.base_url()),
        gateway_url: Some(sim.base_url()),
        retry: RetryPolicy {
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(50),
            concurrency_wait: Duration::from_millis(20),
            jitter: Duration::ZERO,
            advertised_second: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        ..ClientSettings::default()
    };
    let hosts = qcvr::qualys::hosts::QualysHosts::new(&sim.base_url(), Some(&sim.base_url()))
        .expect("simulator URL is a valid host");
    QualysClient::new(
        settings,
        hosts,
        StaticCredentials::new("qcvr-test", "not-a-real-password"),
    )
    .expect("client builds")
}

/// What a sync of the default filter (`state:'RUNNING'`) over a window covering the whole
/// account must store, from the simulator's truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Container shas.
    pub containers: BTreeSet<String>,
    /// (container sha, QID, package, version, path).
    pub findings: BTreeSet<FindingKey>,
    /// Image shas.
    pub images: BTreeSet<String>,
    /// QIDs with a KB entry.
    pub qids: BTreeSet<u32>,
}

/// A finding's identity.
pub type FindingKey = (String, u32, Option<String>, Option<String>, Option<String>);

impl Expected {
    /// Nothing at all.
    pub fn empty() -> Expected {
        Expected {
            containers: BTreeSet::new(),
            findings: BTreeSet::new(),
            images: BTreeSet::new(),
            qids: BTreeSet::new(),
        }
    }

    /// The running containers of `sim` and everything that hangs off them.
    pub fn running(sim: &SimHandle) -> Expected {
        Expected::running_in(&sim.truth(), i64::MIN, i64::MAX)
    }

    /// As [`Expected::running`], for the containers updated within `[since_ms, until_ms]`.
    pub fn running_in(truth: &qualys_sim::Truth, since_ms: i64, until_ms: i64) -> Expected {
        let in_window: Vec<_> = truth
            .containers
            .iter()
            .filter(|c| c.state == "RUNNING" && (since_ms..=until_ms).contains(&c.updated_ms))
            .collect();
        let containers: BTreeSet<String> = in_window.iter().map(|c| c.sha.clone()).collect();
        let findings: BTreeSet<FindingKey> = truth
            .findings
            .iter()
            .filter(|f| containers.contains(&f.container_sha))
            .map(|f| {
                (
                    f.container_sha.clone(),
                    f.qid,
                    f.package.clone(),
                    f.version.clone(),
                    f.path.clone(),
                )
            })
            .collect();
        let images = in_window
            .iter()
            .filter_map(|c| c.image_sha.clone())
            .collect();
        let known: BTreeSet<u32> = truth.kb.iter().map(|k| k.qid).collect();
        let qids = findings
            .iter()
            .map(|f| f.1)
            .filter(|q| known.contains(q))
            .collect();
        Expected {
            containers,
            findings,
            images,
            qids,
        }
    }
}

/// What a store holds, in the same shape as [`Expected`] (open findings only).
pub async fn stored<S: qcvr::store::Store>(store: &S) -> Expected {
    let containers = store.all_containers().await.expect("read containers");
    let findings = store.all_findings().await.expect("read findings");
    let images = store.all_images().await.expect("read images");
    let kb = store.all_kb_entries().await.expect("read kb");
    Expected {
        containers: containers.into_iter().map(|c| c.sha).collect(),
        findings: findings
            .into_iter()
            .filter(|f| f.status == qcvr::model::FindingStatus::Open)
            .map(|f| (f.container_sha, f.qid, f.package, f.version, f.path))
            .collect(),
        images: images.into_iter().map(|i| i.sha).collect(),
        qids: kb.into_iter().map(|k| k.qid).collect(),
    }
}
