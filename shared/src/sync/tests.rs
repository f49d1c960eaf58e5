//! Unit tests of the sync steps on the in-memory store and a scripted Qualys.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::time::Instant;

use super::*;
use crate::clock::ManualClock;
use crate::config::IntegrationConfig;
use crate::model::{Container, Image, KbEntry, Qid, Software, Vulnerability};
use crate::qualys::{ContainerPage, ContainerQuery, ListCursor, QualysError};
use crate::store::memory::MemoryStore;

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, hour, minute, 0)
        .single()
        .expect("valid time")
}

/// A scripted Qualys account: containers with vulnerabilities, images and KB entries.
#[derive(Default)]
struct FakeQualys {
    account: Mutex<Account>,
}

#[derive(Default)]
struct Account {
    containers: BTreeMap<String, (Container, Vec<Vulnerability>)>,
    images: BTreeMap<String, Image>,
    kb: BTreeMap<Qid, KbEntry>,
    kb_error: Option<fn() -> QualysError>,
    kb_calls: u32,
}

impl FakeQualys {
    fn with_account(containers: usize) -> Self {
        let fake = FakeQualys::default();
        {
            let mut account = fake.account.lock().expect("lock");
            for i in 0..containers {
                let sha = format!("{i:064x}");
                let image = format!("{:064x}", 1000 + i % 3);
                let state = if i % 5 == 4 { "STOPPED" } else { "RUNNING" };
                let container = Container {
                    sha: sha.clone(),
                    state: Some(state.into()),
                    image_sha: Some(image.clone()),
                    updated: Some(at(8, 0) + chrono::Duration::minutes(i as i64)),
                    ..Container::default()
                };
                let vulns = vec![vuln(100 + (i as u32 % 4), &["a", "b"]), vuln(200, &[])];
                account.containers.insert(sha, (container, vulns));
                account.images.insert(
                    image.clone(),
                    Image {
                        sha: image,
                        ..Image::default()
                    },
                );
            }
            for qid in [100, 101, 102, 103, 200] {
                account.kb.insert(
                    qid,
                    KbEntry {
                        qid,
                        title: Some(format!("QID {qid}")),
                        ..KbEntry::default()
                    },
                );
            }
        }
        fake
    }

    fn with<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        f(&mut self.account.lock().expect("lock"))
    }
}

fn vuln(qid: Qid, packages: &[&str]) -> Vulnerability {
    Vulnerability {
        qid,
        title: Some(format!("QID {qid}")),
        severity: Some(3),
        software: packages
            .iter()
            .map(|p| Software {
                name: Some((*p).into()),
                version: Some("1.0".into()),
                ..Software::default()
            })
            .collect(),
        ..Vulnerability::default()
    }
}

impl QualysApi for FakeQualys {
    async fn list_containers(
        &self,
        query: &ContainerQuery,
        cursor: &ListCursor,
        _deadline: Instant,
    ) -> Result<ContainerPage, QualysError> {
        let offset = match cursor {
            ListCursor::Bulk { pagination_query } => pagination_query.parse().unwrap_or(0),
            _ => 0,
        };
        let running_only = query.filter.as_str().contains("RUNNING");
        let mut matching: Vec<Container> = self.with(|a| {
            a.containers
                .values()
                .map(|(c, _)| c.clone())
                .filter(|c| !running_only || c.state.as_deref() == Some("RUNNING"))
                .filter(|c| {
                    c.updated
                        .is_some_and(|u| u >= query.window.since && u <= query.window.until)
                })
                .collect()
        });
        matching.sort_by(|a, b| (a.updated, &a.sha).cmp(&(b.updated, &b.sha)));
        let size = query.page_size as usize;
        let page: Vec<Container> = matching.iter().skip(offset).take(size).cloned().collect();
        let next = (offset + size < matching.len()).then(|| ListCursor::Bulk {
            pagination_query: (offset + size).to_string(),
        });
        Ok(ContainerPage {
            containers: page,
            skipped_without_sha: 0,
            next,
        })
    }

    async fn container_vulnerabilities(
        &self,
        sha: &str,
        _deadline: Instant,
    ) -> Result<Vec<Vulnerability>, QualysError> {
        Ok(self.with(|a| {
            a.containers
                .get(sha)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        }))
    }

