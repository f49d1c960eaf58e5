//! Checks of `infra/template.yaml` and `infra/statemachine/qcvr-chain.asl.json` that neither
//! cfn-lint nor statelint makes: placeholders against `DefinitionSubstitutions`, error names
//! against the handlers' error types, tables against contract C, policies against what each
//! function touches, environment against contract D.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use qcvr::config::RunType;
use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// Turns CloudFormation's short tags into their long JSON forms (`!Ref X` → `{"Ref": X}`,
/// `!GetAtt A.B` → `{"Fn::GetAtt": "A.B"}`), so the template reads as plain JSON.
fn cfn_to_json(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).expect("a YAML number is a JSON number"),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(cfn_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => panic!("non-string key {other:?} in the template"),
                    };
                    (key, cfn_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let key = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            json!({ key: cfn_to_json(tagged.value) })
        }
    }
}

fn template() -> Value {
    let yaml: serde_norway::Value =
        serde_norway::from_str(&repo_file("infra/template.yaml")).expect("template is YAML");
    cfn_to_json(yaml)
}

fn asl() -> Value {
    serde_json::from_str(&repo_file("infra/statemachine/qcvr-chain.asl.json"))
        .expect("the state machine definition is valid JSON")
}

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    &template["Resources"][name]
}

fn strings(value: &Value) -> BTreeSet<String> {
    match value {
        Value::String(s) => BTreeSet::from([s.clone()]),
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

/// Every `${Name}` in a text.
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("every ${ is closed");
        found.insert(after[..end].to_owned());
        rest = &after[end..];
    }
    found
}

#[test]
fn asl_placeholders_and_definition_substitutions_match() {
    let template = template();
    let machine = &resource(&template, "ChainStateMachine")["Properties"];
    assert_eq!(machine["DefinitionUri"], "statemachine/qcvr-chain.asl.json");

    let substitutions: BTreeSet<String> = machine["DefinitionSubstitutions"]
        .as_object()
        .expect("DefinitionSubstitutions is a map")
        .keys()
        .cloned()
        .collect();
    let used = placeholders(&repo_file("infra/statemachine/qcvr-chain.asl.json"));
    assert_eq!(used, substitutions);
    assert_eq!(
        machine["DefinitionSubstitutions"]["RunsTableName"],
        json!({"Ref": "RunsTable"})
    );
    for (placeholder, function) in [
        ("SyncContainersFunctionArn", "SyncContainersFunction.Arn"),
        ("SyncImagesFunctionArn", "SyncImagesFunction.Arn"),
        ("SyncKbFunctionArn", "SyncKbFunction.Arn"),
    ] {
        assert_eq!(
            machine["DefinitionSubstitutions"][placeholder],
            json!({"Fn::GetAtt": function})
        );
    }
}

/// Error names a Retry or Catch may match: the handlers' `error_type`s (contract D), the
/// Lambda service errors, the DynamoDB integration's, and `States.ALL`.
const KNOWN_ERRORS: [&str; 14] = [
    "RateLimited",
    "Transient",
    "AuthFailed",
    "InvalidConfig",
    "QualysError",
    "StoreError",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "DynamoDB.ProvisionedThroughputExceededException",
    "DynamoDB.ThrottlingException",
    "DynamoDB.InternalServerErrorException",
    "States.ALL",
];

fn states(asl: &Value) -> &serde_json::Map<String, Value> {
    asl["States"].as_object().expect("States is a map")
}

fn error_names(rules: &Value) -> Vec<BTreeSet<String>> {
    rules
        .as_array()
        .map(|rules| rules.iter().map(|r| strings(&r["ErrorEquals"])).collect())
        .unwrap_or_default()
}

