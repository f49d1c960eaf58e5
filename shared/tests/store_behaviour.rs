//! One behaviour suite for every [`Store`]: run against `MemoryStore` (module `memory`) and
//! against `DynamoStore` on a local moto server (module `moto`), plus DynamoDB-only checks
//! on moto (item layout, trimming, paging, missing tables).
//!
//! The moto tests need a running moto server whose URL is in `QCVR_TEST_DYNAMODB_URL`:
//! `scripts/moto.sh start 5005 && QCVR_TEST_DYNAMODB_URL=http://127.0.0.1:5005 cargo test -p
//! qcvr-shared --test store_behaviour`. Without it they fail, on purpose.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{AttributeValue, BillingModeSummary};
use chrono::{DateTime, Duration, TimeZone, Utc};
use qcvr::config::{ConfigError, Integration, IntegrationConfig};
use qcvr::model::{Container, Finding, FindingStatus, Image, KbEntry};
use qcvr::run::{Counts, RunRecord, RunState, Trigger, Window};
use qcvr::store::dynamo::{DynamoStore, create_tables};
use qcvr::store::memory::MemoryStore;
use qcvr::store::{StepCursor, Store, StoreError, WorkKind};

// ---------------------------------------------------------------------------------------
// Fixtures

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, hour, minute, 0)
        .single()
        .expect("valid fixture time")
}

fn counts(fetched: u64, new: u64, updated: u64, unchanged: u64) -> Counts {
    Counts {
        fetched,
        new,
        updated,
        unchanged,
        failed: 0,
    }
}

fn container(sha: &str) -> Container {
    Container {
        sha: sha.to_owned(),
        container_id: Some(sha.chars().take(12).collect()),
        name: Some(format!("app-{sha}")),
        state: Some("RUNNING".into()),
        image_sha: Some("i".repeat(64)),
        updated: Some(at(9, 0)),
        ..Default::default()
    }
}

fn finding(container_sha: &str, qid: u32, package: Option<&str>) -> Finding {
    Finding {
        container_sha: container_sha.to_owned(),
        qid,
        package: package.map(str::to_owned),
        version: package.map(|_| "1.0".to_owned()),
        fix_version: None,
        path: None,
        title: Some(format!("QID {qid}")),
        severity: Some(3),
        type_detected: Some("CONFIRMED".into()),
        first_found: Some(at(8, 0)),
        last_found: Some(at(9, 0)),
        patch_available: Some(true),
        cve_ids: vec![format!("CVE-2024-{qid}")],
        result: Some("evidence".into()),
        status: FindingStatus::Open,
        fixed_at: None,
    }
}

fn image(n: u32) -> Image {
    Image {
        sha: format!("{n:064x}"),
        image_id: Some(format!("{n:012x}")),
        operating_system: Some("Alpine 3.19".into()),
        size: Some(5_000_000 + u64::from(n)),
        qids: vec![100, n],
        ..Default::default()
    }
}

fn kb(qid: u32) -> KbEntry {
    KbEntry {
        qid,
        title: Some(format!("KB {qid}")),
        severity: Some(4),
        diagnosis: Some("<p>diagnosis</p>".into()),
        software: vec!["vendor product".into()],
        ..Default::default()
    }
}

fn run(run_id: &str, integration: Integration, started_at: DateTime<Utc>) -> RunRecord {
    RunRecord::start(run_id, integration, Trigger::Schedule, started_at)
}

// ---------------------------------------------------------------------------------------
// The suite: every function takes an empty store.

