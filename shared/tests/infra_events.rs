//! The `events/*.json` inputs for `cargo lambda invoke --data-file` and for starting the
//! state machine, checked against contract D's handler input and the execution input.
//! (Parsed as JSON values until the handler input type exists.)

use std::path::PathBuf;

use serde_json::Value;

fn event(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// Checks a handler input and returns its (run_id, trigger, page_budget).
fn handler_input(name: &str) -> (String, String, Option<u64>) {
    let value = event(name);
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{name} is not an object"));
    for key in object.keys() {
        assert!(
            ["run_id", "trigger", "page_budget"].contains(&key.as_str()),
            "{name} has field {key} that contract D does not define"
        );
    }
    let run_id = object
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{name} needs a string run_id"));
    assert!(!run_id.is_empty(), "{name} has an empty run_id");
    let trigger = object
        .get("trigger")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{name} needs a string trigger"));
    assert!(
        ["schedule", "manual", "chained"].contains(&trigger),
        "{name} has trigger {trigger:?}"
    );
    let page_budget = object.get("page_budget").map(|b| {
        let budget = b
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: page_budget must be a whole number, got {b}"));
        assert!(budget >= 1, "{name}: page_budget must be at least 1");
        budget
    });
    (run_id.to_owned(), trigger.to_owned(), page_budget)
}

#[test]
fn container_events_start_and_resume_one_run() {
    let (first_run, first_trigger, budget) = handler_input("sync-containers-first.json");
    let (resume_run, resume_trigger, _) = handler_input("sync-containers-resume.json");
    assert_eq!(first_run, resume_run, "resume continues the same run");
    assert_eq!(first_trigger, "manual");
    assert_eq!(resume_trigger, first_trigger);
    assert_eq!(
        budget,
        Some(1),
        "the first call stops after one page so there is something to resume"
    );
}

#[test]
fn chained_events_continue_the_container_run() {
    let (container_run, _, _) = handler_input("sync-containers-first.json");
    for name in ["sync-images-chained.json", "sync-kb-chained.json"] {
        let (run_id, trigger, _) = handler_input(name);
        assert_eq!(
            run_id, container_run,
            "{name} belongs to the same chain run"
        );
        assert_eq!(trigger, "chained", "{name}");
    }
}

#[test]
fn state_machine_inputs_name_the_trigger_only() {
    for (name, trigger) in [
        ("statemachine-schedule-input.json", "schedule"),
        ("statemachine-manual-input.json", "manual"),
    ] {
        let value = event(name);
        assert_eq!(value, serde_json::json!({ "trigger": trigger }), "{name}");
    }
    assert_eq!(
        event("statemachine-schedule-input.json").to_string(),
        qcvr::schedule::SCHEDULE_INPUT,
        "the schedules send the same input"
    );
}