#[test]
fn every_task_retries_and_catches_only_known_errors() {
    let asl = asl();
    let tasks: Vec<(&String, &Value)> = states(&asl)
        .iter()
        .filter(|(_, s)| s["Type"] == "Task")
        .collect();
    assert_eq!(tasks.len(), 4, "three sync tasks and RecordFailure");
    for (name, task) in tasks {
        for rule in error_names(&task["Retry"])
            .into_iter()
            .chain(error_names(&task["Catch"]))
        {
            for error in &rule {
                assert!(
                    KNOWN_ERRORS.contains(&error.as_str()),
                    "{name} names unknown error {error}"
                );
            }
        }
        let catch = error_names(&task["Catch"]);
        assert_eq!(
            catch,
            [BTreeSet::from(["States.ALL".to_owned()])],
            "{name} catches everything"
        );
    }
}

#[test]
fn sync_tasks_retry_transient_errors_only_and_record_failures() {
    let asl = asl();
    let states = states(&asl);
    for (task, integration, payload, placeholder) in [
        (
            "SyncContainers",
            "containers",
            "$.first",
            "${SyncContainersFunctionArn}",
        ),
        (
            "SyncImages",
            "images",
            "$.chained",
            "${SyncImagesFunctionArn}",
        ),
        ("SyncKb", "kb", "$.chained", "${SyncKbFunctionArn}"),
    ] {
        let state = &states[task];
        assert_eq!(state["Resource"], "arn:aws:states:::lambda:invoke");
        assert_eq!(state["Parameters"]["FunctionName"], placeholder);
        assert_eq!(state["Parameters"]["Payload.$"], payload);
        assert_eq!(
            state["ResultSelector"],
            json!({"more.$": "$.Payload.more", "next.$": "$.Payload.next",
                   "state.$": "$.Payload.state", "counts.$": "$.Payload.counts"})
        );

        let retried: BTreeSet<String> =
            error_names(&state["Retry"]).into_iter().flatten().collect();
        let expected: BTreeSet<String> = [
            "RateLimited",
            "Transient",
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(
            retried, expected,
            "{task}: AuthFailed, InvalidConfig etc. must not retry"
        );

        let rate_limited = &state["Retry"][0];
        assert_eq!(rate_limited["ErrorEquals"], json!(["RateLimited"]));
        assert!(rate_limited["IntervalSeconds"].as_u64() >= Some(10));

        let failed = &states[state["Catch"][0]["Next"].as_str().expect("Catch has Next")];
        assert_eq!(failed["Type"], "Pass");
        assert_eq!(failed["Result"], integration);
        assert_eq!(failed["Next"], "RecordFailure");

        let more = &states[state["Next"].as_str().expect("Next")];
        assert_eq!(more["Choices"][0]["Variable"], "$.last.more");
        assert_eq!(
            more["Choices"][0]["Next"], task,
            "{task} loops while more is true"
        );
    }
}

#[test]
fn chain_starts_containers_with_the_execution_name_as_run_id() {
    let asl = asl();
    let states = states(&asl);
    for start in ["StartRun", "StartRunWithPageBudget"] {
        let parameters = &states[start]["Parameters"];
        assert_eq!(parameters["first"]["run_id.$"], "$$.Execution.Name");
        assert_eq!(parameters["first"]["trigger.$"], "$.trigger");
        assert_eq!(parameters["chained"]["run_id.$"], "$$.Execution.Name");
        assert_eq!(parameters["chained"]["trigger"], "chained");
        assert_eq!(states[start]["Next"], "SyncContainers");
    }
    assert_eq!(
        states["StartRunWithPageBudget"]["Parameters"]["first"]["page_budget.$"],
        "$.page_budget"
    );
    assert!(
        states["StartRun"]["Parameters"]["first"]
            .get("page_budget.$")
            .is_none()
    );
}

#[test]
fn record_failure_marks_only_a_running_run_record_failed() {
    let asl = asl();
    let record = &states(&asl)["RecordFailure"];
    assert_eq!(record["Resource"], "arn:aws:states:::dynamodb:updateItem");
    let p = &record["Parameters"];
    assert_eq!(p["TableName"], "${RunsTableName}");
    assert_eq!(
        p["Key"],
        json!({"integration": {"S.$": "$.failed_integration"},
               "run_id": {"S.$": "$$.Execution.Name"}})
    );
    let names = &p["ExpressionAttributeNames"];
    for (alias, attribute) in [
        ("#state", "state"),
        ("#error_type", "error_type"),
        ("#error", "error"),
        ("#ended_at", "ended_at"),
        ("#run_id", "run_id"),
    ] {
        assert_eq!(names[alias], attribute);
    }
    assert_eq!(
        p["UpdateExpression"],
        "SET #state = :failed, #error_type = :error_type, #error = :error, #ended_at = :ended_at"
    );
    assert_eq!(
        p["ConditionExpression"],
        "attribute_exists(#run_id) AND #state = :running"
    );
    let values = &p["ExpressionAttributeValues"];
    assert_eq!(values[":failed"], json!({"S": "failed"}));
    assert_eq!(values[":running"], json!({"S": "running"}));
    assert_eq!(values[":error_type"], json!({"S.$": "$.error.Error"}));
    assert_eq!(values[":error"], json!({"S.$": "$.error.Cause"}));
    assert_eq!(values[":ended_at"], json!({"S.$": "$$.State.EnteredTime"}));
    assert_eq!(record["Catch"][0]["Next"], "ChainFailed");
    assert_eq!(record["Next"], "ChainFailed");
}

/// (table, keys as (name, type, role), LSI (name, sort key)) per contract C.
type TableSpec = (
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
    Option<(&'static str, &'static str)>,
);

const TABLES: [(&str, TableSpec); 8] = [
    (
        "ConfigTable",
        ("config", &[("integration", "S", "HASH")], None),
    ),
    (
        "RunsTable",
        (
            "runs",
            &[("integration", "S", "HASH"), ("run_id", "S", "RANGE")],
            Some(("by_started", "started_at")),
        ),
    ),
    (
        "WorkTable",
        (
            "work",
            &[("kind", "S", "HASH"), ("key", "S", "RANGE")],
            None,
        ),
    ),
    (
        "ContainersTable",
        ("containers", &[("sha", "S", "HASH")], None),
    ),
    (
        "FindingsTable",
        (
            "findings",
            &[
                ("container_sha", "S", "HASH"),
                ("finding_key", "S", "RANGE"),
            ],
            None,
        ),
    ),
    ("ImagesTable", ("images", &[("sha", "S", "HASH")], None)),
    ("KbTable", ("kb", &[("qid", "N", "HASH")], None)),
    (
        "CalendarTable",
        (
            "calendar",
            &[("calendar", "S", "HASH"), ("entry_id", "S", "RANGE")],
            None,
        ),
    ),
];

#[test]
fn tables_follow_contract_c() {
    let template = template();
    let declared: BTreeSet<&String> = template["Resources"]
        .as_object()
        .expect("Resources is a map")
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::DynamoDB::Table")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(declared.len(), TABLES.len());

    for (logical, (name, keys, lsi)) in TABLES {
        let table = &resource(&template, logical)["Properties"];
        assert_eq!(
            table["TableName"],
            json!({"Fn::Sub": format!("${{TablePrefix}}{name}")})
        );
        assert_eq!(
            table["BillingMode"], "PAY_PER_REQUEST",
            "{name} is on-demand"
        );
        assert_eq!(
            table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{name} has point-in-time recovery"
        );
        let key_schema: Vec<(String, String)> = keys
            .iter()
            .map(|(k, _, role)| ((*k).to_owned(), (*role).to_owned()))
            .collect();
        let declared_keys: Vec<(String, String)> = table["KeySchema"]
            .as_array()
            .expect("KeySchema")
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().expect("name").to_owned(),
                    k["KeyType"].as_str().expect("type").to_owned(),
                )
            })
            .collect();
        assert_eq!(declared_keys, key_schema, "{name} keys");

        let mut attributes: BTreeMap<String, String> = keys
            .iter()
            .map(|(k, t, _)| ((*k).to_owned(), (*t).to_owned()))
            .collect();
        if let Some((index, sort_key)) = lsi {
            attributes.insert(sort_key.to_owned(), "S".to_owned());
            let indexes = table["LocalSecondaryIndexes"].as_array().expect("LSIs");
            assert_eq!(indexes.len(), 1);
            assert_eq!(indexes[0]["IndexName"], index);
            assert_eq!(
                indexes[0]["KeySchema"],
                json!([{"AttributeName": keys[0].0, "KeyType": "HASH"},
                       {"AttributeName": sort_key, "KeyType": "RANGE"}])
            );
        } else {
            assert!(table.get("LocalSecondaryIndexes").is_none());
        }
        let declared_attributes: BTreeMap<String, String> = table["AttributeDefinitions"]
            .as_array()
            .expect("AttributeDefinitions")
            .iter()
            .map(|a| {
                (
                    a["AttributeName"].as_str().expect("name").to_owned(),
                    a["AttributeType"].as_str().expect("type").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            declared_attributes, attributes,
            "{name} attribute definitions"
        );
    }
}

