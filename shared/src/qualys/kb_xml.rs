//! The KnowledgeBase XML: a streaming quick-xml reader of `KNOWLEDGE_BASE_VULN_LIST_OUTPUT`
//! into [`KbEntry`] values, and of the `SIMPLE_RETURN` error documents Qualys sends instead
//! (sometimes with HTTP 200).
//!
//! Text may be plain or CDATA anywhere and is trimmed; the HTML of DIAGNOSIS, CONSEQUENCE and
//! SOLUTION is kept as Qualys sends it. The DOCTYPE is skipped, never fetched, and its
//! entities are never expanded. XML-illegal control characters are stripped and invalid
//! UTF-8 is replaced before parsing. A body that ends early is reported as truncated (the
//! client retries it), never returned as a partial list.

use quick_xml::Reader;
use quick_xml::errors::{Error as XmlError, SyntaxError};
use quick_xml::events::Event;

use super::error::BodyError;
use super::time;
use crate::model::{CveRef, Cvss, KbEntry, Qid};

/// Root of a KB list answer.
const LIST_ROOT: &str = "KNOWLEDGE_BASE_VULN_LIST_OUTPUT";
/// Root of a Qualys v2 status/error answer.
const SIMPLE_ROOT: &str = "SIMPLE_RETURN";

/// What a KB answer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KbDocument {
    /// A (possibly empty) list of entries, and the truncation warning if Qualys sent one.
    List {
        /// The entries, in document order.
        entries: Vec<KbEntry>,
        /// A `WARNING` (code 1980: more results at `url`).
        warning: Option<KbWarning>,
    },
    /// A `SIMPLE_RETURN` status document.
    SimpleReturn(SimpleReturn),
}

/// The `RESPONSE/WARNING` of a truncated list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KbWarning {
    /// e.g. `1980`.
    pub code: Option<String>,
    /// What Qualys says.
    pub text: Option<String>,
    /// The URL of the next batch.
    pub url: Option<String>,
}

/// A `SIMPLE_RETURN` document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SimpleReturn {
    /// The Qualys code, e.g. `1905`, `1965`, `2001`.
    pub code: Option<String>,
    /// The message.
    pub text: Option<String>,
    /// `ITEM_LIST` key/value pairs.
    pub items: Vec<(String, String)>,
}

impl SimpleReturn {
    /// The `SECONDS_TO_WAIT` item of a rate-limit answer.
    pub fn seconds_to_wait(&self) -> Option<u64> {
        self.items
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("SECONDS_TO_WAIT"))
            .and_then(|(_, v)| v.trim().parse().ok())
    }
}

