//! The DynamoDB adapter of [`super::Store`]: tables `{prefix}{name}` as contract C lays them
//! out, items as plain attributes, and writes only of what changed.
//!
//! Every data item carries `content_hash`, the sha256 of its record's JSON form. Upserts read
//! the stored hashes first (BatchGetItem) and write only new or changed items
//! (BatchWriteItem), so an unchanged re-sync costs reads only. Partial batch results
//! (`UnprocessedKeys`, `UnprocessedItems`) are retried with backoff, a bounded number of times.
//! Long text is trimmed to keep items under DynamoDB's 400 KB limit; the trimmed field names
//! are listed in the item's `truncated_fields`.

mod codec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    KeysAndAttributes, LocalSecondaryIndex, Projection, ProjectionType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{Integration, IntegrationConfig};
use crate::model::{Container, Finding, FindingStatus, Image, KbEntry};
use crate::run::{Counts, RunRecord};

use self::codec::Item;
use super::plan::{self, Planner, StoredFinding};
use super::{ContainerOutcome, StepCursor, Store, StoreError, WorkKind};

/// Environment variable naming the table prefix.
pub const TABLE_PREFIX_ENV: &str = "QCVR_TABLE_PREFIX";

/// The table prefix when [`TABLE_PREFIX_ENV`] is unset.
pub const DEFAULT_TABLE_PREFIX: &str = "qcvr-";

/// Table holding one config item per integration.
pub const CONFIG_TABLE: &str = "config";
/// Table holding run records.
pub const RUNS_TABLE: &str = "runs";
/// Local secondary index of the runs table sorted on `started_at`.
pub const RUNS_BY_STARTED_INDEX: &str = "by_started";
/// Table holding pending images and QIDs and the step cursors.
pub const WORK_TABLE: &str = "work";
/// Table holding containers.
pub const CONTAINERS_TABLE: &str = "containers";
/// Table holding findings.
pub const FINDINGS_TABLE: &str = "findings";
/// Table holding images.
pub const IMAGES_TABLE: &str = "images";
/// Table holding KnowledgeBase entries.
pub const KB_TABLE: &str = "kb";
/// Table holding business-calendar entries.
pub const CALENDAR_TABLE: &str = "calendar";

/// Items are kept below this many bytes by trimming long text (DynamoDB's limit is 400 KB).
const ITEM_BUDGET: usize = 350 * 1024;
/// DynamoDB's own item size limit.
const ITEM_LIMIT: usize = 400 * 1024;
/// Keys per BatchGetItem request.
const GET_CHUNK: usize = 100;
/// Requests per BatchWriteItem request.
const WRITE_CHUNK: usize = 25;
/// Longest pause between two retries of a partial batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Long text fields of a finding item that may be trimmed.
const FINDING_TEXT: &[&str] = &["result"];
/// Long text fields of a KB item that may be trimmed.
const KB_TEXT: &[&str] = &["diagnosis", "consequence", "solution"];

/// The `work` item kind of step cursors.
const CURSOR_KIND: &str = "cursor";

/// The `work` key of a run's cursor: `integration#run_id`.
fn cursor_key(integration: Integration, run_id: &str) -> String {
    format!("{integration}#{run_id}")
}

/// The DynamoDB [`Store`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    prefix: String,
    batch_attempts: u32,
    first_backoff: Duration,
}

