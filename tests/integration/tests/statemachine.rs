//! The real state machine, end to end: `infra/statemachine/qcvr-chain.asl.json` executed by
//! moto's Step Functions interpreter, whose Lambda tasks reach the real handlers through the
//! local Lambda endpoint of `qcvr_cli::local_lambda`, which syncs from an in-process Qualys
//! simulator into DynamoDB tables on the same moto.
//!
//! Needs moto started with `MOTO_PORT` = the endpoint's port, as `make test` does:
//! `scripts/moto.sh start 5305 5306`, then
//! `QCVR_TEST_DYNAMODB_URL=http://127.0.0.1:5305 QCVR_TEST_LAMBDA_PORT=5306 cargo test -p
//! qcvr-integration-tests --test statemachine`.
//!
//! moto sends every Lambda invocation to that one port, so the scenarios take turns on it
//! (one endpoint at a time, guarded by [`ENDPOINT_PORT`]); each has its own tables, state
//! machine, execution name and simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use qcvr::clock::SystemClock;
use qcvr::config::Integration;
use qcvr::model::FindingStatus;
use qcvr::qualys::auth::StaticCredentials;
use qcvr::qualys::{ClientSettings, QualysClient, QualysHosts, RetryPolicy};
use qcvr::run::{RunRecord, RunState};
use qcvr::store::dynamo::{DynamoStore, create_tables};
use qcvr::store::{Store, WorkKind};
use qcvr::sync::{LOCAL_INVOCATION_TIME, SyncSettings, load_or_seed_config};
use qcvr_cli::commands::{LOCAL_ROLE_ARN, local_substitutions};
use qcvr_cli::local_lambda::{self, LocalFunctions};
use qcvr_cli::stepfunctions::{self, ExecutionResult};
use qcvr_integration_tests::{Expected, local_aws, stored};
use qualys_sim::{Endpoint, Fault, FaultRule, Mutation, Scope, SimConfig, SimHandle, Simulator};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;

/// Held by the scenario whose endpoint answers on `QCVR_TEST_LAMBDA_PORT`.
static ENDPOINT_PORT: Mutex<()> = Mutex::const_new(());

const USER: &str = "qcvr-e2e";
const PASSWORD: &str = "e2e-password";
const ASL: &str = include_str!("../../../infra/statemachine/qcvr-chain.asl.json");

/// Where moto and the endpoint port are, or a failure that says how to get them.
fn local_stack() -> (String, u16) {
    let help = "run `make test`, or `scripts/moto.sh start 5305 5306` and then \
                `QCVR_TEST_DYNAMODB_URL=http://127.0.0.1:5305 QCVR_TEST_LAMBDA_PORT=5306 \
                cargo test -p qcvr-integration-tests --test statemachine`";
    let Ok(moto_url) = std::env::var("QCVR_TEST_DYNAMODB_URL") else {
        panic!("QCVR_TEST_DYNAMODB_URL is not set: these tests need moto; {help}");
    };
    let Ok(port) = std::env::var("QCVR_TEST_LAMBDA_PORT") else {
        panic!("QCVR_TEST_LAMBDA_PORT is not set: moto must send Lambda tasks there; {help}");
    };
    let port = port
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("QCVR_TEST_LAMBDA_PORT={port:?} is not a port; {help}"));
    (moto_url, port)
}

/// A prefix (tables, machine) and an execution name used by nothing else.
fn unique(scenario: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("sm{}-{n}-{scenario}", Utc::now().timestamp_micros())
}

/// What a scenario changes from the defaults.
struct Setup {
    sim: SimConfig,
    settings: SyncSettings,
    retry: RetryPolicy,
    /// The password the client sends (the simulator wants [`PASSWORD`]).
    password: &'static str,
}

