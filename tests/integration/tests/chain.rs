//! The whole chain (containers → images → KB) in-process against the Qualys simulator and the
//! DynamoDB store on moto: exact data, incremental re-runs, changes between runs, failures
//! that keep the watermark, resuming from cursors, and refused configs.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use qcvr::clock::{Clock, ManualClock};
use qcvr::config::{Integration, IntegrationConfig};
use qcvr::model::FindingStatus;
use qcvr::qualys::QualysClient;
use qcvr::qualys::auth::StaticCredentials;
use qcvr::run::{RunRecord, RunState, Trigger};
use qcvr::store::Store;
use qcvr::store::dynamo::DynamoStore;
use qcvr::sync::{Deps, StepInput, StepOutput, SyncError, SyncSettings, run_chain, run_step};
use qcvr_integration_tests::{Expected, client_for, fresh_store, simulator, stored};
use qualys_sim::{Mutation, SimHandle};
use tokio::time::Instant;

struct Harness {
    sim: SimHandle,
    qualys: QualysClient<StaticCredentials>,
    store: DynamoStore,
    clock: ManualClock,
    settings: SyncSettings,
}

impl Harness {
    async fn new(test: &str, containers: usize, seed: u64) -> Harness {
        let sim = simulator(containers, seed).await;
        let qualys = client_for(&sim);
        Harness {
            sim,
            qualys,
            store: fresh_store(test).await,
            clock: ManualClock::new(Utc::now()),
            settings: SyncSettings {
                kb_batch_size: 40,
                ..SyncSettings::default()
            },
        }
    }

    fn deps(&self) -> Deps<'_, QualysClient<StaticCredentials>, DynamoStore, ManualClock> {
        Deps {
            qualys: &self.qualys,
            store: &self.store,
            clock: &self.clock,
            settings: &self.settings,
        }
    }

    /// Runs the chain with the clock `ahead` of real time, so simulator changes made just now
    /// fall inside the window (whose upper bound is the run start minus 30 s).
    async fn chain(&self, run_id: &str, ahead: Duration) -> Result<Vec<StepOutput>, SyncError> {
        self.clock
            .set(Utc::now() + chrono::Duration::from_std(ahead).expect("small duration"));
        run_chain(self.deps(), run_id, Trigger::Manual, None).await
    }

    async fn run(&self, integration: Integration, run_id: &str) -> RunRecord {
        self.store
            .load_run(integration, run_id)
            .await
            .expect("read run")
            .expect("run recorded")
    }

    async fn watermark(&self) -> Option<DateTime<Utc>> {
        self.store
            .load_config(Integration::Containers, self.clock.now())
            .await
            .expect("read config")
            .and_then(|c| c.import_since)
    }
}

fn assert_same(stored: &Expected, expected: &Expected) {
    assert_eq!(stored.containers, expected.containers, "containers");
    let missing: Vec<_> = expected
        .findings
        .difference(&stored.findings)
        .take(3)
        .collect();
    let extra: Vec<_> = stored
        .findings
        .difference(&expected.findings)
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "findings missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(stored.images, expected.images, "images");
    assert_eq!(stored.qids, expected.qids, "KB entries");
}

