//! The Qualys client against the in-process simulator, no AWS: both listing modes over a
//! 12,345-container account return each match exactly once and resume from a saved cursor;
//! records changing between pages, an expiring token, rate limits, concurrency limits,
//! 5xx bursts, cut-off bodies and dropped connections are handled; the KnowledgeBase,
//! images and vulnerabilities agree with the simulator's truth; and every fixture answer
//! the simulator serves in fixtures mode parses.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use qcvr::config::ListingMode;
use qcvr::model::{Qid, findings_of};
use qcvr::qualys::{
    ClientSettings, ContainerQuery, ListCursor, Qql, QualysApi, QualysClient, QualysError,
    QualysHosts, RetryPolicy, StaticCredentials,
};
use qcvr::run::Window;
use qualys_sim::{
    Endpoint, Fault, FaultRule, Mutation, RateLimits, Scope, SimConfig, SimHandle, Simulator, Truth,
};
use tokio::time::Instant;

/// Anchor of the generated accounts: 2024-04-02T10:00:00Z. Their `updated` values lie in
/// the six days before it.
const START_MS: i64 = 1_712_052_000_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The account size of the listing tests: more than the paged endpoint's 10,000 reach.
const BIG: usize = 12_345;

/// A generated account anchored at [`START_MS`].
fn generated(containers: usize) -> SimConfig {
    SimConfig {
        start_ms: Some(START_MS),
        ..SimConfig::generated(containers, 42)
    }
}

/// As [`generated`], with rate windows no test run can exhaust (the simulator's windows
/// are real seconds while the client's advertised seconds are milliseconds here).
fn generated_unlimited(containers: usize) -> SimConfig {
    let wide = qualys_sim::Window {
        limit: 1_000_000,
        window_secs: 60,
    };
    SimConfig {
        limits: RateLimits {
            containers_list: wide,
            containers: wide,
            images: wide,
            ..RateLimits::default()
        },
        ..generated(containers)
    }
}

async fn start(config: SimConfig) -> SimHandle {
    Simulator::start(config).await.expect("simulator starts")
}

/// Waits of a few milliseconds, no jitter; one second advertised by Qualys lasts 10 ms.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        backoff_base: Duration::from_millis(2),
        backoff_cap: Duration::from_millis(20),
        concurrency_wait: Duration::from_millis(5),
        rate_limit_fallback_base: Duration::from_millis(5),
        rate_limit_fallback_cap: Duration::from_millis(50),
        jitter: Duration::ZERO,
        advertised_second: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

fn client_with(sim: &SimHandle, settings: ClientSettings) -> QualysClient<StaticCredentials> {
    let url = sim.base_url();
    let hosts = QualysHosts::new(&url, Some(&url)).expect("loopback hosts");
    QualysClient::new(settings, hosts, StaticCredentials::new("acme", "secret")).expect("client")
}

/// A client for `sim` (both hosts) with [`fast_policy`].
fn client(sim: &SimHandle) -> QualysClient<StaticCredentials> {
    client_with(
        sim,
        ClientSettings {
            retry: fast_policy(),
            ..ClientSettings::default()
        },
    )
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("valid epoch ms")
}

/// A filter as the client sends it, and as the test evaluates it on the truth.
#[derive(Debug, Clone, Copy)]
enum Filter {
    Everything,
    Running,
}

impl Filter {
    fn qql(self) -> Qql {
        Qql::parse(match self {
            Filter::Everything => "",
            Filter::Running => "state:RUNNING",
        })
        .expect("valid QQL")
    }

    fn matches(self, state: &str) -> bool {
        match self {
            Filter::Everything => true,
            Filter::Running => state == "RUNNING",
        }
    }
}

fn query(mode: ListingMode, page_size: u32, filter: Filter, since: i64, until: i64) -> Query {
    Query {
        filter,
        inner: ContainerQuery {
            filter: filter.qql(),
            window: Window {
                since: at(since),
                until: at(until),
            },
            page_size,
            mode,
        },
    }
}