impl Setup {
    /// A generated account of `containers` containers, default settings, fast retries.
    fn generated(containers: usize, seed: u64) -> Setup {
        Setup {
            sim: SimConfig {
                username: Some(USER.into()),
                password: Some(PASSWORD.into()),
                ..SimConfig::generated(containers, seed)
            },
            settings: SyncSettings::default(),
            retry: RetryPolicy {
                jitter: Duration::ZERO,
                backoff_base: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
            password: PASSWORD,
        }
    }
}

/// One scenario's world: simulator, tables, the endpoint serving the handlers, and the state
/// machine made from the real ASL file.
struct Chain {
    sim: SimHandle,
    store: DynamoStore,
    sfn: aws_sdk_sfn::Client,
    machine: String,
    name: String,
    serving: JoinHandle<std::io::Result<()>>,
    _port: MutexGuard<'static, ()>,
}

impl Chain {
    async fn start(scenario: &str, setup: Setup) -> Chain {
        let (moto_url, lambda_port) = local_stack();
        let port = ENDPOINT_PORT.lock().await;
        stepfunctions::enable_moto_execution(&moto_url)
            .await
            .expect("moto accepts the execution switch");
        let aws = local_aws().await;
        let name = unique(scenario);
        let prefix = format!("{name}-");
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        create_tables(&dynamodb, &prefix)
            .await
            .expect("tables are created on moto");
        let store = DynamoStore::new(dynamodb, &prefix);
        for integration in Integration::ALL {
            load_or_seed_config(&store, integration, Utc::now())
                .await
                .expect("default configs are saved");
        }

        let sim = Simulator::start(setup.sim)
            .await
            .expect("the simulator starts");
        let url = sim.base_url();
        let hosts = QualysHosts::new(&url, Some(&url)).expect("loopback hosts");
        let settings = ClientSettings {
            retry: setup.retry,
            ..ClientSettings::default()
        };
        let qualys = QualysClient::new(
            settings,
            hosts,
            StaticCredentials::new(USER, setup.password),
        )
        .expect("client");
        let functions = LocalFunctions {
            qualys,
            store: store.clone(),
            clock: SystemClock,
            settings: setup.settings,
        };
        let listener = bind(lambda_port).await;
        let serving = tokio::spawn({
            let moto_url = moto_url.clone();
            async move { local_lambda::serve(listener, functions, &moto_url).await }
        });

        let sfn = aws_sdk_sfn::Client::new(&aws);
        let definition = stepfunctions::substitute(ASL, &local_substitutions(&prefix))
            .expect("the local substitutions fill every placeholder");
        let machine = stepfunctions::create_or_update(
            &sfn,
            &format!("{prefix}chain"),
            &definition,
            LOCAL_ROLE_ARN,
        )
        .await
        .expect("moto creates the state machine");
        Chain {
            sim,
            store,
            sfn,
            machine,
            name,
            serving,
            _port: port,
        }
    }

    /// Runs one execution named `run_id` to its end.
    async fn execute(&self, run_id: &str, input: &str) -> ExecutionResult {
        stepfunctions::execute(
            &self.sfn,
            &self.machine,
            run_id,
            input,
            Duration::from_secs(120),
        )
        .await
        .expect("the execution ends")
    }

    fn run_id(&self, what: &str) -> String {
        format!("{}-{what}", self.name)
    }

    async fn run(&self, integration: Integration, run_id: &str) -> RunRecord {
        self.store
            .load_run(integration, run_id)
            .await
            .expect("runs table is readable")
            .unwrap_or_else(|| panic!("no {integration} run record for {run_id}"))
    }

    /// Stops the endpoint and waits until its port is free for the next scenario.
    async fn stop(self) {
        self.serving.abort();
        let _ = self.serving.await;
    }
}

/// Binds the endpoint port, waiting a little for a previous scenario's endpoint to let go.
async fn bind(port: u16) -> TcpListener {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "cannot listen on 127.0.0.1:{port} (QCVR_TEST_LAMBDA_PORT): {last:?}; another process \
         holds it"
    );
}

fn assert_succeeded(result: &ExecutionResult, run_id: &str) {
    assert_eq!(
        result.status, "SUCCEEDED",
        "execution {run_id}: {:?} {:?}",
        result.error, result.cause
    );
}