#[tokio::test]
async fn the_chain_syncs_exactly_the_account_then_only_what_changed() {
    let h = Harness::new("chain-exact", 300, 11).await;
    let expected = Expected::running(&h.sim);
    assert!(
        expected.containers.len() > 150 && expected.findings.len() > 500,
        "a sizeable account"
    );

    // WHEN the first run syncs the default window (the last 7 days)
    let outputs = h.chain("run-1", Duration::ZERO).await.expect("first chain");

    // THEN every step succeeded and the store holds exactly the simulator's truth
    assert!(
        outputs.iter().all(|o| o.state == RunState::Succeeded),
        "{outputs:?}"
    );
    assert_same(&stored(&h.store).await, &expected);
    let first = h.run(Integration::Containers, "run-1").await;
    assert_eq!(first.counts.new as usize, expected.containers.len());
    assert_eq!(
        first.findings.map(|f| f.new as usize),
        Some(expected.findings.len())
    );
    // AND the watermark is the window's upper bound
    let window = first.window.expect("window recorded");
    assert_eq!(h.watermark().await, Some(window.until));

    // WHEN a second run finds nothing changed
    h.chain("run-2", Duration::ZERO)
        .await
        .expect("second chain");

    // THEN it reports nothing new or updated, and the watermark moved on
    for integration in Integration::ALL {
        let run = h.run(integration, "run-2").await;
        assert_eq!(
            (run.counts.new, run.counts.updated),
            (0, 0),
            "{integration}"
        );
        assert_eq!(run.state, RunState::Succeeded);
    }
    let second = h
        .run(Integration::Containers, "run-2")
        .await
        .window
        .expect("window");
    assert_eq!(second.since, window.until);
    assert_eq!(h.watermark().await, Some(second.until));

    // WHEN Qualys reports a touched container, a new vulnerability and a fixed one
    let running: Vec<String> = expected.containers.iter().cloned().collect();
    let truth = h.sim.truth();
    let qids_of = |sha: &str| -> Vec<u32> {
        truth
            .findings
            .iter()
            .filter(|f| f.container_sha == sha)
            .map(|f| f.qid)
            .collect()
    };
    let (touched, gains, loses) = (&running[0], &running[1], &running[2]);
    let new_qid = truth
        .kb
        .iter()
        .map(|k| k.qid)
        .find(|q| !qids_of(gains).contains(q))
        .expect("a QID");
    let fixed_qid = *qids_of(loses).first().expect("container 2 has a finding");
    h.sim
        .mutate(&Mutation::Touch {
            sha: touched.clone(),
            updated_ms: None,
        })
        .expect("touch");
    h.sim
        .mutate(&Mutation::AddVuln {
            sha: gains.clone(),
            qid: new_qid,
        })
        .expect("add");
    h.sim
        .mutate(&Mutation::FixVuln {
            sha: loses.clone(),
            qid: fixed_qid,
        })
        .expect("fix");
    h.chain("run-3", Duration::from_secs(120))
        .await
        .expect("third chain");

    // THEN the next run picks up exactly those three containers
    let third = h.run(Integration::Containers, "run-3").await;
    assert_eq!(third.counts.fetched, 3);
    assert_eq!(third.counts.updated, 3);
    let findings = third.findings.expect("finding counts");
    assert!(
        findings.new >= 1,
        "the new vulnerability is a new finding: {findings:?}"
    );
    // AND the store again matches the truth; the fixed finding is kept, marked fixed
    assert_same(&stored(&h.store).await, &Expected::running(&h.sim));
    let all = h.store.all_findings().await.expect("read findings");
    let fixed: Vec<_> = all
        .iter()
        .filter(|f| &f.container_sha == loses && f.qid == fixed_qid)
        .collect();
    assert!(!fixed.is_empty());
    assert!(
        fixed
            .iter()
            .all(|f| f.status == FindingStatus::Fixed && f.fixed_at.is_some())
    );
    assert!(
        h.store
            .all_kb_entries()
            .await
            .expect("read kb")
            .iter()
            .any(|k| k.qid == new_qid)
    );
}

#[tokio::test]
async fn a_kb_failure_keeps_the_watermark_and_the_next_run_completes_the_kb() {
    let h = Harness::new("chain-kb-failure", 60, 12).await;
    let expected = Expected::running(&h.sim);
    h.sim.set_kb_account_expired(true);

    // WHEN the KB step meets an expired account
    let error = h
        .chain("run-1", Duration::ZERO)
        .await
        .expect_err("the KB step fails");

    // THEN the run failed with an actionable, typed error and the watermark did not move
    assert_eq!(error.error_type(), "AuthFailed");
    let kb = h.run(Integration::Kb, "run-1").await;
    assert_eq!(kb.state, RunState::Failed);
    assert_eq!(kb.error_type.as_deref(), Some("AuthFailed"));
    assert_eq!(h.watermark().await, None);
    // AND what the earlier steps found is stored
    let partial = stored(&h.store).await;
    assert_eq!(partial.containers, expected.containers);
    assert!(partial.qids.is_empty());

    // WHEN the account works again
    h.sim.set_kb_account_expired(false);
    h.chain("run-2", Duration::from_secs(60))
        .await
        .expect("second chain");

    // THEN the missing KB entries are completed and the watermark moved
    assert_same(&stored(&h.store).await, &expected);
    assert!(h.watermark().await.is_some());
}