async fn config_is_validated_on_write<S: Store>(store: &S) {
    let now = at(12, 0);
    assert_eq!(
        store
            .load_config(Integration::Containers, chrono::Utc::now())
            .await
            .ok(),
        Some(None)
    );

    // GIVEN the seeded defaults THEN they save and load back
    let seed = IntegrationConfig::default_for(Integration::Containers);
    store
        .save_config(&seed, now)
        .await
        .expect("defaults are valid");
    let loaded = store
        .load_config(Integration::Containers, chrono::Utc::now())
        .await
        .expect("loads");
    assert_eq!(loaded, Some(seed.clone()));
    assert_eq!(
        store
            .load_config(Integration::Kb, chrono::Utc::now())
            .await
            .ok(),
        Some(None)
    );

    // WHEN a config is invalid THEN it is refused and the stored one stays
    let refused = [
        (
            IntegrationConfig {
                page_size: 0,
                ..seed.clone()
            },
            ConfigError::PageSize(0),
        ),
        (
            IntegrationConfig {
                page_size: 5000,
                ..seed.clone()
            },
            ConfigError::PageSize(5000),
        ),
    ];
    for (config, expected) in refused {
        match store.save_config(&config, now).await {
            Err(StoreError::InvalidConfig(e)) => assert_eq!(e, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    let bad_filter = IntegrationConfig {
        filter: "(state:'RUNNING'".into(),
        ..seed.clone()
    };
    let err = store.save_config(&bad_filter, now).await;
    assert!(
        matches!(err, Err(StoreError::InvalidConfig(ConfigError::Filter(_)))),
        "{err:?}"
    );
    let future = now + Duration::hours(1);
    let in_future = IntegrationConfig {
        import_since: Some(future),
        ..seed.clone()
    };
    match store.save_config(&in_future, now).await {
        Err(StoreError::InvalidConfig(e)) => assert_eq!(e, ConfigError::SinceInFuture(future)),
        other => panic!("expected SinceInFuture, got {other:?}"),
    }
    let loaded = store
        .load_config(Integration::Containers, chrono::Utc::now())
        .await
        .expect("loads");
    assert_eq!(loaded, Some(seed.clone()));

    // WHEN a valid change is saved THEN it replaces the old one
    let changed = IntegrationConfig {
        page_size: 1000,
        import_since: Some(now - Duration::days(2)),
        ..seed
    };
    store.save_config(&changed, now).await.expect("valid");
    let loaded = store
        .load_config(Integration::Containers, chrono::Utc::now())
        .await
        .expect("loads");
    assert_eq!(loaded, Some(changed));
}

async fn runs_are_listed_newest_first<S: Store>(store: &S) {
    let mut first = run("exec-a", Integration::Containers, at(1, 0));
    let second = run("exec-c", Integration::Containers, at(2, 0));
    let mut third = run("exec-b", Integration::Containers, at(3, 0));
    third.window = Some(Window {
        since: at(0, 0),
        until: at(2, 55),
    });
    third.counts = counts(5, 2, 1, 2);
    third.findings = Some(counts(40, 10, 3, 27));
    third.invocations = 3;
    let other = run("exec-z", Integration::Images, at(4, 0));
    for r in [&third, &first, &other, &second] {
        store.save_run(r).await.expect("saves");
    }

    let listed = store
        .list_runs(Integration::Containers, 10)
        .await
        .expect("lists");
    let ids: Vec<&str> = listed.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["exec-b", "exec-c", "exec-a"]);
    assert_eq!(listed[0], third);
    let newest = store
        .list_runs(Integration::Containers, 2)
        .await
        .expect("lists");
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[1].run_id, "exec-c");
    assert!(
        store
            .list_runs(Integration::Kb, 5)
            .await
            .expect("lists")
            .is_empty()
    );

    // WHEN a run fails THEN saving it again replaces the record
    first.state = RunState::Failed;
    first.ended_at = Some(at(1, 7));
    first.error_type = Some("AuthFailed".into());
    first.error = Some("check the Qualys credentials".into());
    store.save_run(&first).await.expect("saves");
    let loaded = store
        .load_run(Integration::Containers, "exec-a")
        .await
        .expect("loads");
    assert_eq!(loaded, Some(first));
    let missing = store
        .load_run(Integration::Images, "exec-a")
        .await
        .expect("loads");
    assert_eq!(missing, None);
}

async fn cursor_round_trips<S: Store>(store: &S) {
    let containers = Integration::Containers;
    let load =
        async |integration, run_id| store.load_cursor(integration, run_id).await.expect("loads");
    let save =
        async |cursor: &StepCursor| store.save_cursor(containers, cursor).await.expect("saves");
    assert_eq!(load(containers, "exec-1").await, None);

    let cursor = StepCursor {
        run_id: "exec-1".into(),
        state: serde_json::json!({"since": "2024-05-01T00:00:00.000Z", "skip": ["a", "b"], "page": 3}),
        saved_at: Utc::now(),
    };
    save(&cursor).await;
    assert_eq!(load(containers, "exec-1").await, Some(cursor.clone()));
    assert_eq!(load(Integration::Kb, "exec-1").await, None);

    // Another run's cursor is kept apart from the first one's.
    let other = StepCursor {
        run_id: "exec-2".into(),
        state: serde_json::json!({"page": 1}),
        ..cursor.clone()
    };
    save(&other).await;
    let later = StepCursor {
        state: serde_json::json!({"page": 4}),
        ..cursor
    };
    save(&later).await;
    assert_eq!(load(containers, "exec-1").await, Some(later));
    assert_eq!(load(containers, "exec-2").await, Some(other.clone()));

    for _ in 0..2 {
        store
            .clear_cursor(containers, "exec-1")
            .await
            .expect("clearing, also twice, is fine");
    }
    assert_eq!(load(containers, "exec-1").await, None);
    assert_eq!(load(containers, "exec-2").await, Some(other));
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

async fn pending_work_is_idempotent<S: Store>(store: &S) {
    let (b, a) = ("b".repeat(64), "a".repeat(64));
    store
        .add_pending(
            WorkKind::Image,
            &[b.clone(), a.clone(), a.clone()],
            "exec-1",
        )
        .await
        .expect("adds");
    store
        .add_pending(WorkKind::Image, std::slice::from_ref(&a), "exec-2")
        .await
        .expect("adds again");
    store
        .add_pending(
            WorkKind::Qid,
            &strings(&["100", "9", "25", "4294967295"]),
            "exec-1",
        )
        .await
        .expect("adds");

    let images = store.pending(WorkKind::Image, 10).await.expect("lists");
    assert_eq!(images, [a.clone(), b.clone()]);
    let first = store.pending(WorkKind::Image, 1).await.expect("lists");
    assert_eq!(first, std::slice::from_ref(&a));
    let qids = store.pending(WorkKind::Qid, 10).await.expect("lists");
    assert_eq!(
        qids,
        strings(&["9", "25", "100", "4294967295"]),
        "numeric order"
    );
    assert!(
        store
            .pending(WorkKind::Qid, 0)
            .await
            .expect("lists")
            .is_empty()
    );

    // WHEN keys are removed (twice, with one never added) THEN only the rest stay
    for _ in 0..2 {
        store
            .remove_pending(WorkKind::Qid, &strings(&["25", "9", "7"]))
            .await
            .expect("removes");
    }
    store
        .remove_pending(WorkKind::Image, &[a])
        .await
        .expect("removes");
    assert_eq!(
        store.pending(WorkKind::Qid, 10).await.expect("lists"),
        strings(&["100", "4294967295"])
    );
    assert_eq!(
        store.pending(WorkKind::Image, 10).await.expect("lists"),
        [b]
    );

    let err = store
        .add_pending(WorkKind::Qid, &strings(&["12x"]), "exec-1")
        .await;
    assert!(matches!(err, Err(StoreError::Corrupt { .. })), "{err:?}");
}

async fn container_findings_are_tracked<S: Store>(store: &S) {
    let sha = "c".repeat(64);
    let other_sha = "d".repeat(64);
    let box_ = container(&sha);
    let reported = vec![
        finding(&sha, 101, Some("openssl")),
        finding(&sha, 101, Some("libssl")),
        finding(&sha, 202, None),
    ];

    // GIVEN a new container THEN everything is new
    let outcome = store
        .sync_container(&box_, &reported, at(10, 0))
        .await
        .expect("syncs");
    assert_eq!(outcome.container, counts(1, 1, 0, 0));
    assert_eq!(outcome.findings, counts(3, 3, 0, 0));
    let other = store
        .sync_container(
            &container(&other_sha),
            &[finding(&other_sha, 5, None)],
            at(10, 0),
        )
        .await
        .expect("syncs");
    assert_eq!(other.findings, counts(1, 1, 0, 0));

    // WHEN the same data comes again (later) THEN nothing is new or updated
    let outcome = store
        .sync_container(&box_, &reported, at(11, 0))
        .await
        .expect("syncs");
    assert_eq!(outcome.container, counts(1, 0, 0, 1));
    assert_eq!(outcome.findings, counts(3, 0, 0, 3));

    // WHEN one field of one finding and of the container change THEN exactly they update
    let mut changed = reported.clone();
    changed[2].severity = Some(5);
    let renamed = Container {
        name: Some("renamed".into()),
        ..box_.clone()
    };
    let outcome = store
        .sync_container(&renamed, &changed, at(12, 0))
        .await
        .expect("syncs");
    assert_eq!(outcome.container, counts(1, 0, 1, 0));
    assert_eq!(outcome.findings, counts(3, 0, 1, 2));

    // WHEN a finding vanishes THEN it is marked fixed at now, counted as updated
    let fixed_at = at(13, 0);
    let remaining = &changed[1..];
    let outcome = store
        .sync_container(&renamed, remaining, fixed_at)
        .await
        .expect("syncs");
    assert_eq!(outcome.container, counts(1, 0, 0, 1));
    assert_eq!(outcome.findings, counts(2, 0, 1, 2));
    let all = store.all_findings().await.expect("reads");
    let gone = all
        .iter()
        .find(|f| f.key() == changed[0].key() && f.container_sha == sha)
        .expect("the vanished finding is kept");
    assert_eq!(gone.status, FindingStatus::Fixed);
    assert_eq!(gone.fixed_at, Some(fixed_at));

    // WHEN it is still absent THEN it stays fixed and is not counted
    let outcome = store
        .sync_container(&renamed, remaining, at(14, 0))
        .await
        .expect("syncs");
    assert_eq!(outcome.findings, counts(2, 0, 0, 2));
    let all = store.all_findings().await.expect("reads");
    assert!(all.contains(gone), "fixed_at does not move");

    // WHEN it comes back THEN it reopens, counted as updated
    let outcome = store
        .sync_container(&renamed, &changed, at(15, 0))
        .await
        .expect("syncs");
    assert_eq!(outcome.findings, counts(3, 0, 1, 2));

    // THEN the readers show the final state, the other container untouched
    let mut expected = changed.clone();
    expected.push(finding(&other_sha, 5, None));
    expected.sort_by_key(|f| (f.container_sha.clone(), f.key()));
    assert_eq!(store.all_findings().await.expect("reads"), expected);
    let containers = store.all_containers().await.expect("reads");
    assert_eq!(containers, [renamed, container(&other_sha)]);
}

async fn images_and_kb_are_upserted<S: Store>(store: &S) {
    // 130 images: more than one BatchGetItem (100) and several BatchWriteItem (25) requests.
    let images: Vec<Image> = (0..130).map(image).collect();
    assert_eq!(
        store.upsert_images(&images).await.expect("upserts"),
        counts(130, 130, 0, 0)
    );
    assert_eq!(
        store.upsert_images(&images).await.expect("upserts"),
        counts(130, 0, 0, 130)
    );
    let mut changed = images.clone();
    changed[7].repos = vec![qcvr::model::ImageRepo {
        registry: Some("registry.example".into()),
        repository: Some("team/app".into()),
        tag: Some("1.2".into()),
    }];
    assert_eq!(
        store.upsert_images(&changed).await.expect("upserts"),
        counts(130, 0, 1, 129)
    );
    assert_eq!(store.all_images().await.expect("reads"), changed);

    // The same record twice in one call: the second copy is unchanged.
    let twice = [image(500), image(500)];
    assert_eq!(
        store.upsert_images(&twice).await.expect("upserts"),
        counts(2, 1, 0, 1)
    );
    assert_eq!(
        store.upsert_images(&[]).await.expect("upserts"),
        Counts::default()
    );

    let entries = [kb(38170), kb(9), kb(100_000)];
    assert_eq!(
        store.upsert_kb_entries(&entries).await.expect("upserts"),
        counts(3, 3, 0, 0)
    );
    assert_eq!(
        store.upsert_kb_entries(&entries).await.expect("upserts"),
        counts(3, 0, 0, 3)
    );
    let mut changed_kb = entries.clone();
    changed_kb[1].solution = Some("<p>upgrade</p>".into());
    assert_eq!(
        store.upsert_kb_entries(&changed_kb).await.expect("upserts"),
        counts(3, 0, 1, 2)
    );
    let stored = store.all_kb_entries().await.expect("reads");
    let qids: Vec<u32> = stored.iter().map(|e| e.qid).collect();
    assert_eq!(qids, [9, 38170, 100_000]);
    assert_eq!(stored[0], changed_kb[1]);
}

// ---------------------------------------------------------------------------------------
// Running it

/// A client of the local moto server, or a failure that says how to start one.
fn moto_client() -> Client {
    let Ok(url) = std::env::var("QCVR_TEST_DYNAMODB_URL") else {
        panic!(
            "QCVR_TEST_DYNAMODB_URL is not set: the moto tests need a local moto server. Run \
             `make test`, or `scripts/moto.sh start 5005` and then \
             `QCVR_TEST_DYNAMODB_URL=http://127.0.0.1:5005 cargo test -p qcvr-shared`"
        )
    };
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "qcvr-tests"))
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

/// A table prefix no other test (or earlier run) uses.
fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let stamp = Utc::now().timestamp_micros();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t{stamp}-{n}-{test}-")
}

