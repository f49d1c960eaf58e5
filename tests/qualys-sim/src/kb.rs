//! KnowledgeBase entries and the XML the KnowledgeBase API answers with.
//!
//! Owns: the facts of one QID (`KbEntry`), rendering a `VULN` element (generated entries) or
//! replaying a recorded one (fixture entries), the `KNOWLEDGE_BASE_VULN_LIST_OUTPUT` envelope,
//! `SIMPLE_RETURN` errors, parsing of the `ids` parameter and reading facts out of recorded XML.

use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::Reader;
use quick_xml::events::Event;

/// DOCTYPE host used in every answer (a Qualys POD, never contacted).
const DTD_HOST: &str = "https://qualysapi.qg2.apps.qualys.com";

/// What the simulator knows about one QID.
#[derive(Clone, Debug, Default)]
pub(crate) struct KbEntry {
    pub qid: u32,
    pub title: String,
    pub severity: u8,
    pub vuln_type: String,
    pub category: String,
    pub published_ms: i64,
    pub modified_ms: i64,
    pub patchable: bool,
    pub cves: Vec<String>,
    pub cvss_base: Option<String>,
    pub cvss_temporal: Option<String>,
    /// CVSS v2 access vector code: 1 local, 2 adjacent, 3 network.
    pub access_vector: u8,
    pub cvss3_base: Option<String>,
    pub cvss3_temporal: Option<String>,
    pub product: String,
    pub vendor: String,
    /// Package kind for findings built from this entry: OS package or library file.
    pub library: bool,
    /// A recorded `<VULN>…</VULN>` element, replayed verbatim.
    pub raw: Option<String>,
}