/// The DynamoDB actions the store's adapter (`shared/src/store/dynamo.rs`) calls on each
/// table from a Lambda function; a policy grants exactly these.
fn actions_the_store_uses(table: &str) -> BTreeSet<String> {
    let actions: &[&str] = match table {
        "ConfigTable" | "RunsTable" => &["GetItem", "PutItem"],
        "WorkTable" => &[
            "GetItem",
            "PutItem",
            "DeleteItem",
            "Query",
            "BatchWriteItem",
        ],
        "ContainersTable" | "ImagesTable" | "KbTable" => &["BatchGetItem", "BatchWriteItem"],
        "FindingsTable" => &["Query", "BatchWriteItem"],
        other => panic!("no function should touch {other}"),
    };
    actions.iter().map(|a| format!("dynamodb:{a}")).collect()
}

fn statements(policies: &Value) -> Vec<&Value> {
    policies
        .as_array()
        .expect("Policies is a list")
        .iter()
        .flat_map(|p| p["Statement"].as_array().expect("inline statements").iter())
        .collect()
}

/// The table resource a statement's Resource names: `{"Fn::GetAtt": "RunsTable.Arn"}` or a
/// `Fn::Sub` of its index.
fn table_of(resource: &Value) -> String {
    let text = resource
        .get("Fn::GetAtt")
        .or_else(|| resource.get("Fn::Sub"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("unexpected policy resource {resource}"));
    let logical = text.trim_start_matches("${");
    logical.split('.').next().expect("a logical id").to_owned()
}

#[test]
fn each_function_may_touch_only_its_tables_and_the_secret() {
    let template = template();
    for (function, binary, tables) in [
        (
            "SyncContainersFunction",
            "sync-containers",
            &[
                "ConfigTable",
                "RunsTable",
                "WorkTable",
                "ContainersTable",
                "FindingsTable",
            ][..],
        ),
        (
            "SyncImagesFunction",
            "sync-images",
            &["ConfigTable", "RunsTable", "WorkTable", "ImagesTable"][..],
        ),
        (
            "SyncKbFunction",
            "sync-kb",
            &["ConfigTable", "RunsTable", "WorkTable", "KbTable"][..],
        ),
    ] {
        let f = resource(&template, function);
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda");
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], binary);
        assert_eq!(f["Properties"]["CodeUri"], "..");

        let mut touched = BTreeSet::new();
        let mut secret_statements = 0;
        for statement in statements(&f["Properties"]["Policies"]) {
            assert_eq!(statement["Effect"], "Allow");
            let actions = strings(&statement["Action"]);
            if actions.iter().all(|a| a.starts_with("dynamodb:")) {
                for r in statement["Resource"].as_array().expect("resource list") {
                    let table = table_of(r);
                    assert_eq!(
                        actions,
                        actions_the_store_uses(&table),
                        "{function} on {table}"
                    );
                    touched.insert(table);
                }
            } else {
                assert_eq!(
                    actions,
                    BTreeSet::from(["secretsmanager:GetSecretValue".to_owned()])
                );
                assert_eq!(statement["Resource"], json!({"Ref": "QualysSecretArn"}));
                secret_statements += 1;
            }
        }
        let expected: BTreeSet<String> = tables.iter().map(|t| (*t).to_owned()).collect();
        assert_eq!(touched, expected, "{function}'s tables");
        assert_eq!(secret_statements, 1, "{function} reads the secret");
    }
}

