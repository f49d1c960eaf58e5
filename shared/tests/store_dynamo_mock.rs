//! `DynamoStore` against a mocked DynamoDB client (aws-smithy-mocks): the exact requests
//! sent on partial batch results, that unchanged data sends no write, and error mapping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
use aws_sdk_dynamodb::operation::batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use qcvr::config::Integration;
use qcvr::model::Image;
use qcvr::store::dynamo::DynamoStore;
use qcvr::store::{Store, StoreError};

const IMAGES: &str = "mock-images";

fn image(n: u8) -> Image {
    Image {
        sha: format!("{n:064x}"),
        operating_system: Some("Alpine".into()),
        ..Default::default()
    }
}

fn store(client: Client) -> DynamoStore {
    DynamoStore::new(client, "mock-").with_batch_retry(3, Duration::ZERO)
}

/// BatchGetItem answering "nothing stored", or with the given items of the images table.
fn batch_get_answering(
    items: Vec<std::collections::HashMap<String, AttributeValue>>,
) -> aws_smithy_mocks::Rule {
    mock!(Client::batch_get_item).then_compute_output(move |_: &BatchGetItemInput| {
        BatchGetItemOutput::builder()
            .responses(IMAGES, items.clone())
            .build()
    })
}

/// The shas of the put requests of a BatchWriteItem input, in order.
fn put_shas(input: &BatchWriteItemInput) -> Vec<String> {
    let requests: &[WriteRequest] = input
        .request_items()
        .and_then(|r| r.get(IMAGES))
        .map(Vec::as_slice)
        .unwrap_or_default();
    requests
        .iter()
        .filter_map(|r| r.put_request())
        .filter_map(|p| p.item().get("sha"))
        .filter_map(|sha| sha.as_s().ok().cloned())
        .collect()
}

#[tokio::test]
async fn unprocessed_items_are_resent_until_none_are_left() {
    // GIVEN BatchWriteItem that leaves the second image unprocessed once
    let sent: Arc<Mutex<Vec<BatchWriteItemInput>>> = Arc::default();
    let log = sent.clone();
    let write = mock!(Client::batch_write_item).then_compute_output(move |input| {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        log.push(input.clone());
        let mut output = BatchWriteItemOutput::builder();
        if log.len() == 1 {
            let second = input
                .request_items()
                .and_then(|r| r.get(IMAGES))
                .map(|r| r[1].clone());
            output = output.unprocessed_items(IMAGES, second.into_iter().collect());
        }
        output.build()
    });
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&batch_get_answering(vec![]), &write]
    );

    // WHEN two new images are upserted
    let counts = store(client)
        .upsert_images(&[image(1), image(2)])
        .await
        .expect("upserts");

    // THEN both count as new, and the retry carried exactly the unprocessed request
    assert_eq!((counts.new, counts.updated, counts.unchanged), (2, 0, 0));
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(sent.len(), 2);
    assert_eq!(put_shas(&sent[0]), [image(1).sha, image(2).sha]);
    assert_eq!(put_shas(&sent[1]), [image(2).sha]);
    let first_items = sent[0]
        .request_items()
        .and_then(|r| r.get(IMAGES))
        .expect("items");
    let retried = sent[1]
        .request_items()
        .and_then(|r| r.get(IMAGES))
        .expect("items");
    assert_eq!(
        retried.as_slice(),
        &first_items[1..],
        "the resent request is the unprocessed one"
    );
    assert_eq!(
        sent[1].request_items().map(|r| r.len()),
        Some(1),
        "only the images table"
    );
}

#[tokio::test]
async fn items_left_unprocessed_after_every_attempt_are_unavailable() {
    let write =
        mock!(Client::batch_write_item).then_compute_output(|input: &BatchWriteItemInput| {
            let all = input.request_items().cloned().unwrap_or_default();
            BatchWriteItemOutput::builder()
                .set_unprocessed_items(Some(all))
                .build()
        });
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&batch_get_answering(vec![]), &write]
    );

    let err = store(client).upsert_images(&[image(1)]).await;

    assert!(
        matches!(
            err,
            Err(StoreError::Unavailable {
                operation: "BatchWriteItem",
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(write.num_calls(), 3, "the configured number of attempts");
}

#[tokio::test]
async fn an_unchanged_upsert_sends_no_write() {
    // GIVEN the item the store wrote for an image (captured from a first upsert)
    let written: Arc<Mutex<Vec<BatchWriteItemInput>>> = Arc::default();
    let log = written.clone();
    let capture = mock!(Client::batch_write_item).then_compute_output(move |input| {
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(input.clone());
        BatchWriteItemOutput::builder().build()
    });
    let first = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&batch_get_answering(vec![]), &capture]
    );
    store(first)
        .upsert_images(&[image(7)])
        .await
        .expect("upserts");
    let stored_item = written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .first()
        .and_then(|input| {
            input
                .request_items()?
                .get(IMAGES)?
                .first()?
                .put_request()
                .cloned()
        })
        .map(|put| put.item().clone())
        .expect("the first upsert wrote the image");
    assert!(stored_item.contains_key("content_hash"));

    // WHEN the same image is upserted against a table holding that item
    let write =
        mock!(Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
    let read = batch_get_answering(vec![stored_item]);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&read, &write]);
    let counts = store(client)
        .upsert_images(&[image(7)])
        .await
        .expect("upserts");

    // THEN it is unchanged and no BatchWriteItem request was made
    assert_eq!(
        (counts.fetched, counts.unchanged, counts.new, counts.updated),
        (1, 1, 0, 0)
    );
    assert_eq!(read.num_calls(), 1);
    assert_eq!(write.num_calls(), 0, "no write request for unchanged data");
}

#[tokio::test]
async fn a_missing_table_is_reported_as_such() {
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#;
    let get = mock!(Client::get_item)
        .sequence()
        .http_status(400, Some(body.to_owned()))
        .build();
    let client = mock_client!(aws_sdk_dynamodb, [&get]);

    let err = store(client)
        .load_config(Integration::Containers, chrono::Utc::now())
        .await;

    match err {
        Err(StoreError::MissingTable { table }) => assert_eq!(table, "mock-config"),
        other => panic!("expected MissingTable, got {other:?}"),
    }
}

#[tokio::test]
async fn throttling_is_unavailable() {
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}"#;
    let get = mock!(Client::get_item)
        .sequence()
        .http_status(400, Some(body.to_owned()))
        .build();
    // The SDK's own retries are covered by the SDK; here only the mapping of the final error.
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&get], |config| {
        config.retry_config(RetryConfig::disabled())
    });

    let err = store(client)
        .load_config(Integration::Kb, chrono::Utc::now())
        .await;

    assert!(
        matches!(
            err,
            Err(StoreError::Unavailable {
                operation: "GetItem",
                ..
            })
        ),
        "{err:?}"
    );
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("ProvisionedThroughputExceeded"),
        "{message}"
    );
}

#[tokio::test]
async fn a_malformed_config_item_is_corrupt() {
    let get = mock!(Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .item("integration", AttributeValue::S("kb".into()))
            .item("page_size", AttributeValue::S("fifty".into()))
            .build()
    });
    let client = mock_client!(aws_sdk_dynamodb, [&get]);

    let err = store(client)
        .load_config(Integration::Kb, chrono::Utc::now())
        .await;

    assert!(matches!(err, Err(StoreError::Corrupt { .. })), "{err:?}");
}