/// Which of `shas` the simulator serves image details for (the rest answer 404 CMS-2002),
/// asked over HTTP as any Qualys client would.
async fn servable_images(sim: &SimHandle, shas: &BTreeSet<String>) -> BTreeSet<String> {
    let http = reqwest::Client::new();
    let url = sim.base_url();
    let token = http
        .post(format!("{url}/auth"))
        .form(&[
            ("username", USER),
            ("password", PASSWORD),
            ("token", "true"),
        ])
        .send()
        .await
        .expect("the simulator answers /auth")
        .text()
        .await
        .expect("a token");
    let mut servable = BTreeSet::new();
    for sha in shas {
        let status = http
            .get(format!("{url}/csapi/v1.3/images/{sha}"))
            .bearer_auth(token.trim())
            .send()
            .await
            .expect("the simulator answers image calls")
            .status();
        match status.as_u16() {
            200 => {
                servable.insert(sha.clone());
            }
            404 => {}
            other => panic!("the simulator answered HTTP {other} for image {sha}"),
        }
    }
    servable
}

/// The three run records of `run_id` succeeded, the store holds exactly what the simulator
/// has in the containers run's window, and the watermark moved to the window's end.
async fn assert_synced_exactly(chain: &Chain, run_id: &str) -> BTreeMap<Integration, RunRecord> {
    let mut runs = BTreeMap::new();
    for integration in Integration::ALL {
        let run = chain.run(integration, run_id).await;
        assert_eq!(run.state, RunState::Succeeded, "{integration} run: {run:?}");
        assert!(run.ended_at.is_some(), "{integration} run has no end");
        runs.insert(integration, run);
    }
    let window = runs[&Integration::Containers]
        .window
        .expect("the containers run records its window");
    let want = Expected::running_in(
        &chain.sim.truth(),
        window.since.timestamp_millis(),
        window.until.timestamp_millis(),
    );
    assert!(
        !want.containers.is_empty() && !want.findings.is_empty() && !want.qids.is_empty(),
        "the simulated account must have running, vulnerable containers in the window"
    );

    let store = &chain.store;
    let findings = store.all_findings().await.expect("findings table");
    assert!(
        findings.iter().all(|f| f.status == FindingStatus::Open),
        "a first sync fixes nothing"
    );
    // Every finding is open, so `stored` (open findings only) sees all of them.
    let held = stored(store).await;
    assert_eq!(held.containers, want.containers, "containers");
    assert_eq!(held.findings, want.findings, "findings");

    let servable = servable_images(&chain.sim, &want.images).await;
    assert!(!servable.is_empty(), "some images have scan data");
    assert_eq!(
        held.images, servable,
        "images: every servable image, no other"
    );
    let images_run = &runs[&Integration::Images];
    assert_eq!(
        images_run.counts.failed,
        (want.images.len() - servable.len()) as u64,
        "images without scan data are counted as failed"
    );

    assert_eq!(
        held.qids, want.qids,
        "a KB entry for every QID found, no other"
    );

    for kind in [WorkKind::Image, WorkKind::Qid] {
        let left = store.pending(kind, 10).await.expect("work table");
        assert!(
            left.is_empty(),
            "{kind:?} work left after success: {left:?}"
        );
    }
    assert_eq!(
        watermark(chain).await,
        Some(window.until),
        "the watermark moves to the end of the window the run covered"
    );
    runs
}

/// Sets the containers watermark to a week ago (whole seconds) and returns it.
async fn set_watermark(chain: &Chain) -> DateTime<Utc> {
    let since =
        DateTime::from_timestamp(Utc::now().timestamp() - 7 * 24 * 3600, 0).expect("a valid time");
    let mut config = load_or_seed_config(&chain.store, Integration::Containers, Utc::now())
        .await
        .expect("containers config");
    config.import_since = Some(since);
    chain
        .store
        .save_config(&config, Utc::now())
        .await
        .expect("config saved");
    since
}