/// Replaces invalid UTF-8 and drops characters XML 1.0 forbids.
fn sanitize(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .filter(|c| {
            matches!(c, '\t' | '\n' | '\r') || (*c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
        })
        .collect()
}

/// Parses a KB answer (list or `SIMPLE_RETURN`).
pub(crate) fn parse_kb(body: &[u8]) -> Result<KbDocument, BodyError> {
    let text = sanitize(body);
    let mut reader = Reader::from_str(&text);
    let mut state = State::default();
    loop {
        let event = reader.read_event().map_err(|e| {
            let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
            // Markup that never closes before the end of the body is a cut-off transfer.
            let runs_to_end = text.get(at..).is_none_or(|rest| !rest.contains('>'));
            match e {
                XmlError::Syntax(SyntaxError::InvalidBangMarkup) if !runs_to_end => {
                    BodyError::Invalid(format!("KB XML is not well-formed at byte {at} ({e})"))
                }
                XmlError::Syntax(_) => BodyError::Truncated(format!("KB XML ends early ({e})")),
                other => {
                    BodyError::Invalid(format!("KB XML is not well-formed at byte {at} ({other})"))
                }
            }
        })?;
        match event {
            Event::Start(e) => state.start(e.name().as_ref())?,
            Event::Empty(e) => {
                state.start(e.name().as_ref())?;
                state.end();
            }
            Event::End(_) => state.end(),
            Event::Text(t) => state.text.push_str(&t.xml10_content()),
            Event::CData(c) => state.text.push_str(&c.into_inner()),
            Event::GeneralRef(r) => {
                if r.is_char_ref() {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        state.text.push(c);
                    }
                } else {
                    let name = r.xml10_content();
                    match predefined_entity(&name) {
                        Some(c) => state.text.push(c),
                        // Entities of the DOCTYPE are never expanded: keep them as written.
                        None => {
                            state.text.push('&');
                            state.text.push_str(&name);
                            state.text.push(';');
                        }
                    }
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    state.finish()
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

/// Parser state: the open elements, the text of the innermost one, and the records being
/// built.
#[derive(Debug, Default)]
struct State {
    stack: Vec<String>,
    text: String,
    root: Option<String>,
    complete: bool,
    entries: Vec<KbEntry>,
    entry: Option<KbEntry>,
    cve: Option<CveRef>,
    software: (Option<String>, Option<String>),
    warning: Option<KbWarning>,
    simple: SimpleReturn,
    item: (Option<String>, Option<String>),
}

fn text_opt(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn flag(text: &str) -> Option<bool> {
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

impl State {
    fn start(&mut self, name: &str) -> Result<(), BodyError> {
        if self.stack.is_empty() {
            if self.root.is_some() {
                return Err(BodyError::Invalid(format!(
                    "KB XML has a second root element <{name}>"
                )));
            }
            if name != LIST_ROOT && name != SIMPLE_ROOT {
                return Err(BodyError::Invalid(format!(
                    "KB answer has root <{name}>, expected {LIST_ROOT} or {SIMPLE_ROOT}"
                )));
            }
            self.root = Some(name.to_owned());
        }
        self.stack.push(name.to_owned());
        self.text.clear();
        let owned = self.vuln_path();
        let path: Option<Vec<&str>> = owned
            .as_ref()
            .map(|p| p.iter().map(String::as_str).collect());
        match path.as_deref() {
            Some([]) => self.entry = Some(KbEntry::default()),
            Some(["CVE_LIST", "CVE"]) => self.cve = Some(CveRef::default()),
            Some(["SOFTWARE_LIST", "SOFTWARE"]) => self.software = (None, None),
            Some(["CVSS"]) => self.with_entry(|e| e.cvss_v2 = Some(Cvss::default())),
            Some(["CVSS_V3"]) => self.with_entry(|e| e.cvss_v3 = Some(Cvss::default())),
            _ => {}
        }
        if self.path_ends_with(&["RESPONSE", "WARNING"]) {
            self.warning = Some(KbWarning::default());
        }
        if self.path_ends_with(&["ITEM_LIST", "ITEM"]) {
            self.item = (None, None);
        }
        Ok(())
    }

    fn end(&mut self) {
        let text = std::mem::take(&mut self.text);
        if let Some(path) = self.vuln_path() {
            let path: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
            self.vuln_field(&path, &text);
        } else if self.root.as_deref() == Some(LIST_ROOT) {
            self.warning_field(&text);
        } else {
            self.simple_field(&text);
        }
        self.stack.pop();
        if self.stack.is_empty() {
            self.complete = true;
        }
    }

    /// The open elements below the current `VULN_LIST/VULN`, or `None` outside one.
    fn vuln_path(&self) -> Option<Vec<String>> {
        let at = self
            .stack
            .windows(2)
            .position(|w| w[0] == "VULN_LIST" && w[1] == "VULN")?;
        Some(self.stack[at + 2..].to_vec())
    }

    fn path_ends_with(&self, tail: &[&str]) -> bool {
        self.stack.len() >= tail.len()
            && self.stack[self.stack.len() - tail.len()..]
                .iter()
                .zip(tail)
                .all(|(a, b)| a == b)
    }

    fn with_entry(&mut self, f: impl FnOnce(&mut KbEntry)) {
        if let Some(entry) = self.entry.as_mut() {
            f(entry);
        }
    }

    fn vuln_field(&mut self, path: &[&str], text: &str) {
        let value = text_opt(text);
        match path {
            [] => {
                if let Some(entry) = self.entry.take() {
                    if entry.qid > 0 {
                        self.entries.push(entry);
                    } else {
                        tracing::warn!("KB entry without a usable QID skipped");
                    }
                }
            }
            ["QID"] => {
                let qid = text.trim().parse::<Qid>().unwrap_or(0);
                self.with_entry(|e| e.qid = qid);
            }
            ["VULN_TYPE"] => self.with_entry(|e| e.vuln_type = value),
            ["SEVERITY_LEVEL"] => {
                self.with_entry(|e| e.severity = text.trim().parse().ok());
            }
            ["TITLE"] => self.with_entry(|e| e.title = value),
            ["CATEGORY"] => self.with_entry(|e| e.category = value),
            ["DIAGNOSIS"] => self.with_entry(|e| e.diagnosis = value),
            ["CONSEQUENCE"] => self.with_entry(|e| e.consequence = value),
            ["SOLUTION"] => self.with_entry(|e| e.solution = value),
            ["PUBLISHED_DATETIME"] => {
                self.with_entry(|e| e.published = time::parse_str(text));
            }
            ["LAST_SERVICE_MODIFICATION_DATETIME"] => {
                self.with_entry(|e| e.last_modified = time::parse_str(text));
            }
            ["PATCHABLE"] => self.with_entry(|e| e.patchable = flag(text)),
            ["PCI_FLAG"] => self.with_entry(|e| e.pci_flag = flag(text)),
            ["CVE_LIST", "CVE", "ID"] => {
                if let (Some(cve), Some(v)) = (self.cve.as_mut(), value) {
                    cve.id = v;
                }
            }
            ["CVE_LIST", "CVE", "URL"] => {
                if let Some(cve) = self.cve.as_mut() {
                    cve.url = value;
                }
            }
            ["CVE_LIST", "CVE"] => {
                if let Some(cve) = self.cve.take().filter(|c| !c.id.is_empty()) {
                    self.with_entry(|e| e.cves.push(cve));
                }
            }
            ["SOFTWARE_LIST", "SOFTWARE", "PRODUCT"] => self.software.0 = value,
            ["SOFTWARE_LIST", "SOFTWARE", "VENDOR"] => self.software.1 = value,
            ["SOFTWARE_LIST", "SOFTWARE"] => {
                let (product, vendor) = std::mem::take(&mut self.software);
                let name = match (vendor, product) {
                    (Some(v), Some(p)) => Some(format!("{v} {p}")),
                    (v, p) => v.or(p),
                };
                if let Some(name) = name {
                    self.with_entry(|e| e.software.push(name));
                }
            }
            ["VENDOR_REFERENCE_LIST", "VENDOR_REFERENCE", "ID"] => {
                if let Some(v) = value {
                    self.with_entry(|e| e.vendor_references.push(v));
                }
            }
            ["THREAT_INTELLIGENCE", "THREAT_INTEL"] => {
                if let Some(v) = value {
                    self.with_entry(|e| e.threat_intel.push(v));
                }
            }
            [version @ ("CVSS" | "CVSS_V3"), rest @ ..] => {
                let v3 = *version == "CVSS_V3";
                self.with_entry(|e| {
                    let cvss = if v3 { &mut e.cvss_v3 } else { &mut e.cvss_v2 };
                    let Some(cvss) = cvss.as_mut() else { return };
                    match rest {
                        ["BASE"] => cvss.base = value,
                        ["TEMPORAL"] => cvss.temporal = value,
                        ["VECTOR_STRING"] => cvss.vector = value,
                        ["ACCESS" | "ATTACK", "VECTOR"] => cvss.access_vector = value,
                        ["ACCESS" | "ATTACK", "COMPLEXITY"] => cvss.access_complexity = value,
                        _ => {}
                    }
                });
            }
            _ => {}
        }
    }

    fn warning_field(&mut self, text: &str) {
        let Some(warning) = self.warning.as_mut() else {
            return;
        };
        if self.stack.len() >= 2 && self.stack[self.stack.len() - 2] == "WARNING" {
            match self.stack.last().map(String::as_str) {
                Some("CODE") => warning.code = text_opt(text),
                Some("TEXT") => warning.text = text_opt(text),
                Some("URL") => warning.url = text_opt(text),
                _ => {}
            }
        }
    }

    fn simple_field(&mut self, text: &str) {
        let value = text_opt(text);
        if self.path_ends_with(&["SIMPLE_RETURN", "RESPONSE", "CODE"]) {
            self.simple.code = value;
        } else if self.path_ends_with(&["SIMPLE_RETURN", "RESPONSE", "TEXT"]) {
            self.simple.text = value;
        } else if self.path_ends_with(&["ITEM", "KEY"]) {
            self.item.0 = value;
        } else if self.path_ends_with(&["ITEM", "VALUE"]) {
            self.item.1 = value;
        } else if self.path_ends_with(&["ITEM_LIST", "ITEM"]) {
            let (key, value) = std::mem::take(&mut self.item);
            if let Some(key) = key {
                self.simple.items.push((key, value.unwrap_or_default()));
            }
        }
    }

    fn finish(self) -> Result<KbDocument, BodyError> {
        if !self.complete || !self.stack.is_empty() {
            let open = self
                .stack
                .last()
                .cloned()
                .unwrap_or_else(|| "the root".into());
            return Err(BodyError::Truncated(format!(
                "KB XML ends early (inside <{open}>)"
            )));
        }
        match self.root.as_deref() {
            Some(SIMPLE_ROOT) => Ok(KbDocument::SimpleReturn(self.simple)),
            _ => Ok(KbDocument::List {
                entries: self.entries,
                warning: self.warning,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(xml: &str) -> Vec<KbEntry> {
        match parse_kb(xml.as_bytes()) {
            Ok(KbDocument::List { entries, .. }) => entries,
            other => panic!("expected a list, got {other:?}"),
        }
    }

    #[test]
    fn plain_and_cdata_text_single_element_lists_and_control_chars() {
        let xml = "<?xml version=\"1.0\"?>\n<!DOCTYPE X SYSTEM \"http://127.0.0.1:1/x.dtd\" \
            [<!ENTITY boom \"BOOM\">]>\n<KNOWLEDGE_BASE_VULN_LIST_OUTPUT><RESPONSE>\
            <VULN_LIST><VULN><QID> 42 </QID><TITLE>  A &amp; B &boom; &#65;\u{1}</TITLE>\
            <DIAGNOSIS><![CDATA[ <P>html &quot;kept&quot; ]]></DIAGNOSIS>\
            <CVE_LIST><CVE><ID>CVE-1</ID><URL/></CVE></CVE_LIST><CATEGORY/>\
            </VULN></VULN_LIST></RESPONSE></KNOWLEDGE_BASE_VULN_LIST_OUTPUT>";
        let got = entries(xml);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qid, 42);
        assert_eq!(got[0].title.as_deref(), Some("A & B &boom; A"));
        assert_eq!(
            got[0].diagnosis.as_deref(),
            Some("<P>html &quot;kept&quot;")
        );
        assert_eq!(
            got[0].cves,
            vec![CveRef {
                id: "CVE-1".into(),
                url: None
            }]
        );
        assert_eq!(got[0].category, None);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut xml = b"<KNOWLEDGE_BASE_VULN_LIST_OUTPUT><RESPONSE><VULN_LIST><VULN><QID>7</QID>\
            <TITLE>caf"
            .to_vec();
        xml.push(0xE9);
        xml.extend_from_slice(
            b"</TITLE></VULN></VULN_LIST></RESPONSE></KNOWLEDGE_BASE_VULN_LIST_OUTPUT>",
        );
        let KbDocument::List { entries, .. } = parse_kb(&xml).expect("parses") else {
            panic!("expected a list");
        };
        assert_eq!(entries[0].title.as_deref(), Some("caf\u{FFFD}"));
    }

    #[test]
    fn truncated_bodies_are_reported_not_returned() {
        let full = "<KNOWLEDGE_BASE_VULN_LIST_OUTPUT><RESPONSE><VULN_LIST><VULN><QID>1</QID>\
            </VULN><VULN><QID>2</QID><TITLE><![CDATA[cut";
        for cut in [full.len(), full.len() - 10, 40, 5, 0] {
            let got = parse_kb(&full.as_bytes()[..cut]);
            assert!(
                matches!(got, Err(BodyError::Truncated(_))),
                "cut {cut}: {got:?}"
            );
        }
    }

    #[test]
    fn unexpected_root_is_invalid() {
        assert!(matches!(
            parse_kb(b"<html><body/></html>"),
            Err(BodyError::Invalid(_))
        ));
    }

    #[test]
    fn warning_with_url_is_kept() {
        let xml = "<KNOWLEDGE_BASE_VULN_LIST_OUTPUT><RESPONSE><VULN_LIST><VULN><QID>1</QID>\
            </VULN></VULN_LIST><WARNING><CODE>1980</CODE><TEXT>more</TEXT>\
            <URL><![CDATA[https://h/api/2.0/fo/knowledge_base/vuln/?action=list&id_min=2]]></URL>\
            </WARNING></RESPONSE></KNOWLEDGE_BASE_VULN_LIST_OUTPUT>";
        let KbDocument::List { entries, warning } = parse_kb(xml.as_bytes()).expect("parses")
        else {
            panic!("expected a list");
        };
        assert_eq!(entries.len(), 1);
        let warning = warning.expect("warning");
        assert_eq!(warning.code.as_deref(), Some("1980"));
        assert_eq!(
            warning.url.as_deref(),
            Some("https://h/api/2.0/fo/knowledge_base/vuln/?action=list&id_min=2")
        );
    }
}
