//! Timestamps as Qualys sends them: epoch-millisecond strings (`"1711951205118"`), epoch-ms
//! numbers (`published`), and ISO-8601 strings (`host.lastUpdated`, KB dates), all in UTC.
//!
//! A timestamp that cannot be read becomes `None` with a debug log: one odd value must not
//! fail a whole sync.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Epoch milliseconds to a UTC time; `None` when out of chrono's range.
pub fn from_epoch_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// Reads a timestamp string: epoch ms (digits, optionally signed) or ISO-8601 with or
/// without fractional seconds, with `Z`, an offset, or no zone (taken as UTC). Empty →
/// `None`; unreadable → `None` and a debug log.
pub fn parse_str(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("null") {
        return None;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let parsed = s.parse::<i64>().ok().and_then(from_epoch_ms);
        if parsed.is_none() {
            tracing::debug!(value = s, "epoch-ms timestamp out of range; ignored");
        }
        return parsed;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    if let Some(t) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Some(t.and_utc());
    }
    tracing::debug!(value = s, "unreadable timestamp; ignored");
    None
}

/// Reads a JSON timestamp: a string as [`parse_str`], or a number of epoch milliseconds.
pub fn parse_value(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Null => None,
        Value::String(s) => parse_str(s),
        Value::Number(n) => {
            let ms = n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64));
            let parsed = ms.and_then(from_epoch_ms);
            if parsed.is_none() {
                tracing::debug!(value = %n, "numeric timestamp out of range; ignored");
            }
            parsed
        }
        other => {
            tracing::debug!(
                kind = json_kind(other),
                "timestamp is not a string or number"
            );
            None
        }
    }
}

/// Serde adapter: any JSON value to an optional UTC time, never failing.
pub(crate) fn lenient<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.as_ref().and_then(parse_value))
}

/// Formats a time the way the window filter needs it: ISO-8601 UTC with milliseconds.
pub fn iso_millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(ms: i64) -> Option<DateTime<Utc>> {
        Utc.timestamp_millis_opt(ms).single()
    }

    #[test]
    fn epoch_ms_strings_and_numbers() {
        assert_eq!(parse_str("1711951205118"), at(1_711_951_205_118));
        assert_eq!(parse_value(&json!("1711951205118")), at(1_711_951_205_118));
        assert_eq!(
            parse_value(&json!(1_639_159_513_000_i64)),
            at(1_639_159_513_000)
        );
        assert_eq!(parse_value(&json!(1.639159513e12)), at(1_639_159_513_000));
    }

    #[test]
    fn iso_forms() {
        assert_eq!(parse_str("2024-04-01T23:59:41.207Z"), at(1_712_015_981_207));
        assert_eq!(parse_str("2024-04-01T23:59:41Z"), at(1_712_015_981_000));
        assert_eq!(
            parse_str("2024-04-02T01:59:41.207+02:00"),
            at(1_712_015_981_207)
        );
        assert_eq!(parse_str("2024-04-01T23:59:41"), at(1_712_015_981_000));
        assert_eq!(parse_str("2024-04-01"), at(1_711_929_600_000));
    }

    #[test]
    fn empty_null_and_garbage_are_none() {
        assert_eq!(parse_str(""), None);
        assert_eq!(parse_str("   "), None);
        assert_eq!(parse_value(&Value::Null), None);
        assert_eq!(parse_str("yesterday"), None);
        assert_eq!(parse_str("99999999999999999999999"), None);
        assert_eq!(parse_value(&json!(true)), None);
        assert_eq!(parse_value(&json!({"a": 1})), None);
    }

    #[test]
    fn iso_millis_round_trips() {
        let t = at(1_711_951_205_118).expect("in range");
        assert_eq!(iso_millis(t), "2024-04-01T06:00:05.118Z");
        assert_eq!(parse_str(&iso_millis(t)), Some(t));
    }
}