    async fn image(&self, sha: &str, _deadline: Instant) -> Result<Option<Image>, QualysError> {
        Ok(self.with(|a| a.images.get(sha).cloned()))
    }

    async fn knowledge_base(
        &self,
        qids: &[Qid],
        _deadline: Instant,
    ) -> Result<Vec<KbEntry>, QualysError> {
        self.with(|a| {
            a.kb_calls += 1;
            if let Some(error) = a.kb_error {
                return Err(error());
            }
            Ok(qids.iter().filter_map(|q| a.kb.get(q).cloned()).collect())
        })
    }
}

struct World {
    qualys: FakeQualys,
    store: MemoryStore,
    clock: ManualClock,
    settings: SyncSettings,
}

impl World {
    fn new(containers: usize) -> Self {
        World {
            qualys: FakeQualys::with_account(containers),
            store: MemoryStore::default(),
            clock: ManualClock::new(at(12, 0)),
            settings: SyncSettings {
                kb_batch_size: 2,
                image_page_size: 2,
                ..SyncSettings::default()
            },
        }
    }

    fn deps(&self) -> Deps<'_, FakeQualys, MemoryStore, ManualClock> {
        Deps {
            qualys: &self.qualys,
            store: &self.store,
            clock: &self.clock,
            settings: &self.settings,
        }
    }

    async fn chain(&self, run_id: &str) -> Result<Vec<StepOutput>, SyncError> {
        run_chain(self.deps(), run_id, Trigger::Manual, None).await
    }

    async fn config(&self) -> IntegrationConfig {
        self.store
            .load_config(Integration::Containers, chrono::Utc::now())
            .await
            .expect("load")
            .expect("seeded")
    }

    /// One containers step with time to spare.
    /// Changes one integration's stored config (the defaults when none is stored yet).
    async fn configure(&self, integration: Integration, edit: impl FnOnce(&mut IntegrationConfig)) {
        let stored = self
            .store
            .load_config(integration, at(12, 0))
            .await
            .expect("load");
        let mut config = stored.unwrap_or_else(|| IntegrationConfig::default_for(integration));
        edit(&mut config);
        self.store
            .save_config(&config, at(12, 0))
            .await
            .expect("save");
    }

    async fn containers_step(&self, input: &StepInput) -> Result<StepOutput, SyncError> {
        run_step(Integration::Containers, self.deps(), input, far_deadline()).await
    }

    async fn run(&self, integration: Integration, run_id: &str) -> RunRecord {
        self.store
            .load_run(integration, run_id)
            .await
            .expect("load")
            .expect("exists")
    }
}

/// A manual invocation of `run_id` without a page budget.
fn manual_input(run_id: &str) -> StepInput {
    StepInput {
        run_id: run_id.into(),
        trigger: Trigger::Manual,
        page_budget: None,
    }
}

fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(900)
}

#[tokio::test]
async fn a_first_chain_syncs_running_containers_their_findings_images_and_kb() {
    // GIVEN an account of 10 containers, 8 of them running
    let world = World::new(10);

    // WHEN the chain runs
    let outputs = world.chain("run-1").await.expect("chain succeeds");

    // THEN every step succeeded, in chain order
    let steps: Vec<_> = outputs.iter().map(|o| (o.integration, o.state)).collect();
    assert_eq!(
        steps,
        vec![
            (Integration::Containers, RunState::Succeeded),
            (Integration::Images, RunState::Succeeded),
            (Integration::Kb, RunState::Succeeded)
        ]
    );
    // AND the store holds exactly the running containers, 3 findings each, their images, KB
    let containers = world.store.all_containers().await.expect("read");
    assert_eq!(containers.len(), 8);
    assert!(
        containers
            .iter()
            .all(|c| c.state.as_deref() == Some("RUNNING"))
    );
    assert_eq!(world.store.all_findings().await.expect("read").len(), 8 * 3);
    assert_eq!(world.store.all_images().await.expect("read").len(), 3);
    assert_eq!(world.store.all_kb_entries().await.expect("read").len(), 5);
    // AND the watermark moved to the window's upper bound, not to "now"
    let run = world.run(Integration::Containers, "run-1").await;
    let window = run.window.expect("window recorded");
    assert_eq!(window.until, at(12, 0) - chrono::Duration::seconds(30));
    assert_eq!(window.since, at(12, 0) - chrono::Duration::days(7));
    assert_eq!(world.config().await.import_since, Some(window.until));
    assert_eq!(run.counts.new, 8);
    assert_eq!(run.findings.map(|f| f.new), Some(24));
}