impl DynamoStore {
    /// A store on the tables `{prefix}config`, `{prefix}runs`, ...
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        DynamoStore {
            client,
            prefix: prefix.into(),
            batch_attempts: 8,
            first_backoff: Duration::from_millis(50),
        }
    }

    /// A store whose prefix comes from `QCVR_TABLE_PREFIX` (default `qcvr-`).
    pub fn from_env(client: Client) -> Self {
        DynamoStore::new(client, table_prefix_from_env())
    }

    /// Sets how often a batch with unprocessed items is sent (at least once) and the pause
    /// before the first retry (doubling after each, up to 5 s). Defaults: 8 and 50 ms.
    pub fn with_batch_retry(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.batch_attempts = attempts.max(1);
        self.first_backoff = first_backoff;
        self
    }

    /// The table prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of one of the tables.
    pub fn table(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.first_backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// The table prefix from `QCVR_TABLE_PREFIX`, or `qcvr-`.
pub fn table_prefix_from_env() -> String {
    std::env::var(TABLE_PREFIX_ENV).unwrap_or_else(|_| DEFAULT_TABLE_PREFIX.to_owned())
}

/// An SDK error with its whole context in its message (the SDK's own says only "service
/// error").
#[derive(Debug)]
struct SdkFailure(Box<dyn Error + Send + Sync>);

impl fmt::Display for SdkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", DisplayErrorContext(&*self.0))
    }
}

impl Error for SdkFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// Error codes that mean the item or request qcvr built is wrong.
const BAD_ITEM_CODES: &[&str] = &[
    "ValidationException",
    "SerializationException",
    "ItemCollectionSizeLimitExceededException",
];

/// Maps an SDK error: a missing table, a bad item, or (everything else: throttling, 5xx,
/// timeouts, connection failures) a failure that a later retry may get past.
fn sdk_error<E>(
    operation: &'static str,
    table: &str,
    key: &str,
    err: SdkError<E, HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let status = err.raw_response().map(|r| r.status().as_u16());
    let bad_item = match &err {
        SdkError::ConstructionFailure(_) => true,
        SdkError::ServiceError(_) => code.as_deref().is_some_and(|c| BAD_ITEM_CODES.contains(&c)),
        _ => false,
    };
    if code.as_deref() == Some("ResourceNotFoundException") {
        return StoreError::MissingTable {
            table: table.to_owned(),
        };
    }
    if bad_item && status.is_none_or(|s| s < 500) {
        return StoreError::Corrupt {
            table: table.to_owned(),
            key: key.to_owned(),
            detail: format!(
                "DynamoDB refused {operation}: {}",
                DisplayErrorContext(&err)
            ),
        };
    }
    StoreError::Unavailable {
        operation,
        table: table.to_owned(),
        source: Box::new(SdkFailure(Box::new(err))),
    }
}

fn corrupt(table: &str, key: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table: table.to_owned(),
        key: key.to_owned(),
        detail: detail.into(),
    }
}

fn built<T>(result: Result<T, BuildError>, table: &str, key: &str) -> Result<T, StoreError> {
    result.map_err(|e| corrupt(table, key, format!("request cannot be built: {e}")))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn put(item: Item, table: &str) -> Result<WriteRequest, StoreError> {
    let request = built(
        PutRequest::builder().set_item(Some(item)).build(),
        table,
        "-",
    )?;
    Ok(WriteRequest::builder().put_request(request).build())
}

fn delete(key: Item, table: &str) -> Result<WriteRequest, StoreError> {
    let request = built(
        DeleteRequest::builder().set_key(Some(key)).build(),
        table,
        "-",
    )?;
    Ok(WriteRequest::builder().delete_request(request).build())
}

/// A data item: the record's attributes, its key attributes, `content_hash`, and long text
/// trimmed to the item budget.
fn data_item<T: Serialize>(
    record: &T,
    table: &str,
    key: &str,
    extra: &[(&str, AttributeValue)],
    text_fields: &[&str],
    already_truncated: &[String],
) -> Result<Item, StoreError> {
    let hash = plan::content_hash(record, table, key)?;
    let mut item = codec::to_item(record).map_err(|e| corrupt(table, key, e))?;
    for (name, value) in extra {
        item.insert((*name).to_owned(), value.clone());
    }
    item.insert("content_hash".to_owned(), s(hash));
    let size = codec::fit(&mut item, text_fields, ITEM_BUDGET, already_truncated);
    if size > ITEM_LIMIT {
        return Err(corrupt(
            table,
            key,
            format!(
                "the item is {size} bytes even with long text trimmed, over DynamoDB's 400 KB \
                 limit; the record has too many list entries to store"
            ),
        ));
    }
    Ok(item)
}

fn decode<T: DeserializeOwned>(item: &Item, table: &str, key: &str) -> Result<T, StoreError> {
    codec::from_item(item).map_err(|e| corrupt(table, key, e))
}

/// The textual key of an item (S or N attribute `name`).
fn key_text(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(v) | AttributeValue::N(v)) => v.clone(),
        _ => "?".to_owned(),
    }
}

