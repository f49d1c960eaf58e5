//! The subset of Qualys Query Language the simulator understands for container filters.
//!
//! Supported: `state:<value>` (bare, `'…'`, `"…"` or `` `…` `` quoted), `updated:["ISO".."ISO"]`
//! (inclusive), `updated:("ISO".."ISO")` (exclusive), `updated>=ms` / `>` / `<=` / `<`,
//! `uuid: [a,b]`, `and` / `or` / `not` in any case and parentheses. Anything else is an error
//! the server turns into a 400. This module parses and evaluates; it knows nothing of HTTP.

use chrono::DateTime;

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// Matches everything (empty filter).
    All,
    /// `state:X`, compared without regard to case.
    State(String),
    /// `updated` between two epoch-ms bounds.
    Updated {
        /// Lower bound (ms) and whether it is included.
        low: Option<(i64, bool)>,
        /// Upper bound (ms) and whether it is included.
        high: Option<(i64, bool)>,
    },
    /// `uuid: [a,b]`.
    UuidIn(Vec<String>),
    /// Both sides match.
    And(Box<Filter>, Box<Filter>),
    /// Either side matches.
    Or(Box<Filter>, Box<Filter>),
    /// The inner filter does not match.
    Not(Box<Filter>),
}

/// The fields of a container a filter looks at.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    /// Container state, e.g. `RUNNING`.
    pub state: &'a str,
    /// Last update, epoch ms.
    pub updated_ms: i64,
    /// Qualys UUID.
    pub uuid: &'a str,
}