#[tokio::test]
async fn a_rerun_of_unchanged_data_reports_nothing_new_or_updated_and_moves_the_watermark() {
    let world = World::new(10);
    world.chain("run-1").await.expect("first chain");
    // GIVEN the same data, with the watermark reset so the window covers it again
    world
        .configure(Integration::Containers, |c| c.import_since = Some(at(7, 0)))
        .await;
    world.clock.set(at(13, 0));

    // WHEN the chain runs again
    world.chain("run-2").await.expect("second chain");

    // THEN nothing is new or updated, everything is unchanged
    for integration in Integration::ALL {
        let run = world.run(integration, "run-2").await;
        assert_eq!(
            (run.counts.new, run.counts.updated),
            (0, 0),
            "{integration}"
        );
        assert!(run.counts.unchanged > 0, "{integration}");
    }
    let findings = world
        .run(Integration::Containers, "run-2")
        .await
        .findings
        .expect("counts");
    assert_eq!(
        (findings.new, findings.updated, findings.unchanged),
        (0, 0, 24)
    );
    // AND the watermark moved to this run's bound
    assert_eq!(
        world.config().await.import_since,
        Some(at(13, 0) - chrono::Duration::seconds(30))
    );
}

#[tokio::test]
async fn a_vanished_finding_is_marked_fixed_and_a_new_one_is_added() {
    let world = World::new(5);
    world.chain("run-1").await.expect("first chain");
    let sha = format!("{:064x}", 0);
    // GIVEN container 0 lost QID 200 and gained QID 103, updated after the watermark
    world.qualys.with(|a| {
        let (container, vulns) = a.containers.get_mut(&sha).expect("container 0");
        container.updated = Some(at(12, 10));
        vulns.retain(|v| v.qid != 200);
        vulns.push(vuln(103, &[]));
    });
    world.clock.set(at(12, 30));

    // WHEN the next run syncs
    world.chain("run-2").await.expect("second chain");

    // THEN only container 0 was in the window; QID 200 is fixed, QID 103 open
    let run = world.run(Integration::Containers, "run-2").await;
    assert_eq!(run.counts.fetched, 1);
    assert_eq!(run.counts.updated, 1);
    let findings: Vec<_> = world
        .store
        .all_findings()
        .await
        .expect("read")
        .into_iter()
        .filter(|f| f.container_sha == sha)
        .collect();
    let fixed = findings
        .iter()
        .find(|f| f.qid == 200)
        .expect("kept, not deleted");
    assert_eq!(fixed.status, crate::model::FindingStatus::Fixed);
    assert_eq!(fixed.fixed_at, Some(at(12, 30)));
    assert!(
        findings
            .iter()
            .any(|f| f.qid == 103 && f.status == crate::model::FindingStatus::Open)
    );
}

#[tokio::test]
async fn a_kb_failure_keeps_the_watermark_and_the_next_run_completes_the_kb() {
    let world = World::new(5);
    world.qualys.with(|a| {
        a.kb_error = Some(|| QualysError::AuthFailed {
            reason: "account expired".into(),
        });
    });

    // WHEN the chain runs and the KB step fails for good
    let error = world.chain("run-1").await.expect_err("KB fails");

    // THEN the error is typed, the KB run is failed with an actionable message
    assert_eq!(error.error_type(), "AuthFailed");
    let kb_run = world.run(Integration::Kb, "run-1").await;
    assert_eq!(kb_run.state, RunState::Failed);
    assert!(
        kb_run
            .error
            .as_deref()
            .is_some_and(|e| e.contains("check the secret"))
    );
    // AND the watermark did not move, and nothing found was lost
    assert_eq!(world.config().await.import_since, None);
    assert_eq!(world.store.all_findings().await.expect("read").len(), 4 * 3);
    assert!(world.store.all_kb_entries().await.expect("read").is_empty());

    // WHEN Qualys recovers and the next run starts
    world.qualys.with(|a| a.kb_error = None);
    world.clock.set(at(13, 0));
    world.chain("run-2").await.expect("second chain");

    // THEN the missing KB entries are there and the watermark moved
    assert_eq!(world.store.all_kb_entries().await.expect("read").len(), 5);
    assert!(world.config().await.import_since.is_some());
}