fn run_item(run: &RunRecord, table: &str) -> Result<Item, StoreError> {
    let key = run.run_id.as_str();
    let Ok(Value::Object(mut fields)) = serde_json::to_value(run) else {
        return Err(corrupt(table, key, "run record cannot be serialised"));
    };
    fields.remove("window");
    fields.insert(
        "started_at".to_owned(),
        Value::String(codec::fixed_time(run.started_at)),
    );
    if let Some(ended) = run.ended_at {
        fields.insert(
            "ended_at".to_owned(),
            Value::String(codec::fixed_time(ended)),
        );
    }
    if let Some(window) = run.window {
        let since = codec::fixed_time(window.since);
        let until = codec::fixed_time(window.until);
        fields.insert("window_since".to_owned(), Value::String(since));
        fields.insert("window_until".to_owned(), Value::String(until));
    }
    Ok(codec::object_to_item(fields))
}

fn run_from_item(item: &Item, table: &str) -> Result<RunRecord, StoreError> {
    let key = key_text(item, "run_id");
    let mut fields = codec::item_to_object(item).map_err(|e| corrupt(table, &key, e))?;
    let since = fields.remove("window_since");
    let until = fields.remove("window_until");
    if let (Some(since), Some(until)) = (since, until) {
        let window = serde_json::json!({ "since": since, "until": until });
        fields.insert("window".to_owned(), window);
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| corrupt(table, &key, e.to_string()))
}

fn work_item_key(kind: &str, key: String) -> Item {
    HashMap::from([("kind".to_owned(), s(kind)), ("key".to_owned(), s(key))])
}

