//! Turning records into DynamoDB items and back: plain attributes (S, N, BOOL, L, M) through
//! their serde form, RFC 3339 strings for times, and trimming of long text so an item stays
//! under DynamoDB's 400 KB limit.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

/// A DynamoDB item.
pub(super) type Item = HashMap<String, AttributeValue>;

/// Attribute listing the text fields that were trimmed to fit the item size limit.
pub(super) const TRUNCATED_FIELDS: &str = "truncated_fields";

/// What replaces the cut-off end of a trimmed text field.
const TRIM_MARKER: &str = " [truncated by qcvr: the item size limit of DynamoDB was reached]";

/// A time as a fixed-width RFC 3339 string (nanoseconds, `Z`), so string order is time order
/// (the runs index sorts on it) and the value reads back exactly.
pub(super) fn fixed_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The record's serde form as an item; `None` fields are left out.
pub(super) fn to_item<T: Serialize>(record: &T) -> Result<Item, String> {
    match serde_json::to_value(record) {
        Ok(Value::Object(fields)) => Ok(object_to_item(fields)),
        Ok(other) => Err(format!("expected a JSON object, got {other}")),
        Err(e) => Err(format!("cannot serialise the record: {e}")),
    }
}

/// A JSON object as an item; null fields are left out.
pub(super) fn object_to_item(fields: Map<String, Value>) -> Item {
    fields
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, to_attribute(v)))
        .collect()
}

fn to_attribute(value: Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s),
        Value::Array(values) => AttributeValue::L(values.into_iter().map(to_attribute).collect()),
        Value::Object(fields) => AttributeValue::M(object_to_item(fields)),
    }
}

/// An item as a JSON object, every attribute included.
pub(super) fn item_to_object(item: &Item) -> Result<Map<String, Value>, String> {
    item.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                from_attribute(v).map_err(|e| format!("{k}: {e}"))?,
            ))
        })
        .collect()
}

/// The record an item holds; attributes the record does not have are ignored.
pub(super) fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T, String> {
    let object = item_to_object(item)?;
    serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
}

fn from_attribute(value: &AttributeValue) -> Result<Value, String> {
    Ok(match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => Value::Number(parse_number(n)?),
        AttributeValue::L(values) => Value::Array(
            values
                .iter()
                .map(from_attribute)
                .collect::<Result<_, _>>()?,
        ),
        AttributeValue::M(fields) => Value::Object(item_to_object(fields)?),
        other => return Err(format!("unexpected attribute type {other:?}")),
    })
}

fn parse_number(n: &str) -> Result<Number, String> {
    if let Ok(u) = n.parse::<u64>() {
        return Ok(Number::from(u));
    }
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Number::from(i));
    }
    n.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| format!("{n:?} is not a number"))
}

/// A string attribute of an item.
pub(super) fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

/// The names listed in an item's `truncated_fields`.
pub(super) fn truncated_fields(item: &Item) -> Vec<String> {
    match item.get(TRUNCATED_FIELDS) {
        Some(AttributeValue::L(names)) => names
            .iter()
            .filter_map(|n| n.as_s().ok().cloned())
            .collect(),
        _ => Vec::new(),
    }
}

/// DynamoDB's size of an item: attribute names plus values (numbers counted as their text,
/// which is never less than what DynamoDB counts).
pub(super) fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(fields) => {
            3 + fields
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

/// Trims the longest of `fields` (string attributes) until the item is at most `limit` bytes,
/// records the trimmed names (plus `already`) in `truncated_fields`, and returns the item's
/// final size.
pub(super) fn fit(item: &mut Item, fields: &[&str], limit: usize, already: &[String]) -> usize {
    let mut trimmed: Vec<String> = already.to_vec();
    loop {
        // The list of trimmed fields counts towards the size too.
        if !trimmed.is_empty() {
            let names = trimmed.iter().cloned().map(AttributeValue::S).collect();
            item.insert(TRUNCATED_FIELDS.to_owned(), AttributeValue::L(names));
        }
        let size = item_size(item);
        if size <= limit {
            break;
        }
        let longest = fields
            .iter()
            .filter_map(|f| string(item, f).map(|s| (*f, s.len())))
            .max_by_key(|(_, len)| *len);
        let Some((name, len)) = longest else { break };
        let listed = if trimmed.iter().any(|t| t == name) {
            0
        } else {
            name.len() + 8
        };
        let keep = len.saturating_sub(size - limit + TRIM_MARKER.len() + listed);
        let Some(text) = string(item, name) else {
            break;
        };
        let cut = text.floor_char_boundary(keep);
        let shorter = format!("{}{TRIM_MARKER}", &text[..cut]);
        if shorter.len() >= len {
            // Already as short as a trimmed field gets; nothing more to gain here.
            break;
        }
        item.insert(name.to_owned(), AttributeValue::S(shorter));
        if !trimmed.iter().any(|t| t == name) {
            trimmed.push(name.to_owned());
        }
    }
    item_size(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_leave_out_none() {
        let kb = crate::model::KbEntry {
            qid: 42,
            title: Some("t".into()),
            cves: vec![crate::model::CveRef {
                id: "CVE-1".into(),
                url: None,
            }],
            published: Some(DateTime::from_timestamp_millis(1_700_000_000_123).unwrap_or_default()),
            ..Default::default()
        };
        let item = to_item(&kb).expect("serialises");
        assert_eq!(item.get("qid"), Some(&AttributeValue::N("42".into())));
        assert!(!item.contains_key("diagnosis"));
        assert_eq!(
            item.get("published"),
            Some(&AttributeValue::S("2023-11-14T22:13:20.123Z".into()))
        );
        let back: crate::model::KbEntry = from_item(&item).expect("deserialises");
        assert_eq!(back, kb);
    }

    #[test]
    fn fit_trims_the_longest_field_on_a_char_boundary() {
        let mut item = Item::new();
        item.insert("a".into(), AttributeValue::S("é".repeat(1000)));
        item.insert("b".into(), AttributeValue::S("x".repeat(10)));
        let size = fit(&mut item, &["a", "b"], 500, &[]);
        assert!(size <= 500, "size {size}");
        assert_eq!(string(&item, "b"), Some("x".repeat(10).as_str()));
        assert!(string(&item, "a").is_some_and(|a| a.ends_with(TRIM_MARKER)));
        assert_eq!(truncated_fields(&item), vec!["a".to_owned()]);
    }

    #[test]
    fn fixed_time_sorts_as_time() {
        let a = DateTime::from_timestamp(1_700_000_000, 5).unwrap_or_default();
        let b = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap_or_default();
        assert!(fixed_time(a) < fixed_time(b));
        assert_eq!(fixed_time(a).len(), fixed_time(b).len());
    }
}