impl KbEntry {
    /// The CVSS v2 access vector as the CS API spells it.
    pub(crate) fn access_vector_name(&self) -> &'static str {
        match self.access_vector {
            1 => "Local",
            2 => "Adjacent Network",
            _ => "Network",
        }
    }

    /// The `<VULN>` element for this entry.
    pub(crate) fn render(&self, out: &mut String) {
        if let Some(raw) = &self.raw {
            out.push_str("      ");
            out.push_str(raw);
            out.push('\n');
            return;
        }
        // Free text alternates between CDATA and escaped plain text, as real answers mix both.
        let cdata = !self.qid.is_multiple_of(3);
        let text = |value: &str| {
            if cdata {
                format!("<![CDATA[{value}]]>")
            } else {
                escape(value)
            }
        };
        let mut v = String::with_capacity(4096);
        v.push_str("      <VULN>\n");
        v.push_str(&format!("        <QID>{}</QID>\n", self.qid));
        v.push_str(&format!(
            "        <VULN_TYPE>{}</VULN_TYPE>\n",
            self.vuln_type
        ));
        v.push_str(&format!(
            "        <SEVERITY_LEVEL>{}</SEVERITY_LEVEL>\n",
            self.severity
        ));
        v.push_str(&format!("        <TITLE>{}</TITLE>\n", text(&self.title)));
        v.push_str(&format!(
            "        <CATEGORY>{}</CATEGORY>\n",
            escape(&self.category)
        ));
        v.push_str(&format!(
            "        <LAST_SERVICE_MODIFICATION_DATETIME>{}</LAST_SERVICE_MODIFICATION_DATETIME>\n",
            iso_seconds(self.modified_ms)
        ));
        v.push_str(&format!(
            "        <PUBLISHED_DATETIME>{}</PUBLISHED_DATETIME>\n",
            iso_seconds(self.published_ms)
        ));
        v.push_str(&format!(
            "        <PATCHABLE>{}</PATCHABLE>\n",
            u8::from(self.patchable)
        ));
        v.push_str("        <SOFTWARE_LIST>\n          <SOFTWARE>\n");
        v.push_str(&format!(
            "            <PRODUCT><![CDATA[{}]]></PRODUCT>\n            <VENDOR><![CDATA[{}]]></VENDOR>\n",
            self.product, self.vendor
        ));
        v.push_str("          </SOFTWARE>\n        </SOFTWARE_LIST>\n");
        if !self.cves.is_empty() {
            v.push_str("        <CVE_LIST>\n");
            for cve in &self.cves {
                v.push_str(&format!(
                    "          <CVE>\n            <ID>{}</ID>\n            <URL>{}</URL>\n          </CVE>\n",
                    text(cve),
                    text(&format!("http://cve.mitre.org/cgi-bin/cvename.cgi?name={cve}"))
                ));
            }
            v.push_str("        </CVE_LIST>\n");
        }
        let advisory = format!(
            "The installed {product} package is affected by the issues listed in {cves}.<P>\nQID Detection Logic (Authenticated):<BR>The check compares the installed {product} version with the first fixed version.<BR>",
            product = self.product,
            cves = if self.cves.is_empty() {
                "the vendor advisory".to_string()
            } else {
                self.cves.join(", ")
            }
        );
        v.push_str(&format!(
            "        <DIAGNOSIS>{}</DIAGNOSIS>\n",
            text(&advisory)
        ));
        v.push_str(&format!(
            "        <CONSEQUENCE>{}</CONSEQUENCE>\n",
            text("Successful exploitation may let an attacker compromise the workload.<P>")
        ));
        v.push_str(&format!(
            "        <SOLUTION>{}</SOLUTION>\n",
            text(&format!(
                "<P>Customers are advised to upgrade {} to a fixed version. See <A HREF=\"https://vendor.example/advisories/{}\" TARGET=\"_blank\">the &quot;vendor advisory&quot;</A>.",
                self.product, self.qid
            ))
        ));
        if let (Some(base), Some(temporal)) = (&self.cvss_base, &self.cvss_temporal) {
            v.push_str(&format!(
                "        <CVSS>\n          <BASE source=\"service\">{base}</BASE>\n          <TEMPORAL>{temporal}</TEMPORAL>\n          <ACCESS>\n            <VECTOR>{}</VECTOR>\n            <COMPLEXITY>2</COMPLEXITY>\n          </ACCESS>\n          <AUTHENTICATION>1</AUTHENTICATION>\n        </CVSS>\n",
                self.access_vector
            ));
        }
        if let (Some(base), Some(temporal)) = (&self.cvss3_base, &self.cvss3_temporal) {
            v.push_str(&format!(
                "        <CVSS_V3>\n          <BASE>{base}</BASE>\n          <TEMPORAL>{temporal}</TEMPORAL>\n          <ATTACK>\n            <VECTOR>{}</VECTOR>\n            <COMPLEXITY>1</COMPLEXITY>\n          </ATTACK>\n        </CVSS_V3>\n",
                self.access_vector + 1
            ));
        }
        v.push_str("        <PCI_FLAG>1</PCI_FLAG>\n");
        if self.severity >= 4 {
            v.push_str("        <THREAT_INTELLIGENCE>\n          <THREAT_INTEL id=\"2\"><![CDATA[Exploit_Public]]></THREAT_INTEL>\n        </THREAT_INTELLIGENCE>\n");
        }
        v.push_str("        <DISCOVERY>\n          <REMOTE>0</REMOTE>\n          <AUTH_TYPE_LIST>\n            <AUTH_TYPE>Unix</AUTH_TYPE>\n          </AUTH_TYPE_LIST>\n        </DISCOVERY>\n");
        v.push_str("      </VULN>\n");
        out.push_str(&v);
    }
}

/// Escapes text for XML element content.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `2024-04-02T10:05:12Z` for epoch ms.
pub(crate) fn iso_seconds(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The full list answer for the given entries.
pub(crate) fn list_output<'a>(entries: impl Iterator<Item = &'a KbEntry>, now_ms: i64) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n");
    out.push_str(&format!(
        "<!DOCTYPE KNOWLEDGE_BASE_VULN_LIST_OUTPUT SYSTEM \"{DTD_HOST}/api/2.0/fo/knowledge_base/vuln/knowledge_base_vuln_list_output.dtd\">\n"
    ));
    out.push_str("<KNOWLEDGE_BASE_VULN_LIST_OUTPUT>\n  <RESPONSE>\n");
    out.push_str(&format!(
        "    <DATETIME>{}</DATETIME>\n",
        iso_seconds(now_ms)
    ));
    out.push_str("<!-- keep-alive for KNOWLEDGE_BASE_VULN_LIST_OUTPUT  -->\n");
    let mut body = String::new();
    for entry in entries {
        entry.render(&mut body);
    }
    if !body.is_empty() {
        out.push_str("    <VULN_LIST>\n");
        out.push_str(&body);
        out.push_str("    </VULN_LIST>\n");
    }
    out.push_str("  </RESPONSE>\n</KNOWLEDGE_BASE_VULN_LIST_OUTPUT>\n");
    out.push_str(&format!(
        "<!-- CONFIDENTIAL AND PROPRIETARY INFORMATION. Qualys provides the QualysGuard Service \"As Is,\" without any warranty of any kind. Qualys makes no warranty that the information contained in this report is complete or error-free. Copyright {}, Qualys, Inc. //--> \n",
        DateTime::<Utc>::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .format("%Y")
    ));
    out
}

