//! The calendar adapters against mocked Scheduler and DynamoDB clients: the exact requests
//! they send and how they treat conflicts, missing schedules and bad items.

use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_scheduler::operation::create_schedule::{CreateScheduleError, CreateScheduleOutput};
use aws_sdk_scheduler::operation::delete_schedule::{DeleteScheduleError, DeleteScheduleOutput};
use aws_sdk_scheduler::operation::list_schedules::ListSchedulesOutput;
use aws_sdk_scheduler::operation::update_schedule::UpdateScheduleOutput;
use aws_sdk_scheduler::types::error::{ConflictException, ResourceNotFoundException};
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindowMode, ScheduleState, ScheduleSummary,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use chrono::{DateTime, Utc};
use qcvr::schedule::{
    CalendarEdge, CalendarEntry, CalendarScheduler, CalendarStore, CalendarStoreError,
    CalendarTarget, OneTimeSchedule, plan_calendar_schedules,
};
use qcvr::store::StoreError;

const GROUP: &str = "qcvr-calendar";
const MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:chain";
const ROLE: &str = "arn:aws:iam::123456789012:role/scheduler";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid RFC 3339 in the test")
        .with_timezone(&Utc)
}

fn target() -> CalendarTarget {
    CalendarTarget {
        group: GROUP.to_owned(),
        state_machine_arn: MACHINE.to_owned(),
        role_arn: ROLE.to_owned(),
    }
}

fn entry(id: &str) -> CalendarEntry {
    CalendarEntry {
        calendar: "ops".to_owned(),
        entry_id: id.to_owned(),
        name: "Patch window".to_owned(),
        start: utc("2026-06-02T22:30:00Z"),
        end: utc("2026-06-03T01:00:00Z"),
    }
}

fn planned(ids: &[&str]) -> Vec<OneTimeSchedule> {
    let entries: Vec<CalendarEntry> = ids.iter().map(|id| entry(id)).collect();
    plan_calendar_schedules(&entries, CalendarEdge::Start, utc("2026-06-01T00:00:00Z"))
        .expect("valid entries")
}

fn summary(name: &str) -> ScheduleSummary {
    ScheduleSummary::builder()
        .name(name)
        .group_name(GROUP)
        .build()
}

#[tokio::test]
async fn sync_creates_new_updates_existing_and_deletes_stale_schedules() {
    // GIVEN a group holding one planned schedule, one stale one and nothing else of ours
    let list = mock!(aws_sdk_scheduler::Client::list_schedules)
        .match_requests(|r| r.group_name() == Some(GROUP) && r.name_prefix() == Some("qcvr."))
        .then_output(|| {
            ListSchedulesOutput::builder()
                .schedules(summary("qcvr.ops.a.start"))
                .schedules(summary("qcvr.ops.old.start"))
                .build()
                .expect("schedules set")
        });
    let create_new = mock!(aws_sdk_scheduler::Client::create_schedule)
        .match_requests(|r| {
            let target = r.target().expect("a target");
            let window = r.flexible_time_window().expect("a time window");
            r.name() == Some("qcvr.ops.b.start")
                && r.group_name() == Some(GROUP)
                && r.schedule_expression() == Some("at(2026-06-02T22:30:00)")
                && r.schedule_expression_timezone() == Some("UTC")
                && r.action_after_completion() == Some(&ActionAfterCompletion::Delete)
                && r.state() == Some(&ScheduleState::Enabled)
                && window.mode() == &FlexibleTimeWindowMode::Off
                && target.arn() == MACHINE
                && target.role_arn() == ROLE
                && target.input() == Some(r#"{"trigger":"schedule"}"#)
        })
        .then_output(|| {
            CreateScheduleOutput::builder()
                .schedule_arn("arn:aws:scheduler:us-east-1:123456789012:schedule/g/b")
                .build()
                .expect("arn set")
        });
    let create_conflict = mock!(aws_sdk_scheduler::Client::create_schedule)
        .match_requests(|r| r.name() == Some("qcvr.ops.a.start"))
        .then_error(|| {
            CreateScheduleError::ConflictException(
                ConflictException::builder()
                    .message("schedule exists")
                    .build()
                    .expect("message set"),
            )
        });
    let update = mock!(aws_sdk_scheduler::Client::update_schedule)
        .match_requests(|r| {
            r.name() == Some("qcvr.ops.a.start")
                && r.schedule_expression() == Some("at(2026-06-02T22:30:00)")
                && r.action_after_completion() == Some(&ActionAfterCompletion::Delete)
        })
        .then_output(|| {
            UpdateScheduleOutput::builder()
                .schedule_arn("arn:aws:scheduler:us-east-1:123456789012:schedule/g/a")
                .build()
                .expect("arn set")
        });
    let delete = mock!(aws_sdk_scheduler::Client::delete_schedule)
        .match_requests(|r| r.name() == Some("qcvr.ops.old.start") && r.group_name() == Some(GROUP))
        .then_output(|| DeleteScheduleOutput::builder().build());
    let client = mock_client!(
        aws_sdk_scheduler,
        RuleMode::MatchAny,
        [&list, &create_new, &create_conflict, &update, &delete]
    );

    // WHEN the planned schedules for entries a and b are synced
    let report = CalendarScheduler::new(client, target())
        .sync(&planned(&["a", "b"]))
        .await
        .expect("sync succeeds");

    // THEN b is created, a rewritten, the stale one deleted, each with one call
    assert_eq!(report.created, ["qcvr.ops.b.start"]);
    assert_eq!(report.updated, ["qcvr.ops.a.start"]);
    assert_eq!(report.deleted, ["qcvr.ops.old.start"]);
    for rule in [&list, &create_new, &create_conflict, &update, &delete] {
        assert_eq!(rule.num_calls(), 1);
    }
}

#[tokio::test]
async fn deleting_a_schedule_that_already_fired_is_fine() {
    let gone = mock!(aws_sdk_scheduler::Client::delete_schedule).then_error(|| {
        DeleteScheduleError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("no such schedule")
                .build()
                .expect("message set"),
        )
    });
    let client = mock_client!(aws_sdk_scheduler, [&gone]);
    CalendarScheduler::new(client, target())
        .delete("qcvr.ops.a.end")
        .await
        .expect("a missing schedule counts as deleted");
    assert_eq!(gone.num_calls(), 1);
}