#[tokio::test]
async fn a_rate_limit_leaves_the_run_running_for_the_state_machine_to_retry() {
    let world = World::new(3);
    world.qualys.with(|a| {
        a.kb_error = Some(|| QualysError::RateLimited {
            retry_after: Duration::from_secs(1242),
        });
    });

    let error = world.chain("run-1").await.expect_err("rate limited");

    assert_eq!(error.error_type(), "RateLimited");
    let kb_run = world.run(Integration::Kb, "run-1").await;
    assert_eq!(kb_run.state, RunState::Running);
    assert_eq!(kb_run.error_type.as_deref(), Some("RateLimited"));

    // WHEN the retry comes after the wait
    world.qualys.with(|a| a.kb_error = None);
    let input = StepInput {
        run_id: "run-1".into(),
        trigger: Trigger::Chained,
        page_budget: None,
    };
    let output = run_step(Integration::Kb, world.deps(), &input, far_deadline())
        .await
        .expect("retry");

    // THEN the same run finishes and the watermark moves
    assert_eq!(output.state, RunState::Succeeded);
    assert!(world.config().await.import_since.is_some());
}

#[tokio::test]
async fn a_page_budget_makes_each_step_resume_several_times_with_an_exact_result() {
    let reference = World::new(12);
    reference.chain("run-1").await.expect("reference chain");
    let world = World::new(12);
    world
        .configure(Integration::Containers, |c| c.page_size = 3)
        .await;

    // WHEN every invocation may handle one page only
    let mut invocations = BTreeMap::new();
    let mut step = Some(Integration::Containers);
    let mut input = StepInput {
        run_id: "run-1".into(),
        trigger: Trigger::Manual,
        page_budget: Some(1),
    };
    while let Some(integration) = step {
        loop {
            let output = run_step(integration, world.deps(), &input, far_deadline())
                .await
                .expect("step");
            *invocations.entry(integration).or_insert(0) += 1;
            if !output.more {
                step = output.next;
                break;
            }
        }
        input.trigger = Trigger::Chained;
    }

    // THEN each step returned more: true several times
    assert!(invocations.values().all(|n| *n >= 3), "{invocations:?}");
    // AND the result equals the one-go run
    assert_eq!(
        world.store.all_containers().await.expect("read"),
        reference.store.all_containers().await.expect("read")
    );
    assert_eq!(
        world.store.all_findings().await.expect("read"),
        reference.store.all_findings().await.expect("read")
    );
    assert_eq!(
        world.store.all_images().await.expect("read"),
        reference.store.all_images().await.expect("read")
    );
    assert_eq!(
        world.store.all_kb_entries().await.expect("read"),
        reference.store.all_kb_entries().await.expect("read")
    );
    let run = world.run(Integration::Containers, "run-1").await;
    assert_eq!(run.counts.fetched, 10);
    assert!(run.invocations >= 4);
}