impl DynamoStore {
    /// Writes `requests` to `table` in batches of 25, resending unprocessed ones with backoff.
    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        for chunk in requests.chunks(WRITE_CHUNK) {
            let mut unprocessed = HashMap::from([(table.to_owned(), chunk.to_vec())]);
            let mut attempt = 1;
            loop {
                let out = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(unprocessed))
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchWriteItem", table, "batch", e))?;
                unprocessed = out.unprocessed_items.unwrap_or_default();
                unprocessed.retain(|_, requests| !requests.is_empty());
                let left: usize = unprocessed.values().map(Vec::len).sum();
                if left == 0 {
                    break;
                }
                if attempt >= self.batch_attempts {
                    return Err(StoreError::Unavailable {
                        operation: "BatchWriteItem",
                        table: table.to_owned(),
                        source: format!("{left} items still unprocessed after {attempt} attempts")
                            .into(),
                    });
                }
                tracing::debug!(
                    left,
                    attempt,
                    "BatchWriteItem left items unprocessed; retrying"
                );
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
            }
        }
        Ok(())
    }

    /// Reads the items of `keys` (deduplicated) in batches of 100, resending unprocessed keys
    /// with backoff. `projection` names the attributes to read (all when empty).
    async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        projection: &[&str],
    ) -> Result<Vec<Item>, StoreError> {
        let mut unique: Vec<Item> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        let mut items = Vec::new();
        for chunk in unique.chunks(GET_CHUNK) {
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true);
            if !projection.is_empty() {
                let names: Vec<String> = (0..projection.len()).map(|i| format!("#p{i}")).collect();
                request = request.projection_expression(names.join(", "));
                for (name, attribute) in names.into_iter().zip(projection) {
                    request = request.expression_attribute_names(name, *attribute);
                }
            }
            let request = built(request.build(), table, "batch")?;
            let mut unprocessed = HashMap::from([(table.to_owned(), request)]);
            let mut attempt = 1;
            loop {
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(unprocessed))
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem", table, "batch", e))?;
                if let Some(mut responses) = out.responses {
                    items.extend(responses.remove(table).unwrap_or_default());
                }
                unprocessed = out.unprocessed_keys.unwrap_or_default();
                unprocessed.retain(|_, request| !request.keys().is_empty());
                let left: usize = unprocessed.values().map(|r| r.keys().len()).sum();
                if left == 0 {
                    break;
                }
                if attempt >= self.batch_attempts {
                    return Err(StoreError::Unavailable {
                        operation: "BatchGetItem",
                        table: table.to_owned(),
                        source: format!("{left} keys still unprocessed after {attempt} attempts")
                            .into(),
                    });
                }
                tracing::debug!(
                    left,
                    attempt,
                    "BatchGetItem left keys unprocessed; retrying"
                );
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
            }
        }
        Ok(items)
    }

    /// The stored content hashes of the items with these key values, by textual key.
    async fn stored_hashes(
        &self,
        table: &str,
        key_name: &str,
        keys: Vec<AttributeValue>,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let keys = keys
            .into_iter()
            .map(|k| HashMap::from([(key_name.to_owned(), k)]))
            .collect();
        let items = self
            .batch_get(table, keys, &[key_name, "content_hash"])
            .await?;
        Ok(items
            .iter()
            .map(|item| {
                let hash = codec::string(item, "content_hash").unwrap_or_default();
                (key_text(item, key_name), hash.to_owned())
            })
            .collect())
    }

    /// Every item of a table (paged Scan).
    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Scan", table, "-", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Every stored finding of one container (paged Query).
    async fn container_findings(
        &self,
        table: &str,
        container_sha: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("#c = :c")
                .expression_attribute_names("#c", "container_sha")
                .expression_attribute_values(":c", s(container_sha))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", table, container_sha, e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Upserts records of a table keyed by one attribute: reads the stored hashes, writes the
    /// changed items.
    async fn upsert<T: Serialize + Clone>(
        &self,
        name: &str,
        key_name: &str,
        records: &[T],
        key: impl Fn(&T) -> (AttributeValue, String),
        text_fields: &[&str],
    ) -> Result<Counts, StoreError> {
        let table = self.table(name);
        if records.is_empty() {
            return Ok(Counts::default());
        }
        let keys = records.iter().map(|r| key(r).0).collect();
        let stored = self.stored_hashes(&table, key_name, keys).await?;
        let mut planner = Planner::new(stored);
        for record in records {
            let (_, text) = key(record);
            let hash = plan::content_hash(record, &table, &text)?;
            planner.offer(text, hash, record.clone());
        }
        let plan = planner.finish();
        let requests = plan
            .writes
            .iter()
            .map(|record| {
                let (_, text) = key(record);
                let item = data_item(record, &table, &text, &[], text_fields, &[])?;
                put(item, &table)
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(written = requests.len(), counts = ?plan.counts, "upserted");
        self.batch_write(&table, requests).await?;
        Ok(plan.counts)
    }

    /// Sorts decoded records by a key, since Scan returns them in no useful order.
    fn decode_all<T: DeserializeOwned, K: Ord>(
        items: &[Item],
        table: &str,
        key_name: &str,
        sort_key: impl Fn(&T) -> K,
    ) -> Result<Vec<T>, StoreError> {
        let mut records = items
            .iter()
            .map(|item| decode(item, table, &key_text(item, key_name)))
            .collect::<Result<Vec<T>, _>>()?;
        records.sort_by_key(sort_key);
        Ok(records)
    }
}

impl Store for DynamoStore {
    #[tracing::instrument(skip(self), fields(table = %self.table(CONFIG_TABLE), op = "load_config"))]
    async fn load_config(
        &self,
        integration: Integration,
        now: DateTime<Utc>,
    ) -> Result<Option<IntegrationConfig>, StoreError> {
        let table = self.table(CONFIG_TABLE);
        let out = self
            .client
            .get_item()
            .table_name(&table)
            .key("integration", s(integration.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &table, integration.as_str(), e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let config: IntegrationConfig = decode(&item, &table, integration.as_str())?;
        config.validate(now)?;
        Ok(Some(config))
    }

    #[tracing::instrument(skip(self, config), fields(table = %self.table(CONFIG_TABLE), op = "save_config", integration = %config.integration))]
    async fn save_config(
        &self,
        config: &IntegrationConfig,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        config.validate(now)?;
        let table = self.table(CONFIG_TABLE);
        let key = config.integration.as_str();
        let item = codec::to_item(config).map_err(|e| corrupt(&table, key, e))?;
        self.client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", &table, key, e))?;
        Ok(())
    }

    #[tracing::instrument(skip(self, run), fields(table = %self.table(RUNS_TABLE), op = "save_run", run_id = %run.run_id, integration = %run.integration))]
    async fn save_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let table = self.table(RUNS_TABLE);
        let item = run_item(run, &table)?;
        self.client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", &table, &run.run_id, e))?;
        Ok(())
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(RUNS_TABLE), op = "load_run"))]
    async fn load_run(
        &self,
        integration: Integration,
        run_id: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let table = self.table(RUNS_TABLE);
        let out = self
            .client
            .get_item()
            .table_name(&table)
            .key("integration", s(integration.as_str()))
            .key("run_id", s(run_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &table, run_id, e))?;
        out.item
            .map(|item| run_from_item(&item, &table))
            .transpose()
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(RUNS_TABLE), op = "list_runs"))]
    async fn list_runs(
        &self,
        integration: Integration,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let table = self.table(RUNS_TABLE);
        let mut runs = Vec::new();
        let mut start = None;
        while runs.len() < limit {
            let page = i32::try_from(limit - runs.len()).unwrap_or(i32::MAX);
            let out = self
                .client
                .query()
                .table_name(&table)
                .index_name(RUNS_BY_STARTED_INDEX)
                .key_condition_expression("#i = :i")
                .expression_attribute_names("#i", "integration")
                .expression_attribute_values(":i", s(integration.as_str()))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(page)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", &table, integration.as_str(), e))?;
            for item in out.items.unwrap_or_default() {
                runs.push(run_from_item(&item, &table)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        runs.truncate(limit);
        Ok(runs)
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(WORK_TABLE), op = "load_cursor"))]
    async fn load_cursor(
        &self,
        integration: Integration,
        run_id: &str,
    ) -> Result<Option<StepCursor>, StoreError> {
        let table = self.table(WORK_TABLE);
        let key = &cursor_key(integration, run_id);
        let out = self
            .client
            .get_item()
            .table_name(&table)
            .set_key(Some(work_item_key(CURSOR_KIND, key.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &table, key, e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let field = |name: &str| {
            codec::string(&item, name)
                .ok_or_else(|| corrupt(&table, key, format!("cursor has no string {name}")))
        };
        let state = serde_json::from_str(field("state")?)
            .map_err(|e| corrupt(&table, key, format!("cursor state is not JSON: {e}")))?;
        let saved_at = DateTime::parse_from_rfc3339(field("saved_at")?)
            .map_err(|e| corrupt(&table, key, format!("cursor saved_at: {e}")))?
            .with_timezone(&Utc);
        Ok(Some(StepCursor {
            run_id: field("run_id")?.to_owned(),
            state,
            saved_at,
        }))
    }

    #[tracing::instrument(skip(self, cursor), fields(table = %self.table(WORK_TABLE), op = "save_cursor", run_id = %cursor.run_id))]
    async fn save_cursor(
        &self,
        integration: Integration,
        cursor: &StepCursor,
    ) -> Result<(), StoreError> {
        let table = self.table(WORK_TABLE);
        let key = &cursor_key(integration, &cursor.run_id);
        let mut item = work_item_key(CURSOR_KIND, key.to_owned());
        item.insert("run_id".to_owned(), s(&cursor.run_id));
        item.insert("state".to_owned(), s(cursor.state.to_string()));
        item.insert("saved_at".to_owned(), s(codec::fixed_time(cursor.saved_at)));
        self.client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", &table, key, e))?;
        Ok(())
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(WORK_TABLE), op = "clear_cursor"))]
    async fn clear_cursor(&self, integration: Integration, run_id: &str) -> Result<(), StoreError> {
        let table = self.table(WORK_TABLE);
        let key = &cursor_key(integration, run_id);
        self.client
            .delete_item()
            .table_name(&table)
            .set_key(Some(work_item_key(CURSOR_KIND, key.to_owned())))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", &table, key, e))?;
        Ok(())
    }

    #[tracing::instrument(skip(self, keys), fields(table = %self.table(WORK_TABLE), op = "add_pending", keys = keys.len()))]
    async fn add_pending(
        &self,
        kind: WorkKind,
        keys: &[String],
        run_id: &str,
    ) -> Result<(), StoreError> {
        let table = self.table(WORK_TABLE);
        let stored: BTreeSet<String> = keys
            .iter()
            .map(|k| plan::work_key(kind, k, &table))
            .collect::<Result<_, _>>()?;
        let requests = stored
            .into_iter()
            .map(|key| {
                let mut item = work_item_key(plan::work_kind(kind), key);
                item.insert("run_id".to_owned(), s(run_id));
                put(item, &table)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&table, requests).await
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(WORK_TABLE), op = "pending"))]
    async fn pending(&self, kind: WorkKind, limit: usize) -> Result<Vec<String>, StoreError> {
        let table = self.table(WORK_TABLE);
        let mut keys = Vec::new();
        let mut start = None;
        while keys.len() < limit {
            let page = i32::try_from(limit - keys.len()).unwrap_or(i32::MAX);
            let out = self
                .client
                .query()
                .table_name(&table)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_values(":k", s(plan::work_kind(kind)))
                .projection_expression("#key")
                .expression_attribute_names("#key", "key")
                .consistent_read(true)
                .limit(page)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", &table, plan::work_kind(kind), e))?;
            for item in out.items.unwrap_or_default() {
                let stored = codec::string(&item, "key").ok_or_else(|| {
                    corrupt(&table, plan::work_kind(kind), "work item without key")
                })?;
                keys.push(plan::work_key_back(kind, stored, &table)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }

    #[tracing::instrument(skip(self, keys), fields(table = %self.table(WORK_TABLE), op = "remove_pending", keys = keys.len()))]
    async fn remove_pending(&self, kind: WorkKind, keys: &[String]) -> Result<(), StoreError> {
        let table = self.table(WORK_TABLE);
        let stored: BTreeSet<String> = keys
            .iter()
            .map(|k| plan::work_key(kind, k, &table))
            .collect::<Result<_, _>>()?;
        let requests = stored
            .into_iter()
            .map(|key| delete(work_item_key(plan::work_kind(kind), key), &table))
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&table, requests).await
    }

    #[tracing::instrument(skip(self, container, findings), fields(table = %self.table(FINDINGS_TABLE), op = "sync_container", container_sha = %container.sha, findings = findings.len()))]
    async fn sync_container(
        &self,
        container: &Container,
        findings: &[Finding],
        now: DateTime<Utc>,
    ) -> Result<ContainerOutcome, StoreError> {
        let findings_table = self.table(FINDINGS_TABLE);
        let containers_table = self.table(CONTAINERS_TABLE);

        let mut stored = BTreeMap::new();
        let mut truncated = BTreeMap::new();
        for item in self
            .container_findings(&findings_table, &container.sha)
            .await?
        {
            let key = key_text(&item, "finding_key");
            let finding: Finding = decode(&item, &findings_table, &key)?;
            let hash = codec::string(&item, "content_hash")
                .unwrap_or_default()
                .to_owned();
            truncated.insert(key.clone(), codec::truncated_fields(&item));
            stored.insert(key, StoredFinding { finding, hash });
        }
        let finding_plan =
            plan::plan_findings(&container.sha, &stored, findings, now, &findings_table)?;

        let stored_container = self
            .stored_hashes(&containers_table, "sha", vec![s(&container.sha)])
            .await?;
        let mut planner = Planner::new(stored_container);
        let hash = plan::content_hash(container, &containers_table, &container.sha)?;
        planner.offer(container.sha.clone(), hash, container.clone());
        let container_plan = planner.finish();

        let requests = finding_plan
            .writes
            .iter()
            .map(|finding| {
                let key = finding.key();
                // A finding marked fixed is the stored one: keep its record of trimmed text.
                let already = match finding.status {
                    FindingStatus::Fixed => truncated.get(&key).cloned().unwrap_or_default(),
                    FindingStatus::Open => Vec::new(),
                };
                let extra = [("finding_key", s(&key))];
                let item = data_item(
                    finding,
                    &findings_table,
                    &key,
                    &extra,
                    FINDING_TEXT,
                    &already,
                )?;
                put(item, &findings_table)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&findings_table, requests).await?;

        // The container goes last: if this call dies part-way, its hash is not yet updated
        // and the next sync of the container writes everything again.
        let requests = container_plan
            .writes
            .iter()
            .map(|c| {
                put(
                    data_item(c, &containers_table, &c.sha, &[], &[], &[])?,
                    &containers_table,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&containers_table, requests).await?;

        tracing::debug!(container = ?container_plan.counts, findings = ?finding_plan.counts, "container synced");
        Ok(ContainerOutcome {
            container: container_plan.counts,
            findings: finding_plan.counts,
        })
    }

    #[tracing::instrument(skip(self, images), fields(table = %self.table(IMAGES_TABLE), op = "upsert_images", images = images.len()))]
    async fn upsert_images(&self, images: &[Image]) -> Result<Counts, StoreError> {
        self.upsert(
            IMAGES_TABLE,
            "sha",
            images,
            |i| (s(&i.sha), i.sha.clone()),
            &[],
        )
        .await
    }

    #[tracing::instrument(skip(self, entries), fields(table = %self.table(KB_TABLE), op = "upsert_kb_entries", entries = entries.len()))]
    async fn upsert_kb_entries(&self, entries: &[KbEntry]) -> Result<Counts, StoreError> {
        let key = |e: &KbEntry| (AttributeValue::N(e.qid.to_string()), e.qid.to_string());
        self.upsert(KB_TABLE, "qid", entries, key, KB_TEXT).await
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(CONTAINERS_TABLE), op = "all_containers"))]
    async fn all_containers(&self) -> Result<Vec<Container>, StoreError> {
        let table = self.table(CONTAINERS_TABLE);
        let items = self.scan_all(&table).await?;
        Self::decode_all(&items, &table, "sha", |c: &Container| c.sha.clone())
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(FINDINGS_TABLE), op = "all_findings"))]
    async fn all_findings(&self) -> Result<Vec<Finding>, StoreError> {
        let table = self.table(FINDINGS_TABLE);
        let items = self.scan_all(&table).await?;
        Self::decode_all(&items, &table, "finding_key", |f: &Finding| {
            (f.container_sha.clone(), f.key())
        })
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(IMAGES_TABLE), op = "all_images"))]
    async fn all_images(&self) -> Result<Vec<Image>, StoreError> {
        let table = self.table(IMAGES_TABLE);
        let items = self.scan_all(&table).await?;
        Self::decode_all(&items, &table, "sha", |i: &Image| i.sha.clone())
    }

    #[tracing::instrument(skip(self), fields(table = %self.table(KB_TABLE), op = "all_kb_entries"))]
    async fn all_kb_entries(&self) -> Result<Vec<KbEntry>, StoreError> {
        let table = self.table(KB_TABLE);
        let items = self.scan_all(&table).await?;
        Self::decode_all(&items, &table, "qid", |e: &KbEntry| e.qid)
    }
}