#[test]
fn functions_get_the_environment_of_contract_d() {
    let template = template();
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"], json!(["arm64"]));
    assert_eq!(globals["Timeout"], json!({"Ref": "FunctionTimeout"}));
    assert_eq!(globals["MemorySize"], json!({"Ref": "FunctionMemorySize"}));
    let variables: BTreeSet<String> = globals["Environment"]["Variables"]
        .as_object()
        .expect("variables")
        .keys()
        .cloned()
        .collect();
    let contract: BTreeSet<String> = [
        "QCVR_TABLE_PREFIX",
        "QCVR_QUALYS_SECRET_ID",
        "QCVR_QUALYS_API_URL",
        "QCVR_QUALYS_GATEWAY_URL",
        "QCVR_DETAIL_CONCURRENCY",
        "QCVR_KB_BATCH_SIZE",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(variables, contract);
    assert_eq!(
        globals["Environment"]["Variables"]["QCVR_QUALYS_SECRET_ID"],
        json!({"Ref": "QualysSecretArn"})
    );
}

#[test]
fn state_machine_role_invokes_the_functions_and_updates_runs_only() {
    let template = template();
    let policies = &resource(&template, "ChainStateMachine")["Properties"]["Policies"];
    let mut actions = BTreeSet::new();
    for statement in statements(policies) {
        let these = strings(&statement["Action"]);
        if these.contains("lambda:InvokeFunction") {
            assert_eq!(
                statement["Resource"],
                json!([{"Fn::GetAtt": "SyncContainersFunction.Arn"},
                       {"Fn::GetAtt": "SyncImagesFunction.Arn"},
                       {"Fn::GetAtt": "SyncKbFunction.Arn"}])
            );
        } else if these.contains("dynamodb:UpdateItem") {
            assert_eq!(these.len(), 1);
            assert_eq!(
                statement["Resource"],
                json!({"Fn::GetAtt": "RunsTable.Arn"})
            );
        } else {
            assert!(these.iter().all(|a| a.starts_with("logs:")), "{these:?}");
        }
        actions.extend(these);
    }
    assert!(actions.contains("logs:CreateLogDelivery"));
}

#[test]
fn run_type_parameter_lists_every_run_type_and_the_schedule_sends_trigger_schedule() {
    let template = template();
    let allowed = strings(&template["Parameters"]["RunType"]["AllowedValues"]);
    let run_types: BTreeSet<String> = [
        RunType::Daily,
        RunType::Weekly,
        RunType::Monthly,
        RunType::Periodically,
        RunType::Once,
        RunType::OnDemand,
        RunType::CalendarStart,
        RunType::CalendarEnd,
    ]
    .iter()
    .map(|r| {
        serde_json::to_value(r)
            .expect("serialises")
            .as_str()
            .expect("a string")
            .to_owned()
    })
    .collect();
    assert_eq!(allowed, run_types);

    let schedule = resource(&template, "ChainSchedule");
    assert_eq!(schedule["Type"], "AWS::Scheduler::Schedule");
    assert_eq!(schedule["Condition"], "HasRecurringSchedule");
    let target = &schedule["Properties"]["Target"];
    assert_eq!(target["Arn"], json!({"Ref": "ChainStateMachine"}));
    let input: Value =
        serde_json::from_str(target["Input"].as_str().expect("input text")).expect("input is JSON");
    assert_eq!(input, json!({"trigger": "schedule"}));
    assert_eq!(input.to_string(), qcvr::schedule::SCHEDULE_INPUT);
    assert_eq!(
        schedule["Properties"]["ScheduleExpression"],
        json!({"Ref": "ScheduleExpression"})
    );
}
