//! QQL filters: validating the configured filter and combining it with the incremental
//! window on `updated`.
//!
//! Validation is structural, not semantic: quotes ('…', "…", `…`), parentheses and brackets
//! balance; `and`/`or`/`not` (any case) have operands; a `token:` has a value; lists and
//! ranges are not empty. Which tokens exist is Qualys's business. An empty filter is allowed
//! and means "no filter".

use std::fmt;

use chrono::{DateTime, Utc};

use super::time::{from_epoch_ms, iso_millis};
use crate::run::Window;

/// A validated QQL filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qql(String);

/// A filter that cannot be sent. The message names the character position (1-based).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct QqlError(pub String);

/// One lexical item of a filter, with its 1-based character position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Term,
    And,
    Or,
    Not,
    Open,
    Close,
}

const OPERATOR_CHARS: [char; 4] = [':', '<', '>', '='];

fn err(pos: usize, what: impl fmt::Display) -> QqlError {
    QqlError(format!("{what} at character {pos}"))
}

/// Splits a filter into terms, keywords and parentheses.
struct Lexer {
    chars: Vec<char>,
    at: usize,
}

impl Lexer {
    fn items(mut self) -> Result<Vec<(Item, usize, String)>, QqlError> {
        let mut items = Vec::new();
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.at += 1;
            }
            let Some(c) = self.peek() else { break };
            let pos = self.at + 1;
            match c {
                '(' => {
                    self.at += 1;
                    items.push((Item::Open, pos, "(".to_owned()));
                }
                ')' => {
                    self.at += 1;
                    items.push((Item::Close, pos, ")".to_owned()));
                }
                _ => {
                    let (text, bare) = self.term()?;
                    let item = match (bare, text.to_ascii_lowercase().as_str()) {
                        (true, "and") => Item::And,
                        (true, "or") => Item::Or,
                        (true, "not") => Item::Not,
                        _ => Item::Term,
                    };
                    items.push((item, pos, text));
                }
            }
        }
        Ok(items)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Reads one term such as `state:'RUNNING'`, `updated:["a".."b"]`, `not` or
    /// `uuid: [a,b]`. Returns its text and whether it was a bare word (no quote or group).
    fn term(&mut self) -> Result<(String, bool), QqlError> {
        let start = self.at;
        let mut bare = true;
        while let Some(c) = self.peek() {
            let ends_with_operator =
                self.at > start && OPERATOR_CHARS.contains(&self.chars[self.at - 1]);
            match c {
                c if c.is_whitespace() => {
                    let mut next = self.at;
                    while self.chars.get(next).is_some_and(|c| c.is_whitespace()) {
                        next += 1;
                    }
                    let next_is_operator = self
                        .chars
                        .get(next)
                        .is_some_and(|c| OPERATOR_CHARS.contains(c));
                    if ends_with_operator || next_is_operator {
                        self.at = next;
                    } else {
                        break;
                    }
                }
                '(' if ends_with_operator => {
                    bare = false;
                    self.group('(', ')')?;
                }
                '(' | ')' => break,
                '[' => {
                    bare = false;
                    self.group('[', ']')?;
                }
                ']' => return Err(err(self.at + 1, "unmatched ']'")),
                '\'' | '"' | '`' => {
                    bare = false;
                    self.quoted(c)?;
                }
                _ => self.at += 1,
            }
        }
        let text: String = self.chars[start..self.at].iter().collect();
        let trimmed = text.trim_end();
        if trimmed.starts_with(OPERATOR_CHARS) {
            return Err(err(
                start + 1,
                format!("missing token name before {trimmed:?}"),
            ));
        }
        if trimmed.ends_with(OPERATOR_CHARS) {
            return Err(err(
                start + 1,
                format!("missing value after {trimmed:?}; quote values that contain spaces"),
            ));
        }
        Ok((trimmed.to_owned(), bare))
    }

    /// Skips a quoted string starting at the current quote character.
    fn quoted(&mut self, quote: char) -> Result<(), QqlError> {
        let open = self.at;
        self.at += 1;
        while let Some(c) = self.peek() {
            self.at += 1;
            if c == quote {
                return Ok(());
            }
        }
        Err(err(open + 1, format!("unterminated {quote} quote")))
    }

    /// Skips a value group (`[a,b]`, `["x".."y"]`, `("x".."y")`), nested groups and quotes
    /// included; refuses an empty group.
    fn group(&mut self, open: char, close: char) -> Result<(), QqlError> {
        let start = self.at;
        let mut stack = vec![(close, start)];
        self.at += 1;
        while let Some(c) = self.peek() {
            match c {
                '\'' | '"' | '`' => {
                    self.quoted(c)?;
                    continue;
                }
                '[' => stack.push((']', self.at)),
                '(' => stack.push((')', self.at)),
                ']' | ')' => match stack.pop() {
                    Some((expected, _)) if expected == c => {}
                    Some((expected, at)) => {
                        return Err(err(
                            self.at + 1,
                            format!(
                                "{c:?} closes the group opened at character {} (expected {expected:?})",
                                at + 1
                            ),
                        ));
                    }
                    None => return Err(err(self.at + 1, format!("unmatched {c:?}"))),
                },
                _ => {}
            }
            self.at += 1;
            if stack.is_empty() {
                let inner: String = self.chars[start + 1..self.at - 1].iter().collect();
                if inner.trim().is_empty() {
                    return Err(err(start + 1, format!("empty {open}{close}")));
                }
                let inner = inner.trim();
                if inner.starts_with(',') || inner.ends_with(',') || inner.contains(",,") {
                    return Err(err(
                        start + 1,
                        format!("empty list element in {open}…{close}"),
                    ));
                }
                return Ok(());
            }
        }
        Err(err(start + 1, format!("unclosed {open:?}")))
    }
}