/// One table's key layout.
struct TableSpec {
    name: &'static str,
    partition: (&'static str, ScalarAttributeType),
    sort: Option<(&'static str, ScalarAttributeType)>,
}

const TABLES: [TableSpec; 8] = [
    TableSpec {
        name: CONFIG_TABLE,
        partition: ("integration", ScalarAttributeType::S),
        sort: None,
    },
    TableSpec {
        name: RUNS_TABLE,
        partition: ("integration", ScalarAttributeType::S),
        sort: Some(("run_id", ScalarAttributeType::S)),
    },
    TableSpec {
        name: WORK_TABLE,
        partition: ("kind", ScalarAttributeType::S),
        sort: Some(("key", ScalarAttributeType::S)),
    },
    TableSpec {
        name: CONTAINERS_TABLE,
        partition: ("sha", ScalarAttributeType::S),
        sort: None,
    },
    TableSpec {
        name: FINDINGS_TABLE,
        partition: ("container_sha", ScalarAttributeType::S),
        sort: Some(("finding_key", ScalarAttributeType::S)),
    },
    TableSpec {
        name: IMAGES_TABLE,
        partition: ("sha", ScalarAttributeType::S),
        sort: None,
    },
    TableSpec {
        name: KB_TABLE,
        partition: ("qid", ScalarAttributeType::N),
        sort: None,
    },
    TableSpec {
        name: CALENDAR_TABLE,
        partition: ("calendar", ScalarAttributeType::S),
        sort: Some(("entry_id", ScalarAttributeType::S)),
    },
];

/// How long [`create_tables`] waits for new tables to become active.
const TABLE_WAIT: Duration = Duration::from_secs(300);

fn key_element(name: &str, key_type: KeyType, table: &str) -> Result<KeySchemaElement, StoreError> {
    let element = KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build();
    built(element, table, "-")
}

fn attribute(
    name: &str,
    kind: ScalarAttributeType,
    table: &str,
) -> Result<AttributeDefinition, StoreError> {
    let definition = AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build();
    built(definition, table, "-")
}

/// Creates the qcvr tables `{prefix}...` (on-demand billing; the runs table with its local
/// secondary index `by_started`) and waits until they are active. Tables that already exist
/// are left as they are, so it is safe to run again.
pub async fn create_tables(client: &Client, prefix: &str) -> Result<(), StoreError> {
    for spec in &TABLES {
        let table = format!("{prefix}{}", spec.name);
        let mut request = client
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key_element(spec.partition.0, KeyType::Hash, &table)?)
            .attribute_definitions(attribute(
                spec.partition.0,
                spec.partition.1.clone(),
                &table,
            )?);
        if let Some((name, kind)) = &spec.sort {
            request = request
                .key_schema(key_element(name, KeyType::Range, &table)?)
                .attribute_definitions(attribute(name, kind.clone(), &table)?);
        }
        if spec.name == RUNS_TABLE {
            let index = LocalSecondaryIndex::builder()
                .index_name(RUNS_BY_STARTED_INDEX)
                .key_schema(key_element("integration", KeyType::Hash, &table)?)
                .key_schema(key_element("started_at", KeyType::Range, &table)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                );
            request = request
                .attribute_definitions(attribute("started_at", ScalarAttributeType::S, &table)?)
                .local_secondary_indexes(built(index.build(), &table, "-")?);
        }
        match request.send().await {
            Ok(_) => tracing::info!(table, "table created"),
            Err(e) if e.code() == Some("ResourceInUseException") => {
                tracing::debug!(table, "table exists")
            }
            Err(e) => return Err(sdk_error("CreateTable", &table, "-", e)),
        }
    }
    for spec in &TABLES {
        let table = format!("{prefix}{}", spec.name);
        client
            .wait_until_table_exists()
            .table_name(&table)
            .wait(TABLE_WAIT)
            .await
            .map_err(|e| StoreError::Unavailable {
                operation: "DescribeTable",
                table: table.clone(),
                source: Box::new(SdkFailure(Box::new(e))),
            })?;
    }
    Ok(())
}