#[tokio::test]
async fn store_writes_entries_as_rfc3339_strings() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            let item = r.item().expect("an item");
            let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str);
            r.table_name() == Some("test-calendar")
                && s("calendar") == Some("ops")
                && s("entry_id") == Some("a")
                && s("name") == Some("Patch window")
                && s("start") == Some("2026-06-02T22:30:00+00:00")
                && s("end") == Some("2026-06-03T01:00:00+00:00")
                && item.len() == 5
        })
        .then_output(|| PutItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, [&put]);
    CalendarStore::new(client, "test-")
        .put(&entry("a"))
        .await
        .expect("put succeeds");
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn store_refuses_an_invalid_entry_without_calling_dynamodb() {
    let put =
        mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| PutItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, [&put]);
    let mut bad = entry("a");
    bad.entry_id = "has space".to_owned();
    let err = CalendarStore::new(client, "test-")
        .put(&bad)
        .await
        .expect_err("invalid entry id");
    assert!(matches!(err, CalendarStoreError::Invalid(_)), "{err}");
    assert_eq!(put.num_calls(), 0);
}

fn item(entry_id: &str, start: &str) -> std::collections::HashMap<String, AttributeValue> {
    [
        ("calendar", "ops"),
        ("entry_id", entry_id),
        ("name", "Patch window"),
        ("start", start),
        ("end", "2026-06-03T01:00:00Z"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
    .collect()
}

#[tokio::test]
async fn store_lists_a_calendar_across_pages() {
    let pages = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| {
            r.table_name() == Some("test-calendar")
                && r.expression_attribute_values()
                    .and_then(|v| v.get(":calendar"))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|c| c == "ops")
        })
        .sequence()
        .output(|| {
            QueryOutput::builder()
                .items(item("a", "2026-06-02T22:30:00Z"))
                .last_evaluated_key("entry_id", AttributeValue::S("a".to_owned()))
                .last_evaluated_key("calendar", AttributeValue::S("ops".to_owned()))
                .build()
        })
        .output(|| {
            QueryOutput::builder()
                .items(item("b", "2026-06-02T23:30:00+01:00"))
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_dynamodb, [&pages]);
    let entries = CalendarStore::new(client, "test-")
        .list("ops")
        .await
        .expect("list succeeds");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], entry("a"));
    assert_eq!(entries[1].entry_id, "b");
    assert_eq!(entries[1].start, utc("2026-06-02T22:30:00Z"));
    assert_eq!(pages.num_calls(), 2);
}

#[tokio::test]
async fn store_reports_an_unreadable_item_as_corrupt() {
    let query = mock!(aws_sdk_dynamodb::Client::query).then_output(|| {
        QueryOutput::builder()
            .items(item("a", "next tuesday"))
            .build()
    });
    let client = mock_client!(aws_sdk_dynamodb, [&query]);
    let err = CalendarStore::new(client, "test-")
        .list("ops")
        .await
        .expect_err("bad start");
    match err {
        StoreError::Corrupt { table, key, detail } => {
            assert_eq!(table, "test-calendar");
            assert_eq!(key, "ops/a");
            assert!(detail.contains("start"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}