impl Qql {
    /// Validates `filter`. The empty filter is allowed and means "no filter".
    pub fn parse(filter: &str) -> Result<Qql, QqlError> {
        let items = Lexer {
            chars: filter.chars().collect(),
            at: 0,
        }
        .items()?;

        let mut expect_operand = true;
        let mut open_parens: Vec<usize> = Vec::new();
        let mut previous: Option<(Item, usize, &str)> = None;
        for (item, pos, text) in &items {
            let (item, pos) = (*item, *pos);
            if expect_operand {
                match item {
                    Item::Term => expect_operand = false,
                    Item::Not => {}
                    Item::Open => open_parens.push(pos),
                    Item::And | Item::Or => {
                        return Err(err(pos, format!("{text:?} has no left operand")));
                    }
                    Item::Close => {
                        return Err(match previous {
                            Some((Item::Open, _, _)) => err(pos, "empty parentheses"),
                            Some((_, _, word)) => {
                                err(pos, format!("{word:?} has no right operand before ')'"))
                            }
                            None => err(pos, "unmatched ')'"),
                        });
                    }
                }
            } else {
                match item {
                    Item::And | Item::Or => expect_operand = true,
                    Item::Close => {
                        if open_parens.pop().is_none() {
                            return Err(err(pos, "unmatched ')'"));
                        }
                    }
                    Item::Term | Item::Open | Item::Not => {
                        return Err(err(
                            pos,
                            format!(
                                "missing 'and' or 'or' before {text:?} (quote values that \
                                 contain spaces)"
                            ),
                        ));
                    }
                }
            }
            previous = Some((item, pos, text));
        }
        if let Some(open) = open_parens.first() {
            return Err(err(*open, "unclosed '('"));
        }
        if expect_operand && let Some((_, pos, word)) = previous {
            return Err(err(pos, format!("{word:?} has no right operand")));
        }
        Ok(Qql(filter.trim().to_owned()))
    }

    /// The filter as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the empty "no filter" filter.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The filter sent for `window`: `(F) and updated:["<since>".."<until>"]` with ISO-8601
    /// UTC millisecond times, or only the range when the filter is empty.
    pub fn with_window(&self, window: &Window) -> String {
        self.with_range(window.since, window.until)
    }

    /// As [`Qql::with_window`] but with the lower bound raised to `since_ms` (epoch ms), as
    /// the keyset walk does; never below the window's own lower bound.
    pub fn with_lower_bound_ms(&self, since_ms: i64, window: &Window) -> String {
        let since = from_epoch_ms(since_ms)
            .filter(|s| *s > window.since)
            .unwrap_or(window.since);
        self.with_range(since, window.until)
    }

    fn with_range(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
        let range = format!(
            "updated:[\"{}\"..\"{}\"]",
            iso_millis(since),
            iso_millis(until)
        );
        if self.is_empty() {
            range
        } else {
            format!("({}) and {range}", self.0)
        }
    }
}