#[tokio::test]
async fn a_bad_config_fails_the_run_with_a_clear_error_and_writes_no_data() {
    for (page_size, filter, since, expected) in [
        (0, "state:'RUNNING'", None, "page size 0"),
        (5000, "state:'RUNNING'", None, "page size 5000"),
        (50, "(state:'RUNNING'", None, "not valid QQL"),
        (50, "state:'RUNNING'", Some(at(23, 0)), "in the future"),
    ] {
        let world = World::new(3);
        let config = IntegrationConfig {
            page_size,
            filter: filter.into(),
            import_since: since,
            ..IntegrationConfig::default_for(Integration::Containers)
        };
        world.store.force_config(config).await;

        let error = world.chain("run-1").await.expect_err("bad config");

        assert_eq!(error.error_type(), "InvalidConfig", "{expected}");
        assert!(
            error.to_string().contains(expected),
            "{error} should say {expected}"
        );
        assert_eq!(
            world.run(Integration::Containers, "run-1").await.state,
            RunState::Failed
        );
        assert!(world.store.all_containers().await.expect("read").is_empty());
        assert!(
            world
                .store
                .pending(crate::store::WorkKind::Image, 10)
                .await
                .expect("read")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn an_inactive_integration_is_skipped_and_says_so() {
    let world = World::new(3);
    world
        .configure(Integration::Images, |c| c.active = false)
        .await;

    let outputs = world.chain("run-1").await.expect("chain");

    assert_eq!(outputs[1].state, RunState::Skipped);
    let run = world.run(Integration::Images, "run-1").await;
    assert!(run.error.as_deref().is_some_and(|e| e.contains("inactive")));
    assert!(world.store.all_images().await.expect("read").is_empty());
    // QIDs 100..=102 and 200 of the three containers
    assert_eq!(world.store.all_kb_entries().await.expect("read").len(), 4);
}

#[tokio::test]
async fn a_finished_step_invoked_again_does_nothing() {
    let world = World::new(3);
    world.chain("run-1").await.expect("chain");
    let before = world.run(Integration::Containers, "run-1").await;

    let output = world
        .containers_step(&manual_input("run-1"))
        .await
        .expect("again");

    assert_eq!(output.state, RunState::Succeeded);
    assert_eq!(world.run(Integration::Containers, "run-1").await, before);
}

#[tokio::test]
async fn a_run_id_that_step_functions_would_refuse_is_rejected() {
    let world = World::new(1);
    let error = world
        .containers_step(&manual_input("has space"))
        .await
        .expect_err("bad id");
    assert_eq!(error.error_type(), "InvalidConfig");
}

#[tokio::test]
async fn an_invocation_near_its_lambda_deadline_saves_and_asks_to_be_called_again() {
    let world = World::new(6);
    let input = manual_input("run-1");

    // WHEN the Lambda has less time left than the deadline margin
    let nearly_over = Instant::now() + Duration::from_secs(5);
    let output = run_step(Integration::Containers, world.deps(), &input, nearly_over)
        .await
        .expect("step");

    // THEN it starts no page, keeps the run open and asks to be invoked again
    assert!(output.more);
    assert_eq!(output.state, RunState::Running);
    assert_eq!(output.next, None);
    let run = world.run(Integration::Containers, "run-1").await;
    assert_eq!((run.state, run.counts.fetched), (RunState::Running, 0));
    assert!(
        run.window.is_some(),
        "the window is fixed at the first invocation"
    );

    // AND the next invocation, with time to spare, finishes the same run
    let output = world.containers_step(&input).await.expect("step");
    assert_eq!((output.more, output.state), (false, RunState::Succeeded));
    assert_eq!(
        world
            .run(Integration::Containers, "run-1")
            .await
            .invocations,
        2
    );
}

#[tokio::test]
async fn a_retry_after_the_last_step_succeeded_still_moves_the_watermark() {
    let world = World::new(3);
    world.chain("run-1").await.expect("chain");
    let moved = world.config().await.import_since.expect("moved");
    // GIVEN the watermark write was lost after the KB run was recorded as succeeded
    world
        .configure(Integration::Containers, |c| c.import_since = None)
        .await;

    // WHEN the state machine retries the KB step
    let input = StepInput {
        run_id: "run-1".into(),
        trigger: Trigger::Chained,
        page_budget: None,
    };
    run_step(Integration::Kb, world.deps(), &input, far_deadline())
        .await
        .expect("retry");

    // THEN the watermark is where the run put it
    assert_eq!(world.config().await.import_since, Some(moved));
}

#[tokio::test]
async fn two_overlapping_runs_keep_their_own_cursors() {
    let world = World::new(12);
    world
        .configure(Integration::Containers, |c| c.page_size = 3)
        .await;
    let first = StepInput {
        run_id: "run-a".into(),
        trigger: Trigger::Schedule,
        page_budget: Some(1),
    };

    // GIVEN run A has synced one page of containers and paused
    let paused = world.containers_step(&first).await.expect("A");
    assert!(paused.more);

    // WHEN a manual run B starts and finishes meanwhile
    world.chain("run-b").await.expect("B");

    // THEN run A resumes where it stopped, instead of listing from the start again
    let resume = StepInput {
        page_budget: None,
        ..first
    };
    let done = world.containers_step(&resume).await.expect("A");
    assert!(!done.more);
    let run_a = world.run(Integration::Containers, "run-a").await;
    assert_eq!(
        run_a.counts.fetched, 10,
        "each running container counted once"
    );
    assert_eq!(run_a.invocations, 2);
}