/// The containers watermark as the store holds it.
async fn watermark(chain: &Chain) -> Option<DateTime<Utc>> {
    chain
        .store
        .load_config(Integration::Containers, Utc::now())
        .await
        .expect("config table")
        .expect("containers config")
        .import_since
}

async fn assert_watermark(chain: &Chain, since: DateTime<Utc>) {
    assert_eq!(
        watermark(chain).await,
        Some(since),
        "a failed chain leaves the watermark where it was"
    );
}

#[tokio::test]
async fn manual_execution_syncs_exactly_the_simulated_account() {
    let chain = Chain::start("manual", Setup::generated(40, 11)).await;
    // One image in use without scan data: Qualys answers 404 CMS-2002 for it.
    let cutoff = (Utc::now() - chrono::Duration::minutes(5)).timestamp_millis();
    let unscanned = chain
        .sim
        .truth()
        .containers
        .into_iter()
        .filter(|c| c.state == "RUNNING" && c.updated_ms < cutoff)
        .find_map(|c| c.image_sha)
        .expect("a running container with an image");
    chain
        .sim
        .mutate(&Mutation::SetImageScanned {
            sha: unscanned.clone(),
            scanned: false,
        })
        .expect("the image exists");

    let run_id = chain.run_id("run");
    let result = chain.execute(&run_id, r#"{"trigger":"manual"}"#).await;
    assert_succeeded(&result, &run_id);

    let runs = assert_synced_exactly(&chain, &run_id).await;
    assert!(runs[&Integration::Images].counts.failed >= 1);
    let images = chain.store.all_images().await.expect("images table");
    assert!(
        images.iter().all(|i| i.sha != unscanned),
        "the image without scan data is not stored"
    );
    for (integration, run) in &runs {
        assert_eq!(run.error_type, None, "{integration}");
        assert_eq!(run.invocations, 1, "{integration}: one page each fits");
    }
    let containers = &runs[&Integration::Containers];
    assert_eq!(containers.trigger, qcvr::run::Trigger::Manual);
    assert_eq!(runs[&Integration::Kb].trigger, qcvr::run::Trigger::Chained);
    chain.stop().await;
}

#[tokio::test]
async fn page_budget_spreads_the_run_over_invocations_without_losing_data() {
    let mut setup = Setup::generated(24, 12);
    setup.settings.image_page_size = 2;
    setup.settings.kb_batch_size = 10;
    let chain = Chain::start("budget", setup).await;
    let mut config = load_or_seed_config(&chain.store, Integration::Containers, Utc::now())
        .await
        .expect("containers config");
    config.page_size = 4;
    chain
        .store
        .save_config(&config, Utc::now())
        .await
        .expect("config saved");

    let run_id = chain.run_id("run");
    let result = chain
        .execute(&run_id, r#"{"trigger":"manual","page_budget":1}"#)
        .await;
    assert_succeeded(&result, &run_id);

    let runs = assert_synced_exactly(&chain, &run_id).await;
    let containers = &runs[&Integration::Containers];
    let pages = containers.counts.fetched.div_ceil(4);
    assert!(
        u64::from(containers.invocations) >= pages && pages > 1,
        "one page per containers invocation: {containers:?}"
    );
    for integration in [Integration::Images, Integration::Kb] {
        let run = &runs[&integration];
        assert!(
            run.invocations > 1,
            "{integration} resumed across invocations: {run:?}"
        );
    }
    chain.stop().await;
}

#[tokio::test]
async fn a_rate_limited_invocation_is_retried_by_the_state_machine() {
    let mut setup = Setup::generated(20, 13);
    // Each invocation may wait for Qualys until 2 s after it starts (a 900 s Lambda
    // deadline minus 898 s of margin), so a 429 asking for 3 s is answered `RateLimited`
    // at once and left to the state machine's Retry, as a long wait is in production.
    setup.settings.deadline_margin = LOCAL_INVOCATION_TIME - Duration::from_secs(2);
    setup.sim.faults = vec![
        FaultRule::once(Fault::CsRateLimit { wait_secs: 3 })
            .scoped(Scope::Only(Endpoint::Containers)),
    ];
    let chain = Chain::start("ratelimit", setup).await;
    let run_id = chain.run_id("run");
    let result = chain.execute(&run_id, r#"{"trigger":"manual"}"#).await;
    assert_succeeded(&result, &run_id);

    let stats = chain.sim.stats();
    assert_eq!(
        stats.statuses.get("429").copied(),
        Some(1),
        "the simulator answered one 429: {stats:?}"
    );
    let runs = assert_synced_exactly(&chain, &run_id).await;
    let containers = &runs[&Integration::Containers];
    assert!(
        containers.invocations >= 2,
        "the rate-limited invocation was retried: {containers:?}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn an_expired_kb_account_fails_the_last_step_and_keeps_the_watermark() {
    let mut setup = Setup::generated(20, 14);
    setup.sim.kb_account_expired = true;
    let chain = Chain::start("fatal", setup).await;
    let since = set_watermark(&chain).await;

    let run_id = chain.run_id("run");
    let result = chain.execute(&run_id, r#"{"trigger":"manual"}"#).await;
    assert_eq!(result.status, "FAILED", "{result:?}");
    assert_eq!(result.error.as_deref(), Some("AuthFailed"), "{result:?}");

    for integration in [Integration::Containers, Integration::Images] {
        let run = chain.run(integration, &run_id).await;
        assert_eq!(run.state, RunState::Succeeded, "{integration}: {run:?}");
    }
    let kb = chain.run(Integration::Kb, &run_id).await;
    assert_eq!(kb.state, RunState::Failed, "{kb:?}");
    assert_eq!(kb.error_type.as_deref(), Some("AuthFailed"), "{kb:?}");
    assert!(kb.error.is_some() && kb.ended_at.is_some(), "{kb:?}");

    assert_watermark(&chain, since).await;
    let pending = chain
        .store
        .pending(WorkKind::Qid, 1000)
        .await
        .expect("work table");
    let window = chain
        .run(Integration::Containers, &run_id)
        .await
        .window
        .expect("window");
    let want = Expected::running_in(
        &chain.sim.truth(),
        window.since.timestamp_millis(),
        window.until.timestamp_millis(),
    );
    let pending: BTreeSet<u32> = pending
        .iter()
        .map(|q| q.parse().expect("pending QIDs are numbers"))
        .collect();
    assert_eq!(
        pending, want.qids,
        "the QIDs found stay pending for the next run"
    );
    chain.stop().await;
}

#[tokio::test]
async fn wrong_credentials_fail_the_first_step_and_keep_the_watermark() {
    let mut setup = Setup::generated(10, 15);
    setup.password = "not-the-password";
    let chain = Chain::start("authfail", setup).await;
    let since = set_watermark(&chain).await;

    let run_id = chain.run_id("run");
    let result = chain.execute(&run_id, r#"{"trigger":"schedule"}"#).await;
    assert_eq!(result.status, "FAILED", "{result:?}");
    assert_eq!(result.error.as_deref(), Some("AuthFailed"), "{result:?}");

    let containers = chain.run(Integration::Containers, &run_id).await;
    assert_eq!(containers.state, RunState::Failed, "{containers:?}");
    assert_eq!(containers.trigger, qcvr::run::Trigger::Schedule);
    assert_eq!(
        containers.error_type.as_deref(),
        Some("AuthFailed"),
        "{containers:?}"
    );
    for integration in [Integration::Images, Integration::Kb] {
        let run = chain
            .store
            .load_run(integration, &run_id)
            .await
            .expect("runs table");
        assert_eq!(run, None, "{integration} never ran");
    }
    let stored = chain
        .store
        .all_containers()
        .await
        .expect("containers table");
    assert!(stored.is_empty(), "nothing synced without a login");
    assert_watermark(&chain, since).await;
    chain.stop().await;
}