impl Filter {
    /// Parses a QQL string; an empty or blank string matches everything.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Ok(Filter::All);
        }
        let mut parser = Parser { tokens, pos: 0 };
        let filter = parser.or()?;
        match parser.peek() {
            None => Ok(filter),
            Some(token) => Err(format!("unexpected {token:?}")),
        }
    }

    /// Both filters.
    pub fn and(self, other: Filter) -> Filter {
        match (self, other) {
            (Filter::All, other) | (other, Filter::All) => other,
            (left, right) => Filter::And(Box::new(left), Box::new(right)),
        }
    }

    /// True when the container fields match.
    pub fn matches(&self, fields: &Fields<'_>) -> bool {
        match self {
            Filter::All => true,
            Filter::State(state) => state.eq_ignore_ascii_case(fields.state),
            Filter::Updated { low, high } => {
                let above = low.is_none_or(|(bound, inclusive)| {
                    fields.updated_ms > bound || (inclusive && fields.updated_ms == bound)
                });
                let below = high.is_none_or(|(bound, inclusive)| {
                    fields.updated_ms < bound || (inclusive && fields.updated_ms == bound)
                });
                above && below
            }
            Filter::UuidIn(uuids) => uuids.iter().any(|uuid| uuid == fields.uuid),
            Filter::And(left, right) => left.matches(fields) && right.matches(fields),
            Filter::Or(left, right) => left.matches(fields) || right.matches(fields),
            Filter::Not(inner) => !inner.matches(fields),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Colon,
    Open(char),
    Close(char),
    DotDot,
    Comma,
    Cmp(&'static str),
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            ':' => {
                tokens.push(Token::Colon);
                i += 1;
            }
            '(' | '[' => {
                tokens.push(Token::Open(c));
                i += 1;
            }
            ')' | ']' => {
                tokens.push(Token::Close(c));
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '.' if chars.get(i + 1) == Some(&'.') => {
                tokens.push(Token::DotDot);
                i += 2;
            }
            '>' | '<' => {
                let with_eq = chars.get(i + 1) == Some(&'=');
                tokens.push(Token::Cmp(match (c, with_eq) {
                    ('>', true) => ">=",
                    ('>', false) => ">",
                    ('<', true) => "<=",
                    _ => "<",
                }));
                i += if with_eq { 2 } else { 1 };
            }
            '\'' | '"' | '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&other| other == c)
                    .ok_or_else(|| format!("unclosed quote {c}"))?;
                tokens.push(Token::Quoted(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            c if c.is_alphanumeric() || c == '-' || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '-' || chars[i] == '_')
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Result<Token, String> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| "unexpected end of query".to_string())?;
        self.pos += 1;
        Ok(token)
    }

    fn expect(&mut self, wanted: &Token) -> Result<(), String> {
        let token = self.next()?;
        if &token == wanted {
            Ok(())
        } else {
            Err(format!("expected {wanted:?}, found {token:?}"))
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open('(')) {
            self.pos += 1;
            let inner = self.or()?;
            self.expect(&Token::Close(')'))?;
            return Ok(inner);
        }
        self.term()
    }

    fn term(&mut self) -> Result<Filter, String> {
        let field = match self.next()? {
            Token::Word(word) => word,
            other => return Err(format!("expected a field name, found {other:?}")),
        };
        match (field.as_str(), self.next()?) {
            ("state", Token::Colon) => match self.next()? {
                Token::Word(value) | Token::Quoted(value) if !value.is_empty() => {
                    Ok(Filter::State(value))
                }
                other => Err(format!("bad state value {other:?}")),
            },
            ("updated", Token::Colon) => self.updated_range(),
            ("updated", Token::Cmp(op)) => {
                let ms = match self.next()? {
                    Token::Word(word) | Token::Quoted(word) => parse_ms(&word)?,
                    other => return Err(format!("bad updated value {other:?}")),
                };
                Ok(match op {
                    ">=" => Filter::Updated {
                        low: Some((ms, true)),
                        high: None,
                    },
                    ">" => Filter::Updated {
                        low: Some((ms, false)),
                        high: None,
                    },
                    "<=" => Filter::Updated {
                        low: None,
                        high: Some((ms, true)),
                    },
                    _ => Filter::Updated {
                        low: None,
                        high: Some((ms, false)),
                    },
                })
            }
            ("uuid", Token::Colon) => {
                self.expect(&Token::Open('['))?;
                let mut uuids = Vec::new();
                loop {
                    match self.next()? {
                        Token::Word(uuid) | Token::Quoted(uuid) => uuids.push(uuid),
                        other => return Err(format!("bad uuid {other:?}")),
                    }
                    match self.next()? {
                        Token::Comma => continue,
                        Token::Close(']') => break,
                        other => {
                            return Err(format!("expected , or ] in uuid list, found {other:?}"));
                        }
                    }
                }
                Ok(Filter::UuidIn(uuids))
            }
            (field, token) => Err(format!("unsupported term {field} {token:?}")),
        }
    }

    fn updated_range(&mut self) -> Result<Filter, String> {
        let inclusive = match self.next()? {
            Token::Open('[') => true,
            Token::Open('(') => false,
            other => return Err(format!("expected [ or ( after updated:, found {other:?}")),
        };
        let low = self.instant()?;
        self.expect(&Token::DotDot)?;
        let high = self.instant()?;
        self.expect(&Token::Close(if inclusive { ']' } else { ')' }))?;
        Ok(Filter::Updated {
            low: Some((low, inclusive)),
            high: Some((high, inclusive)),
        })
    }

    fn instant(&mut self) -> Result<i64, String> {
        match self.next()? {
            Token::Quoted(text) => DateTime::parse_from_rfc3339(&text)
                .map(|at| at.timestamp_millis())
                .map_err(|_| format!("bad date {text:?}")),
            other => Err(format!("expected a quoted ISO date, found {other:?}")),
        }
    }
}

fn parse_ms(word: &str) -> Result<i64, String> {
    word.parse()
        .map_err(|_| format!("expected epoch milliseconds, found {word:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(state: &str, updated_ms: i64, uuid: &str) -> Fields<'static> {
        Fields {
            state: Box::leak(state.to_string().into_boxed_str()),
            updated_ms,
            uuid: Box::leak(uuid.to_string().into_boxed_str()),
        }
    }

    #[test]
    fn state_accepts_every_quoting() {
        let running = fields("RUNNING", 0, "u");
        let stopped = fields("STOPPED", 0, "u");
        for text in [
            "state:'RUNNING'",
            "state:`RUNNING`",
            "state:RUNNING",
            "state:\"RUNNING\"",
            "state: 'RUNNING'",
        ] {
            let filter = Filter::parse(text).expect(text);
            assert!(filter.matches(&running), "{text}");
            assert!(!filter.matches(&stopped), "{text}");
        }
    }

    #[test]
    fn iso_ranges_are_inclusive_or_exclusive() {
        let at = DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z")
            .expect("date")
            .timestamp_millis();
        let inclusive =
            Filter::parse(r#"updated:["2024-05-01T00:00:00.000Z".."2024-05-08T12:00:00.000Z"]"#)
                .expect("parses");
        let exclusive =
            Filter::parse(r#"updated:("2024-05-01T00:00:00Z".."2024-05-08T12:00:00Z")"#)
                .expect("parses");
        assert!(inclusive.matches(&fields("RUNNING", at, "u")));
        assert!(!exclusive.matches(&fields("RUNNING", at, "u")));
        assert!(exclusive.matches(&fields("RUNNING", at + 1, "u")));
        assert!(!inclusive.matches(&fields("RUNNING", at - 1, "u")));
    }

    #[test]
    fn cursor_form_and_boolean_operators() {
        let filter = Filter::parse(
            "(state:'RUNNING' OR state:STOPPED) and updated>=100 AND not uuid: [a-1,b-2]",
        )
        .expect("parses");
        assert!(filter.matches(&fields("STOPPED", 100, "c-3")));
        assert!(!filter.matches(&fields("STOPPED", 100, "a-1")));
        assert!(!filter.matches(&fields("STOPPED", 99, "c-3")));
        assert!(!filter.matches(&fields("DELETED", 200, "c-3")));

        let comparisons = Filter::parse("updated>10 and updated<20 and updated<=15").expect("ok");
        assert!(comparisons.matches(&fields("X", 15, "u")));
        assert!(!comparisons.matches(&fields("X", 10, "u")));
        assert!(!comparisons.matches(&fields("X", 16, "u")));
    }

    #[test]
    fn malformed_queries_are_errors() {
        for text in [
            r#"updated:["2024-03-26T10:00:00Z".."#,
            "state:",
            "state:'RUNNING",
            "(state:RUNNING",
            "state:RUNNING state:STOPPED",
            "name:foo",
            "updated>=abc",
            r#"updated:["yesterday".."now"]"#,
            "state:RUNNING and",
            "uuid: [a,",
        ] {
            assert!(Filter::parse(text).is_err(), "{text} should fail");
        }
        assert_eq!(Filter::parse("  ").expect("blank"), Filter::All);
    }
}