#[tokio::test]
async fn a_forced_soft_deadline_makes_each_step_resume_and_the_result_is_exact() {
    let h = Harness::new("chain-budget", 80, 13).await;
    let expected = Expected::running(&h.sim);
    let config = IntegrationConfig {
        page_size: 9,
        ..IntegrationConfig::default_for(Integration::Containers)
    };
    h.store
        .save_config(&config, Utc::now())
        .await
        .expect("save config");
    let settings = SyncSettings {
        kb_batch_size: 25,
        image_page_size: 5,
        ..SyncSettings::default()
    };
    let deps = Deps {
        settings: &settings,
        ..h.deps()
    };

    // WHEN every invocation may do one page only, as if the Lambda deadline were near
    let mut invocations: BTreeMap<Integration, u32> = BTreeMap::new();
    let mut input = StepInput {
        run_id: "run-1".into(),
        trigger: Trigger::Manual,
        page_budget: Some(1),
    };
    let mut step = Some(Integration::Containers);
    while let Some(integration) = step {
        loop {
            let deadline = Instant::now() + Duration::from_secs(900);
            let output = run_step(integration, deps, &input, deadline)
                .await
                .expect("invocation");
            *invocations.entry(integration).or_default() += 1;
            if !output.more {
                step = output.next;
                break;
            }
        }
        input.trigger = Trigger::Chained;
    }

    // THEN each step came back several times, and the data is exact
    assert!(invocations.values().all(|n| *n >= 3), "{invocations:?}");
    assert_same(&stored(&h.store).await, &expected);
    let run = h.run(Integration::Containers, "run-1").await;
    assert_eq!(run.invocations, invocations[&Integration::Containers]);
    assert_eq!(run.counts.fetched as usize, expected.containers.len());
}

#[tokio::test]
async fn a_bad_config_fails_the_run_with_a_clear_error_and_writes_nothing() {
    let cases: [(&str, AttributeValue, &str); 4] = [
        ("page_size", AttributeValue::N("0".into()), "page size 0"),
        (
            "page_size",
            AttributeValue::N("5000".into()),
            "page size 5000",
        ),
        (
            "filter",
            AttributeValue::S("(state:'RUNNING'".into()),
            "not valid QQL",
        ),
        (
            "import_since",
            AttributeValue::S("2099-01-01T00:00:00Z".into()),
            "in the future",
        ),
    ];
    for (field, value, says) in cases {
        let h = Harness::new("chain-bad-config", 10, 14).await;
        let good = IntegrationConfig::default_for(Integration::Containers);
        h.store
            .save_config(&good, Utc::now())
            .await
            .expect("save config");
        // GIVEN an operator edited the config item by hand
        let client = aws_sdk_dynamodb::Client::new(&qcvr_integration_tests::local_aws().await);
        client
            .update_item()
            .table_name(h.store.table("config"))
            .key("integration", AttributeValue::S("containers".into()))
            .update_expression("SET #f = :v")
            .expression_attribute_names("#f", field)
            .expression_attribute_values(":v", value)
            .send()
            .await
            .expect("edit the item");

        let error = h
            .chain("run-1", Duration::ZERO)
            .await
            .expect_err("bad config");

        assert_eq!(error.error_type(), "InvalidConfig", "{field}");
        assert!(
            error.to_string().contains(says),
            "{error} should say {says}"
        );
        assert_eq!(
            h.run(Integration::Containers, "run-1").await.state,
            RunState::Failed
        );
        assert_eq!(stored(&h.store).await, Expected::empty());
        assert_eq!(
            h.sim.stats().requests.values().sum::<u64>(),
            0,
            "no request reached Qualys"
        );
    }
}