struct Query {
    filter: Filter,
    inner: ContainerQuery,
}

impl Query {
    /// The shas of `truth` this query must return: filter match, `updated` inside the
    /// window (both ends inclusive).
    fn expected(&self, truth: &Truth) -> BTreeSet<String> {
        let (since, until) = (
            self.inner.window.since.timestamp_millis(),
            self.inner.window.until.timestamp_millis(),
        );
        truth
            .containers
            .iter()
            .filter(|c| self.filter.matches(&c.state))
            .filter(|c| (since..=until).contains(&c.updated_ms))
            .map(|c| c.sha.clone())
            .collect()
    }
}

/// Lists from `cursor` until the end or `max_pages` pages; returns the shas in order and
/// the cursor to resume from when stopped early.
async fn walk(
    client: &QualysClient<StaticCredentials>,
    query: &Query,
    mut cursor: ListCursor,
    max_pages: Option<usize>,
) -> (Vec<String>, Option<ListCursor>) {
    let mut shas = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_containers(&query.inner, &cursor, deadline())
            .await
            .unwrap_or_else(|e| panic!("page {} after {cursor:?}: {e}", pages + 1));
        pages += 1;
        shas.extend(page.containers.into_iter().map(|c| c.sha));
        match page.next {
            None => return (shas, None),
            Some(next) if max_pages == Some(pages) => return (shas, Some(next)),
            Some(next) => cursor = next,
        }
    }
}

fn duplicates(walked: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    walked
        .iter()
        .map(String::as_str)
        .filter(|s| !seen.insert(*s))
        .collect()
}

fn assert_exactly_once(label: &str, walked: &[String], expected: &BTreeSet<String>) {
    let dups = duplicates(walked);
    assert!(
        dups.is_empty(),
        "{label}: {} shas returned twice, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(3)]
    );
    let got: BTreeSet<String> = walked.iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{label}: {} missing (e.g. {:?}), {} not matching (e.g. {:?}) of {} expected",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        expected.len()
    );
}

fn status_count(sim: &SimHandle, status: u16) -> u64 {
    sim.stats()
        .statuses
        .get(&status.to_string())
        .copied()
        .unwrap_or(0)
}