/// A `SIMPLE_RETURN` error document.
pub(crate) fn simple_return(
    code: Option<u32>,
    text: &str,
    seconds_to_wait: Option<u64>,
    now_ms: i64,
) -> String {
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n");
    out.push_str(&format!(
        "<!DOCTYPE SIMPLE_RETURN SYSTEM \"{DTD_HOST}/api/2.0/simple_return.dtd\">\n"
    ));
    out.push_str("<SIMPLE_RETURN>\n  <RESPONSE>\n");
    out.push_str(&format!(
        "    <DATETIME>{}</DATETIME>\n",
        iso_seconds(now_ms)
    ));
    if let Some(code) = code {
        out.push_str(&format!("    <CODE>{code}</CODE>\n"));
    }
    out.push_str(&format!("    <TEXT>{}</TEXT>\n", escape(text)));
    if let Some(wait) = seconds_to_wait {
        out.push_str(&format!(
            "    <ITEM_LIST>\n      <ITEM>\n        <KEY>SECONDS_TO_WAIT</KEY>\n        <VALUE>{wait}</VALUE>\n      </ITEM>\n    </ITEM_LIST>\n"
        ));
    }
    out.push_str("  </RESPONSE>\n</SIMPLE_RETURN>\n");
    out
}

/// The text of a 1965 answer: "…for another 20 minutes and 42 seconds."
pub(crate) fn wait_text(wait_secs: u64) -> String {
    let (minutes, seconds) = (wait_secs / 60, wait_secs % 60);
    if minutes == 0 {
        format!("This API cannot be run again for another {seconds} seconds.")
    } else {
        format!("This API cannot be run again for another {minutes} minutes and {seconds} seconds.")
    }
}

/// Inclusive QID ranges from an `ids` value such as `1,2,5-9`.
pub(crate) fn parse_ids(value: &str) -> Result<Vec<(u32, u32)>, String> {
    let invalid = |token: &str| {
        format!(
            "parameter ids has invalid value: {value} (neither a positive integer nor a range: {token})"
        )
    };
    let positive = |text: &str| text.parse::<u32>().ok().filter(|n| *n > 0);
    let mut ranges = Vec::new();
    for token in value.split(',') {
        let token = token.trim();
        let range = match token.split_once('-') {
            Some((low, high)) => match (positive(low), positive(high)) {
                (Some(low), Some(high)) if low <= high => (low, high),
                _ => return Err(invalid(token)),
            },
            None => match positive(token) {
                Some(qid) => (qid, qid),
                None => return Err(invalid(token)),
            },
        };
        ranges.push(range);
    }
    Ok(ranges)
}

/// Splits a recorded list answer into entries: facts plus the verbatim `<VULN>` element.
pub(crate) fn entries_from_recording(xml: &str) -> Result<Vec<KbEntry>, String> {
    let mut reader = Reader::from_str(xml);
    let mut entries = Vec::new();
    let mut start = None;
    loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event() {
            Ok(Event::Start(e)) if e.name().as_ref() == "VULN" => start = Some(before),
            Ok(Event::End(e)) if e.name().as_ref() == "VULN" => {
                let from = start.take().ok_or("</VULN> without <VULN>")?;
                let raw = &xml[from..reader.buffer_position() as usize];
                entries.push(facts(raw)?);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("recorded KB XML does not parse: {e}")),
        }
    }
    Ok(entries)
}