impl fmt::Display for Qql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ok(filter: &str) {
        if let Err(e) = Qql::parse(filter) {
            panic!("{filter:?} should parse: {e}");
        }
    }

    fn bad(filter: &str, says: &str) {
        match Qql::parse(filter) {
            Ok(_) => panic!("{filter:?} should be refused"),
            Err(e) => assert!(e.0.contains(says), "{filter:?}: {e} lacks {says:?}"),
        }
    }

    #[test]
    fn accepts_the_documented_forms() {
        for f in [
            "",
            "   ",
            "state:'RUNNING'",
            "state:`RUNNING`",
            "state:RUNNING",
            "state:\"RUNNING\"",
            "state: 'RUNNING'",
            "updated:[\"2024-05-01T00:00:00Z\"..\"2024-05-08T12:00:00.000Z\"]",
            "updated:(\"2024-05-01T00:00:00Z\"..\"2024-05-08T12:00:00Z\")",
            "updated>=1711951207904",
            "updated >= 1711951207904",
            "not uuid: [801f0d53-19c6-31e7-831a-5a5c6563f3ce,96a62733-7afe]",
            "(state:RUNNING OR state:STOPPED) And NOT name:'a (b) [c]'",
            "not (state:DELETED)",
            "imagesInUse:'[now-7d ... now]'",
        ] {
            ok(f);
        }
    }

    #[test]
    fn refuses_broken_filters_naming_the_position() {
        bad("(state:RUNNING", "unclosed '(' at character 1");
        bad("state:RUNNING)", "unmatched ')' at character 14");
        bad("state:'RUNNING", "unterminated ' quote at character 7");
        bad("state:\"RUNNING", "unterminated \" quote");
        bad("state:`RUNNING", "unterminated ` quote");
        bad("updated:[\"2024-03-26T10:00:00Z\"..", "unclosed '['");
        bad("updated:[\"a\"..\"b\")", "expected ']'");
        bad("state:RUNNING]", "unmatched ']'");
        bad(
            "state:RUNNING and",
            "\"and\" has no right operand at character 15",
        );
        bad(
            "or state:RUNNING",
            "\"or\" has no left operand at character 1",
        );
        bad(
            "state:RUNNING and or state:STOPPED",
            "\"or\" has no left operand",
        );
        bad("not", "\"not\" has no right operand");
        bad("state:RUNNING and ()", "empty parentheses");
        bad(
            "(state:RUNNING and )",
            "\"and\" has no right operand before ')'",
        );
        bad("state:", "missing value after \"state:\"");
        bad("state: ", "missing value after");
        bad(":RUNNING", "missing token name");
        bad("uuid:[]", "empty []");
        bad("uuid:[a,,b]", "empty list element");
        bad(
            "state:RUNNING name:x",
            "missing 'and' or 'or' before \"name:x\" (quote values that contain spaces) at \
             character 15",
        );
        bad("name:my app", "missing 'and' or 'or' before \"app\"");
    }

    #[test]
    fn window_filter_is_exactly_the_contract() {
        let window = Window {
            since: Utc
                .with_ymd_and_hms(2024, 5, 1, 0, 0, 0)
                .single()
                .expect("valid"),
            until: Utc
                .with_ymd_and_hms(2024, 5, 8, 12, 0, 0)
                .single()
                .expect("valid"),
        };
        let q = Qql::parse(" state:'RUNNING' ").expect("valid");
        assert_eq!(
            q.with_window(&window),
            "(state:'RUNNING') and updated:[\"2024-05-01T00:00:00.000Z\"..\"2024-05-08T12:00:00.000Z\"]"
        );
        let empty = Qql::parse("").expect("valid");
        assert_eq!(
            empty.with_window(&window),
            "updated:[\"2024-05-01T00:00:00.000Z\"..\"2024-05-08T12:00:00.000Z\"]"
        );
        let raised = window.since.timestamp_millis() + 86_400_000 + 123;
        assert_eq!(
            q.with_lower_bound_ms(raised, &window),
            "(state:'RUNNING') and updated:[\"2024-05-02T00:00:00.123Z\"..\"2024-05-08T12:00:00.000Z\"]"
        );
        assert_eq!(q.with_lower_bound_ms(0, &window), q.with_window(&window));
    }
}