/// Full walks, then walks resumed by a fresh client from a cursor saved as JSON after
/// `pages_before_resume` pages, over the whole account and over a filtered window.
async fn walks_are_exact_and_resumable(mode: ListingMode, page_size: u32) {
    let sim = start(generated_unlimited(BIG)).await;
    let truth = sim.truth();
    let queries = [
        query(
            mode,
            page_size,
            Filter::Everything,
            START_MS - 7 * DAY_MS,
            START_MS,
        ),
        query(
            mode,
            page_size,
            Filter::Running,
            START_MS - 5 * DAY_MS,
            START_MS - DAY_MS,
        ),
    ];
    let whole = queries[0].expected(&truth);
    assert_eq!(whole.len(), BIG, "the first window covers the account");
    let filtered = queries[1].expected(&truth);
    assert!(
        (1000..BIG - 1000).contains(&filtered.len()),
        "the filtered window is a real subset: {}",
        filtered.len()
    );

    for (n, query) in queries.iter().enumerate() {
        let label = format!("{mode:?} query {n}");
        let (walked, _) = walk(&client(&sim), query, ListCursor::Start, None).await;
        assert_exactly_once(&label, &walked, &query.expected(&truth));

        let (first, cursor) = walk(&client(&sim), query, ListCursor::Start, Some(3)).await;
        let cursor = cursor.expect("more than three pages");
        let saved = serde_json::to_string(&cursor).expect("cursor serialises");
        let restored: ListCursor = serde_json::from_str(&saved).expect("cursor deserialises");
        assert_eq!(restored, cursor);
        let (rest, _) = walk(&client(&sim), query, restored, None).await;
        let resumed: Vec<String> = first.into_iter().chain(rest).collect();
        assert_exactly_once(
            &format!("{label} resumed"),
            &resumed,
            &query.expected(&truth),
        );
    }
    assert_eq!(
        status_count(&sim, 400),
        0,
        "no request was refused (the paged walk never reaches pageNumber*pageSize > 10000)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_keyset_walk_over_12345_containers_is_exact_and_resumable() {
    walks_are_exact_and_resumable(ListingMode::Paged, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cursor_walk_over_12345_containers_is_exact_and_resumable() {
    walks_are_exact_and_resumable(ListingMode::Bulk, 250).await;
}

#[tokio::test]
async fn more_ties_than_a_page_are_paged_through_at_one_bound() {
    let sim = start(generated_unlimited(300)).await;
    let tie = START_MS - 3 * DAY_MS;
    let shas: Vec<String> = sim
        .truth()
        .containers
        .iter()
        .step_by(7)
        .take(25)
        .map(|c| c.sha.clone())
        .collect();
    for sha in &shas {
        sim.mutate(&Mutation::Touch {
            sha: sha.clone(),
            updated_ms: Some(tie),
        })
        .expect("known sha");
    }
    let truth = sim.truth();
    assert_eq!(
        truth
            .containers
            .iter()
            .filter(|c| c.updated_ms == tie)
            .count(),
        25
    );
    for mode in [ListingMode::Paged, ListingMode::Bulk] {
        let query = query(
            mode,
            10,
            Filter::Everything,
            START_MS - 7 * DAY_MS,
            START_MS,
        );
        let before = sim.stats();
        let (walked, _) = walk(&client(&sim), &query, ListCursor::Start, None).await;
        assert_exactly_once(&format!("{mode:?}"), &walked, &query.expected(&truth));
        let after = sim.stats();
        let endpoint = match mode {
            ListingMode::Paged => Endpoint::Containers,
            ListingMode::Bulk => Endpoint::ContainersList,
        };
        let requests = after.requests_to(endpoint) - before.requests_to(endpoint);
        assert!(
            requests >= 30,
            "{mode:?}: 300 records in pages of 10 take at least 30 requests, not {requests}"
        );
    }
    assert_eq!(status_count(&sim, 400), 0);
}

#[tokio::test]
async fn records_changing_between_pages_lose_nothing() {
    let sim = start(generated_unlimited(3000)).await;
    sim.add_fault(
        FaultRule::once(Fault::ChangeBetweenPages {
            ahead: 3,
            behind: 2,
        })
        .scoped(Scope::Lists)
        .times(None),
    );
    // The window reaches past now, so changed records stay in it and move to its end.
    let until = Utc::now().timestamp_millis() + DAY_MS;
    for mode in [ListingMode::Paged, ListingMode::Bulk] {
        let query = query(mode, 100, Filter::Running, START_MS - 5 * DAY_MS, until);
        let before = sim.truth();
        let (walked, _) = walk(&client(&sim), &query, ListCursor::Start, None).await;
        let after = sim.truth();

        let old: BTreeMap<&str, i64> = before
            .containers
            .iter()
            .map(|c| (c.sha.as_str(), c.updated_ms))
            .collect();
        let changed: BTreeSet<&str> = after
            .containers
            .iter()
            .filter(|c| old.get(c.sha.as_str()) != Some(&c.updated_ms))
            .map(|c| c.sha.as_str())
            .collect();
        assert!(
            changed.len() > 20,
            "{mode:?}: the fault changed {} records",
            changed.len()
        );
        let got: BTreeSet<String> = walked.iter().cloned().collect();
        let in_window_before = query.expected(&before);
        let in_window_after = query.expected(&after);
        let missing: Vec<_> = in_window_before.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "{mode:?}: {} records in the window were lost, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        let missing_now: Vec<_> = in_window_after.difference(&got).collect();
        assert!(
            missing_now.is_empty(),
            "{mode:?}: {} changed records still in the window were lost",
            missing_now.len()
        );
        let outside: Vec<_> = got
            .iter()
            .filter(|s| !in_window_before.contains(*s) && !in_window_after.contains(*s))
            .collect();
        assert!(outside.is_empty(), "{mode:?}: returned {outside:?}");
        let repeated: Vec<&str> = duplicates(&walked)
            .into_iter()
            .filter(|s| !changed.contains(s))
            .collect();
        assert!(
            repeated.is_empty(),
            "{mode:?}: unchanged records returned twice: {repeated:?}"
        );
    }
}

#[tokio::test]
async fn a_token_expiring_mid_listing_is_refreshed_exactly_once() {
    let sim = start(generated_unlimited(500)).await;
    sim.add_fault(
        FaultRule::once(Fault::ExpireTokens)
            .scoped(Scope::Only(Endpoint::Containers))
            .after(3),
    );
    let query = query(
        ListingMode::Paged,
        50,
        Filter::Everything,
        START_MS - 7 * DAY_MS,
        START_MS,
    );
    let (walked, _) = walk(&client(&sim), &query, ListCursor::Start, None).await;
    assert_exactly_once("expiring token", &walked, &query.expected(&sim.truth()));
    let stats = sim.stats();
    assert_eq!(
        stats.requests_to(Endpoint::Auth),
        2,
        "one token, one refresh"
    );
    assert_eq!(
        status_count(&sim, 401),
        1,
        "one request saw the expired token"
    );
    assert!(stats.requests_to(Endpoint::Containers) >= 10);
}

/// A sha and its expected findings keys, for a container with vulnerabilities.
fn findings_by_container(truth: &Truth) -> BTreeMap<&str, BTreeSet<String>> {
    let mut by: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for f in &truth.findings {
        by.entry(f.container_sha.as_str())
            .or_default()
            .insert(format!(
                "{}#{}#{}#{}",
                f.qid,
                f.package.as_deref().unwrap_or(""),
                f.version.as_deref().unwrap_or(""),
                f.path.as_deref().unwrap_or("")
            ));
    }
    by
}

async fn vuln_keys(client: &QualysClient<StaticCredentials>, sha: &str) -> BTreeSet<String> {
    let vulns = client
        .container_vulnerabilities(sha, deadline())
        .await
        .unwrap_or_else(|e| panic!("vulnerabilities of {sha}: {e}"));
    findings_of(sha, &vulns).iter().map(|f| f.key()).collect()
}

fn some_qids(truth: &Truth, n: usize) -> Vec<Qid> {
    truth.kb.iter().take(n).map(|k| k.qid).collect()
}

#[tokio::test]
async fn kb_1965_and_cs_429_are_waited_out_and_retried() {
    let sim = start(generated(100)).await;
    let truth = sim.truth();
    let client = client(&sim);
    let qids = some_qids(&truth, 5);

    sim.add_fault(FaultRule::once(Fault::KbRateLimit { wait_secs: 3 }));
    let entries = client
        .knowledge_base(&qids, deadline())
        .await
        .expect("waited out");
    assert_eq!(entries.iter().map(|e| e.qid).collect::<Vec<_>>(), qids);
    assert_eq!(
        sim.stats().requests_to(Endpoint::Kb),
        2,
        "one 409, one retry"
    );
    assert_eq!(status_count(&sim, 409), 1);

    let sha = truth.containers[0].sha.clone();
    sim.add_fault(
        FaultRule::once(Fault::CsRateLimit { wait_secs: 2 })
            .scoped(Scope::Only(Endpoint::ContainerVuln)),
    );
    let keys = vuln_keys(&client, &sha).await;
    let expected = findings_by_container(&truth)
        .remove(sha.as_str())
        .unwrap_or_default();
    assert_eq!(keys, expected);
    assert_eq!(sim.stats().requests_to(Endpoint::ContainerVuln), 2);
    assert_eq!(status_count(&sim, 429), 1);
}

#[tokio::test]
async fn waits_past_the_deadline_are_rate_limited_without_sleeping() {
    let sim = start(generated(100)).await;
    let truth = sim.truth();
    // Real seconds: an hour's wait can only be skipped, never slept.
    let client = client_with(
        &sim,
        ClientSettings {
            retry: RetryPolicy {
                jitter: Duration::ZERO,
                ..RetryPolicy::default()
            },
            ..ClientSettings::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(20);

    sim.add_fault(FaultRule::once(Fault::KbRateLimit { wait_secs: 3600 }));
    let err = client
        .knowledge_base(&some_qids(&truth, 3), deadline)
        .await
        .expect_err("an hour does not fit before the deadline");
    assert!(
        matches!(err, QualysError::RateLimited { retry_after } if retry_after >= Duration::from_secs(3600)),
        "{err}"
    );
    assert!(Instant::now() < deadline, "returned at once");
    assert_eq!(sim.stats().requests_to(Endpoint::Kb), 1);

    sim.add_fault(FaultRule::once(Fault::CsRateLimit { wait_secs: 3600 }).scoped(Scope::Gateway));
    let err = client
        .image(
            truth.images[0].sha.as_str(),
            Instant::now() + Duration::from_secs(20),
        )
        .await
        .expect_err("an hour does not fit before the deadline");
    assert!(
        matches!(err, QualysError::RateLimited { retry_after } if retry_after >= Duration::from_secs(3600)),
        "{err}"
    );
    assert_eq!(sim.stats().requests_to(Endpoint::Image), 1);
    assert!(Instant::now() < deadline, "returned at once");
}

#[tokio::test]
async fn kb_1960_concurrency_limit_is_waited_out() {
    let sim = start(generated(100)).await;
    let qids = some_qids(&sim.truth(), 4);
    sim.add_fault(FaultRule::once(Fault::KbConcurrency).times(Some(2)));
    let entries = client(&sim)
        .knowledge_base(&qids, deadline())
        .await
        .expect("waited out");
    assert_eq!(entries.len(), 4);
    assert_eq!(
        sim.stats().requests_to(Endpoint::Kb),
        3,
        "two 409/1960, one retry"
    );
    assert_eq!(status_count(&sim, 409), 2);
}

#[tokio::test]
async fn server_errors_cut_off_bodies_and_dropped_connections_are_retried() {
    let sim = start(generated_unlimited(300)).await;
    let truth = sim.truth();
    let client = client(&sim);

    // A burst of 5xx on a listing page.
    sim.add_fault(
        FaultRule::once(Fault::ServerError { status: 503 })
            .scoped(Scope::Lists)
            .times(Some(3)),
    );
    let query = query(
        ListingMode::Paged,
        1000,
        Filter::Everything,
        START_MS - 7 * DAY_MS,
        START_MS,
    );
    let (walked, _) = walk(&client, &query, ListCursor::Start, None).await;
    assert_exactly_once("after 503s", &walked, &query.expected(&truth));
    assert_eq!(sim.stats().requests_to(Endpoint::Containers), 4);
    assert_eq!(status_count(&sim, 503), 3);
    sim.clear_faults();

    let findings = findings_by_container(&truth);
    let (sha, expected) = findings.iter().next().expect("a container with findings");
    for (n, fault) in [Fault::Truncate, Fault::Reset].into_iter().enumerate() {
        sim.add_fault(FaultRule::once(fault.clone()).scoped(Scope::Only(Endpoint::ContainerVuln)));
        assert_eq!(&vuln_keys(&client, sha).await, expected, "{fault:?}");
        assert_eq!(
            sim.stats().requests_to(Endpoint::ContainerVuln),
            2 * (n as u64 + 1),
            "{fault:?}: one failed attempt, one retry"
        );
    }

    let image = &truth.images[0].sha;
    for (n, fault) in [Fault::Truncate, Fault::Reset].into_iter().enumerate() {
        sim.add_fault(FaultRule::once(fault.clone()).scoped(Scope::Only(Endpoint::Image)));
        let found = client.image(image, deadline()).await.expect("retried");
        assert_eq!(found.map(|i| i.sha).as_deref(), Some(image.as_str()));
        assert_eq!(
            sim.stats().requests_to(Endpoint::Image),
            2 * (n as u64 + 1),
            "{fault:?}"
        );
    }

    let qids = some_qids(&truth, 10);
    for (n, fault) in [
        Fault::Truncate,
        Fault::Reset,
        Fault::ServerError { status: 502 },
    ]
    .into_iter()
    .enumerate()
    {
        sim.add_fault(FaultRule::once(fault.clone()).scoped(Scope::Only(Endpoint::Kb)));
        let entries = client
            .knowledge_base(&qids, deadline())
            .await
            .expect("retried");
        assert_eq!(entries.iter().map(|e| e.qid).collect::<Vec<_>>(), qids);
        assert_eq!(
            sim.stats().requests_to(Endpoint::Kb),
            2 * (n as u64 + 1),
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn knowledge_base_over_every_qid_is_exactly_the_simulators() {
    let sim = start(generated(5000)).await;
    let truth = sim.truth();
    let mut asked: Vec<Qid> = truth.kb.iter().map(|k| k.qid).collect();
    assert!(asked.len() >= 500, "KB of {} entries", asked.len());
    // QIDs Qualys does not know are simply absent; duplicates are asked once.
    asked.extend([1, 2, 3, asked[0], 999_999_999]);
    let client = client_with(
        &sim,
        ClientSettings {
            kb_batch_size: 128,
            retry: fast_policy(),
            ..ClientSettings::default()
        },
    );
    let entries = client
        .knowledge_base(&asked, deadline())
        .await
        .expect("every batch answered");
    let got: BTreeMap<Qid, Option<String>> =
        entries.iter().map(|e| (e.qid, e.title.clone())).collect();
    assert_eq!(got.len(), entries.len(), "each QID once");
    let expected: BTreeMap<Qid, Option<String>> = truth
        .kb
        .iter()
        .map(|k| (k.qid, Some(k.title.clone())))
        .collect();
    assert_eq!(got, expected);
    let distinct = truth.kb.len() + 4;
    assert_eq!(
        sim.stats().requests_to(Endpoint::Kb),
        distinct.div_ceil(128) as u64,
        "one request per batch of 128"
    );
}

#[tokio::test]
async fn vulnerabilities_of_both_envelopes_match_the_truth() {
    let sim = start(generated(400)).await;
    let truth = sim.truth();
    let client = client(&sim);
    let findings = findings_by_container(&truth);
    // Mixed envelopes alternate by account position: take neighbours.
    for container in truth.containers.iter().take(30) {
        let expected = findings
            .get(container.sha.as_str())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            vuln_keys(&client, &container.sha).await,
            expected,
            "{}",
            container.sha
        );
    }
    assert!(findings.len() > 100, "most containers have findings");
}

#[tokio::test]
async fn images_unknown_or_unscanned_are_none() {
    let sim = start(generated(200)).await;
    let truth = sim.truth();
    let client = client(&sim);
    let scanned = &truth.images[0].sha;
    let unscanned = &truth.images[1].sha;
    sim.mutate(&Mutation::SetImageScanned {
        sha: unscanned.clone(),
        scanned: false,
    })
    .expect("known image");

    let image = client
        .image(scanned, deadline())
        .await
        .expect("answered")
        .expect("scanned image has data");
    assert_eq!(&image.sha, scanned);
    assert!(
        client
            .image(unscanned, deadline())
            .await
            .expect("CMS-2002 is not an error")
            .is_none()
    );
    assert!(
        client
            .image(&"0".repeat(64), deadline())
            .await
            .expect("404 is not an error")
            .is_none()
    );
    assert_eq!(status_count(&sim, 404), 2);
}

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("QCVR_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/qualys"),
    }
}

#[tokio::test]
async fn every_fixture_answer_served_by_the_simulator_parses() {
    let sim = start(SimConfig::fixtures(fixtures_dir())).await;
    let truth = sim.truth();
    let client = client(&sim);
    assert_eq!(
        truth.containers.len(),
        6,
        "the fixture pages hold six containers"
    );

    // Containers: the paged list (two pages of three, as recorded) and the bulk list.
    let all: BTreeSet<String> = truth.containers.iter().map(|c| c.sha.clone()).collect();
    let wide = (
        START_MS - 365 * DAY_MS,
        Utc::now().timestamp_millis() + DAY_MS,
    );
    for (mode, size) in [(ListingMode::Paged, 3), (ListingMode::Bulk, 2)] {
        let query = query(mode, size, Filter::Everything, wide.0, wide.1);
        let mut cursor = ListCursor::Start;
        let mut walked = Vec::new();
        loop {
            let page = client
                .list_containers(&query.inner, &cursor, deadline())
                .await
                .expect("fixture page parses");
            for c in page.containers {
                let known = truth
                    .containers
                    .iter()
                    .find(|t| t.sha == c.sha)
                    .expect("listed container is in the truth");
                assert_eq!(c.state.as_deref(), Some(known.state.as_str()));
                assert_eq!(c.image_sha, known.image_sha, "{}", c.sha);
                assert_eq!(c.image_digest.is_some(), known.image_digest.is_some());
                assert_eq!(
                    c.updated.map(|u| u.timestamp_millis()),
                    Some(known.updated_ms)
                );
                walked.push(c.sha);
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_exactly_once(&format!("fixtures {mode:?}"), &walked, &all);
    }

    // Vulnerabilities: container 1 in the `details.vulns` envelope, container 2 in the
    // `details[]` one, the rest inherited from their images.
    let findings = findings_by_container(&truth);
    for container in &truth.containers {
        let expected = findings
            .get(container.sha.as_str())
            .cloned()
            .unwrap_or_default();
        assert_eq!(vuln_keys(&client, &container.sha).await, expected);
    }
    assert_eq!(
        findings
            .get(truth.containers[0].sha.as_str())
            .map(BTreeSet::len),
        Some(6),
        "container 1: five vulnerabilities, one in two packages"
    );

    // Images: all four parse; one without scan data is CMS-2002, i.e. none.
    assert_eq!(truth.images.len(), 4);
    for image in &truth.images {
        let got = client
            .image(&image.sha, deadline())
            .await
            .expect("fixture image parses")
            .expect("scanned");
        assert_eq!(got.sha, image.sha);
    }
    sim.mutate(&Mutation::SetImageScanned {
        sha: truth.images[0].sha.clone(),
        scanned: false,
    })
    .expect("known image");
    assert!(
        client
            .image(&truth.images[0].sha, deadline())
            .await
            .expect("answered")
            .is_none()
    );

    // KnowledgeBase: every recorded entry, with the recorded titles.
    let qids: Vec<Qid> = truth.kb.iter().map(|k| k.qid).collect();
    let entries = client
        .knowledge_base(&qids, deadline())
        .await
        .expect("fixture KB parses");
    let got: BTreeMap<Qid, Option<String>> =
        entries.into_iter().map(|e| (e.qid, e.title)).collect();
    let expected: BTreeMap<Qid, Option<String>> = truth
        .kb
        .iter()
        .map(|k| (k.qid, Some(k.title.clone())))
        .collect();
    assert_eq!(got, expected);
    assert!(got.len() > 40, "the recorded lists hold {} QIDs", got.len());

    // The recorded "account expired" answer (HTTP 200) is an auth failure.
    sim.set_kb_account_expired(true);
    let err = client
        .knowledge_base(&qids[..1], deadline())
        .await
        .expect_err("expired account");
    assert!(matches!(err, QualysError::AuthFailed { .. }), "{err}");
}