/// A DynamoStore on fresh tables of the moto server.
async fn moto_store(test: &str) -> DynamoStore {
    let client = moto_client();
    let prefix = unique_prefix(test);
    create_tables(&client, &prefix)
        .await
        .expect("tables are created on moto");
    DynamoStore::new(client, prefix)
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&MemoryStore::new()).await;
                }
            )*
        }

        mod moto {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&moto_store(stringify!($test)).await).await;
                }
            )*
        }
    };
}

suite!(
    config_is_validated_on_write,
    runs_are_listed_newest_first,
    cursor_round_trips,
    pending_work_is_idempotent,
    container_findings_are_tracked,
    images_and_kb_are_upserted,
);

// ---------------------------------------------------------------------------------------
// DynamoDB only, on moto

async fn raw_item(
    store: &DynamoStore,
    table: &str,
    key: &[(&str, AttributeValue)],
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    let mut request = moto_client().get_item().table_name(store.table(table));
    for (name, value) in key {
        request = request.key(*name, value.clone());
    }
    request.send().await.expect("GetItem on moto").item
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

#[tokio::test]
async fn moto_create_tables_is_idempotent() {
    let client = moto_client();
    let prefix = unique_prefix("create");
    create_tables(&client, &prefix).await.expect("creates");
    create_tables(&client, &prefix)
        .await
        .expect("existing tables are fine");

    let names = [
        "calendar",
        "config",
        "containers",
        "findings",
        "images",
        "kb",
        "runs",
        "work",
    ];
    for name in names {
        let described = client
            .describe_table()
            .table_name(format!("{prefix}{name}"))
            .send()
            .await;
        assert!(described.is_ok(), "table {name}: {described:?}");
    }
    let runs = client
        .describe_table()
        .table_name(format!("{prefix}runs"))
        .send()
        .await
        .expect("describes");
    let table = runs.table.expect("table description");
    let billing = table
        .billing_mode_summary
        .and_then(|b: BillingModeSummary| b.billing_mode);
    assert_eq!(
        billing.map(|b| b.as_str().to_owned()),
        Some("PAY_PER_REQUEST".to_owned())
    );
    let indexes = table.local_secondary_indexes.unwrap_or_default();
    assert_eq!(indexes.len(), 1);
    assert_eq!(indexes[0].index_name(), Some("by_started"));
}

#[tokio::test]
async fn moto_run_items_have_the_contract_attributes() {
    let store = moto_store("runattrs").await;
    let mut record = run("exec-9", Integration::Containers, at(6, 0));
    record.window = Some(Window {
        since: at(0, 0),
        until: at(5, 55),
    });
    record.counts = counts(3, 1, 1, 1);
    record.invocations = 2;
    store.save_run(&record).await.expect("saves");

    let key = [("integration", s("containers")), ("run_id", s("exec-9"))];
    let item = raw_item(&store, "runs", &key).await.expect("stored");
    assert_eq!(item.get("state"), Some(&s("running")));
    assert_eq!(item.get("trigger"), Some(&s("schedule")));
    assert_eq!(
        item.get("started_at"),
        Some(&s("2024-05-01T06:00:00.000000000Z"))
    );
    assert_eq!(
        item.get("window_since"),
        Some(&s("2024-05-01T00:00:00.000000000Z"))
    );
    assert!(item.contains_key("window_until"));
    assert!(!item.contains_key("window"));
    assert_eq!(
        item.get("invocations"),
        Some(&AttributeValue::N("2".into()))
    );
    let counted = item
        .get("counts")
        .and_then(|c| c.as_m().ok())
        .expect("counts is a map");
    assert_eq!(counted.get("new"), Some(&AttributeValue::N("1".into())));

    // WHEN the state machine's failure state updates the item directly THEN it reads back
    moto_client()
        .update_item()
        .table_name(store.table("runs"))
        .key("integration", s("containers"))
        .key("run_id", s("exec-9"))
        .update_expression("SET #s = :s, error_type = :t, #e = :e, ended_at = :at")
        .expression_attribute_names("#s", "state")
        .expression_attribute_names("#e", "error")
        .expression_attribute_values(":s", s("failed"))
        .expression_attribute_values(":t", s("RateLimited"))
        .expression_attribute_values(":e", s("Qualys rate limit"))
        .expression_attribute_values(":at", s("2024-05-01T06:10:00.123Z"))
        .send()
        .await
        .expect("updates");
    let loaded = store
        .load_run(Integration::Containers, "exec-9")
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(loaded.state, RunState::Failed);
    assert_eq!(loaded.error_type.as_deref(), Some("RateLimited"));
    assert_eq!(
        loaded.ended_at,
        Some(at(6, 10) + Duration::milliseconds(123))
    );
    assert_eq!(loaded.window, record.window);
}

/// Overwrites the images config's `page_size` behind the store's back.
async fn set_images_page_size(store: &DynamoStore, value: AttributeValue) {
    moto_client()
        .update_item()
        .table_name(store.table("config"))
        .key("integration", s("images"))
        .update_expression("SET page_size = :p")
        .expression_attribute_values(":p", value)
        .send()
        .await
        .expect("updates");
}

#[tokio::test]
async fn moto_config_is_validated_on_read() {
    let store = moto_store("cfgread").await;
    let valid = IntegrationConfig::default_for(Integration::Images);
    store.save_config(&valid, Utc::now()).await.expect("saves");
    set_images_page_size(&store, AttributeValue::N("0".into())).await;
    let err = store
        .load_config(Integration::Images, chrono::Utc::now())
        .await;
    assert!(
        matches!(
            err,
            Err(StoreError::InvalidConfig(ConfigError::PageSize(0)))
        ),
        "{err:?}"
    );

    set_images_page_size(&store, s("fifty")).await;
    let err = store
        .load_config(Integration::Images, chrono::Utc::now())
        .await;
    assert!(matches!(err, Err(StoreError::Corrupt { .. })), "{err:?}");
}

#[tokio::test]
async fn moto_long_text_is_trimmed_to_fit_an_item() {
    let store = moto_store("trim").await;
    let mut entry = kb(777);
    entry.diagnosis = Some(format!("<p>{}</p>", "d".repeat(1024 * 1024)));
    entry.solution = Some("<p>patch</p>".into());
    assert_eq!(
        store
            .upsert_kb_entries(&[entry.clone()])
            .await
            .expect("upserts"),
        counts(1, 1, 0, 0)
    );

    let item = raw_item(&store, "kb", &[("qid", AttributeValue::N("777".into()))])
        .await
        .expect("stored");
    let truncated = item.get("truncated_fields").and_then(|t| t.as_l().ok());
    assert_eq!(truncated, Some(&vec![s("diagnosis")]));
    let size: usize = item
        .iter()
        .map(|(k, v)| k.len() + v.as_s().map_or(16, String::len))
        .sum();
    assert!(size < 360 * 1024, "item of {size} bytes");
    let stored = store.all_kb_entries().await.expect("reads");
    let diagnosis = stored[0].diagnosis.as_deref().unwrap_or_default();
    assert!(diagnosis.starts_with("<p>ddd") && diagnosis.contains("truncated by qcvr"));
    assert_eq!(stored[0].solution, entry.solution);

    // The hash is of the whole record: the same entry again is unchanged, a change is seen.
    assert_eq!(
        store
            .upsert_kb_entries(&[entry.clone()])
            .await
            .expect("upserts"),
        counts(1, 0, 0, 1)
    );
    entry.diagnosis = Some(format!("<p>{}e</p>", "d".repeat(1024 * 1024)));
    assert_eq!(
        store.upsert_kb_entries(&[entry]).await.expect("upserts"),
        counts(1, 0, 1, 0)
    );

    // A finding's evidence is trimmed too, and stays listed when the finding is fixed.
    let sha = "e".repeat(64);
    let mut long = finding(&sha, 300, Some("glibc"));
    long.result = Some("r".repeat(600 * 1024));
    let short = finding(&sha, 301, None);
    let both = [long.clone(), short.clone()];
    store
        .sync_container(&container(&sha), &both, at(10, 0))
        .await
        .expect("syncs");
    let outcome = store
        .sync_container(&container(&sha), &[short], at(11, 0))
        .await
        .expect("syncs");
    assert_eq!(outcome.findings, counts(1, 0, 1, 1));
    let key = [("container_sha", s(&sha)), ("finding_key", s(&long.key()))];
    let item = raw_item(&store, "findings", &key).await.expect("stored");
    assert_eq!(item.get("status"), Some(&s("FIXED")));
    let truncated = item.get("truncated_fields").and_then(|t| t.as_l().ok());
    assert_eq!(truncated, Some(&vec![s("result")]));
}

#[tokio::test]
async fn moto_findings_of_a_container_are_read_across_pages() {
    let store = moto_store("paged").await;
    let sha = "f".repeat(64);
    // Five findings of 300 KB each: more than one 1 MB Query page.
    let findings: Vec<Finding> = (0..5)
        .map(|i| Finding {
            result: Some(format!("{i}").repeat(300 * 1024)),
            ..finding(&sha, 400 + i, None)
        })
        .collect();
    let first = store
        .sync_container(&container(&sha), &findings, at(10, 0))
        .await
        .expect("syncs");
    assert_eq!(first.findings, counts(5, 5, 0, 0));
    let again = store
        .sync_container(&container(&sha), &findings, at(11, 0))
        .await
        .expect("syncs");
    assert_eq!(again.findings, counts(5, 0, 0, 5));
}

#[tokio::test]
async fn moto_missing_tables_are_reported() {
    let store = DynamoStore::new(moto_client(), unique_prefix("absent"));
    let table = store.table("config");
    match store
        .load_config(Integration::Containers, chrono::Utc::now())
        .await
    {
        Err(StoreError::MissingTable { table: t }) => assert_eq!(t, table),
        other => panic!("expected MissingTable, got {other:?}"),
    }
    let err = store.upsert_images(&[image(1)]).await;
    assert!(
        matches!(err, Err(StoreError::MissingTable { .. })),
        "{err:?}"
    );
    assert_eq!(err.err().map(|e| e.error_type()), Some("InvalidConfig"));
}
