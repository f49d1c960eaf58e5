//! The `events/*.json` inputs for `cargo lambda invoke --data-file` and for starting the
//! state machine: each function input must parse into the handlers' own [`StepInput`]
//! (which refuses unknown fields), and each execution input must carry the fields the state
//! machine reads (`trigger`, optional `page_budget`) and nothing else.

use std::path::PathBuf;

use qcvr::run::Trigger;
use qcvr::sync::StepInput;
use serde_json::Value;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn read(name: &str) -> String {
    let path = events_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A function input, parsed as the handlers parse it.
fn step_input(name: &str) -> StepInput {
    serde_json::from_str(&read(name))
        .unwrap_or_else(|e| panic!("{name} is not a handler input (contract D): {e}"))
}

/// An execution input: `{"trigger": "schedule"|"manual", "page_budget"?: N}`.
fn execution_input(name: &str) -> Value {
    let value: Value =
        serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{name} is not an object"));
    for key in object.keys() {
        assert!(
            ["trigger", "page_budget"].contains(&key.as_str()),
            "{name} has field {key}, which the state machine does not read"
        );
    }
    let trigger: Trigger =
        serde_json::from_value(object.get("trigger").cloned().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name} needs a trigger the handlers accept: {e}"));
    assert_ne!(
        trigger,
        Trigger::Chained,
        "{name}: executions are started by a schedule or a person"
    );
    if let Some(budget) = object.get("page_budget") {
        assert!(
            budget
                .as_u64()
                .is_some_and(|b| (1..=u64::from(u32::MAX)).contains(&b)),
            "{name}: page_budget must be a whole number from 1, got {budget}"
        );
    }
    value
}

#[test]
fn every_event_file_is_a_handler_or_an_execution_input() {
    let mut names: Vec<String> = std::fs::read_dir(events_dir())
        .expect("events/ exists")
        .map(|entry| {
            entry
                .expect("events/ is readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert!(names.len() >= 6, "events/ holds {names:?}");
    for name in &names {
        assert!(name.ends_with(".json"), "{name} is not a JSON event");
        if name.starts_with("statemachine-") {
            execution_input(name);
        } else if name.starts_with("sync-") {
            step_input(name);
        } else {
            panic!("{name}: event files are named sync-<function>-… or statemachine-…");
        }
    }
}

#[test]
fn container_events_start_and_resume_one_run() {
    let first = step_input("sync-containers-first.json");
    let resume = step_input("sync-containers-resume.json");
    assert_eq!(first.run_id, resume.run_id, "resume continues the same run");
    assert_eq!(first.trigger, Trigger::Manual);
    assert_eq!(resume.trigger, first.trigger);
    assert_eq!(
        first.page_budget,
        Some(1),
        "the first call stops after one page so there is something to resume"
    );
    assert_eq!(
        resume.page_budget, None,
        "the resume call finishes the step"
    );
}

#[test]
fn chained_events_continue_the_container_run() {
    let first = step_input("sync-containers-first.json");
    for name in ["sync-images-chained.json", "sync-kb-chained.json"] {
        let input = step_input(name);
        assert_eq!(
            input.run_id, first.run_id,
            "{name} belongs to the same chain run"
        );
        assert_eq!(input.trigger, Trigger::Chained, "{name}");
    }
}

#[test]
fn state_machine_inputs_name_the_trigger_only() {
    for (name, trigger) in [
        ("statemachine-schedule-input.json", "schedule"),
        ("statemachine-manual-input.json", "manual"),
    ] {
        assert_eq!(
            execution_input(name),
            serde_json::json!({ "trigger": trigger }),
            "{name}"
        );
    }
    assert_eq!(
        execution_input("statemachine-schedule-input.json").to_string(),
        qcvr::schedule::SCHEDULE_INPUT,
        "the schedules send the same input"
    );
}