/// Reads the facts of one recorded `<VULN>` element.
fn facts(raw: &str) -> Result<KbEntry, String> {
    let mut reader = Reader::from_str(raw);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut entry = KbEntry {
        raw: Some(raw.to_string()),
        access_vector: 3,
        ..KbEntry::default()
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                path.push(e.name().as_ref().to_string());
                text.clear();
            }
            Ok(Event::Text(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::CData(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) => match r.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => text.push_str(match r.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                }),
            },
            Ok(Event::End(_)) => {
                let value = text.trim().to_string();
                let joined = path.join("/");
                match joined.as_str() {
                    "VULN/QID" => entry.qid = value.parse().map_err(|_| "bad QID")?,
                    "VULN/TITLE" => entry.title = value,
                    "VULN/SEVERITY_LEVEL" => entry.severity = value.parse().unwrap_or(1),
                    "VULN/VULN_TYPE" => entry.vuln_type = value,
                    "VULN/CATEGORY" => entry.category = value,
                    "VULN/PUBLISHED_DATETIME" => entry.published_ms = parse_iso(&value),
                    "VULN/LAST_SERVICE_MODIFICATION_DATETIME" => {
                        entry.modified_ms = parse_iso(&value)
                    }
                    "VULN/PATCHABLE" => entry.patchable = value == "1",
                    "VULN/CVE_LIST/CVE/ID" => entry.cves.push(value),
                    "VULN/CVSS/BASE" => entry.cvss_base = Some(value),
                    "VULN/CVSS/TEMPORAL" => entry.cvss_temporal = Some(value),
                    "VULN/CVSS/ACCESS/VECTOR" => entry.access_vector = value.parse().unwrap_or(3),
                    "VULN/CVSS_V3/BASE" => entry.cvss3_base = Some(value),
                    "VULN/CVSS_V3/TEMPORAL" => entry.cvss3_temporal = Some(value),
                    "VULN/SOFTWARE_LIST/SOFTWARE/PRODUCT" if entry.product.is_empty() => {
                        entry.product = value
                    }
                    "VULN/SOFTWARE_LIST/SOFTWARE/VENDOR" if entry.vendor.is_empty() => {
                        entry.vendor = value
                    }
                    _ => {}
                }
                path.pop();
                text.clear();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("recorded VULN does not parse: {e}")),
        }
    }
    if entry.qid == 0 {
        return Err("recorded VULN has no QID".into());
    }
    Ok(entry)
}

fn parse_iso(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.timestamp_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_lists_and_ranges() {
        assert_eq!(
            parse_ids("1,2,5-9").expect("valid"),
            vec![(1, 1), (2, 2), (5, 9)]
        );
        assert_eq!(parse_ids("376157").expect("valid"), vec![(376157, 376157)]);
        for bad in ["abc123", "1,,2", "0", "9-5", "1-", "-3", "1.5", ""] {
            assert!(parse_ids(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_ids("abc123").expect_err("invalid"),
            "parameter ids has invalid value: abc123 (neither a positive integer nor a range: abc123)"
        );
    }

    #[test]
    fn wait_text_matches_recorded_wording() {
        assert_eq!(
            wait_text(1242),
            "This API cannot be run again for another 20 minutes and 42 seconds."
        );
    }

    #[test]
    fn facts_come_out_of_a_recorded_vuln() {
        let xml = "<VULN><QID>42</QID><TITLE><![CDATA[A &amp; B]]></TITLE><SEVERITY_LEVEL>4</SEVERITY_LEVEL>\
            <CATEGORY>R&amp;D</CATEGORY><CVE_LIST><CVE><ID>CVE-1</ID></CVE></CVE_LIST>\
            <CVSS><BASE source=\"service\">7.2</BASE><ACCESS><VECTOR>1</VECTOR></ACCESS></CVSS></VULN>";
        let entries = entries_from_recording(xml).expect("parses");
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!((entry.qid, entry.severity), (42, 4));
        assert_eq!(entry.title, "A &amp; B");
        assert_eq!(entry.category, "R&D");
        assert_eq!(entry.cves, vec!["CVE-1".to_string()]);
        assert_eq!(entry.cvss_base.as_deref(), Some("7.2"));
        assert_eq!(entry.access_vector_name(), "Local");
    }
}
