//! Helpers shared by the simulator's HTTP tests: fixture paths, clients, tokens, XML trees.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::path::PathBuf;

use qualys_sim::{SimConfig, SimHandle, Simulator};
use quick_xml::Reader;
use quick_xml::events::Event;

/// The fixture directory: `QCVR_FIXTURES_DIR`, else `shared/fixtures/qualys` beside the repo.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("QCVR_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/qualys"),
    }
}

/// Reads a fixture file as text.
pub fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", path.display()))
}

/// Reads a fixture file as JSON.
pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).expect("fixture is JSON")
}

/// Starts a simulator for `config`.
pub async fn start(config: SimConfig) -> SimHandle {
    Simulator::start(config).await.expect("simulator starts")
}

/// A plain HTTP client.
pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Fetches a JWT from `POST /auth`.
pub async fn token(sim: &SimHandle) -> String {
    let response = client()
        .post(format!("{}/auth", sim.base_url()))
        .form(&[
            ("username", "acme"),
            ("password", "secret"),
            ("token", "true"),
        ])
        .send()
        .await
        .expect("auth call");
    assert_eq!(response.status(), 201);
    response.text().await.expect("token body")
}

/// `GET` on the gateway with a bearer token and query parameters.
pub async fn gateway_get(
    sim: &SimHandle,
    token: &str,
    path: &str,
    query: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .query(query)
        .send()
        .await
        .expect("gateway call")
}

/// `POST` to the KnowledgeBase with Basic auth and `X-Requested-With`.
pub async fn kb_post(sim: &SimHandle, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!(
            "{}/api/2.0/fo/knowledge_base/vuln/",
            sim.base_url()
        ))
        .basic_auth("acme", Some("secret"))
        .header("X-Requested-With", "qcvr-tests")
        .form(form)
        .send()
        .await
        .expect("kb call")
}

/// An XML element tree without comments, declarations and whitespace-only text.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> Node {
    Node {
        name: e.name().as_ref().to_string(),
        attributes: e
            .attributes()
            .map(|a| {
                let a = a.expect("attribute");
                (a.key.as_ref().to_string(), a.value.as_ref().to_string())
            })
            .collect(),
        text: String::new(),
        children: vec![],
    }
}

/// Parses XML into a [`Node`] tree; `DATETIME` texts are blanked (they carry the answer time).
pub fn xml_tree(xml: &str) -> Node {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Node> = vec![Node {
        name: "#document".into(),
        attributes: vec![],
        text: String::new(),
        children: vec![],
    }];
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => stack.push(element(&e)),
            Event::Empty(e) => stack
                .last_mut()
                .expect("open element")
                .children
                .push(element(&e)),
            Event::Text(t) => stack
                .last_mut()
                .expect("open element")
                .text
                .push_str(&t.xml10_content()),
            Event::CData(t) => stack
                .last_mut()
                .expect("open element")
                .text
                .push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let text = &mut stack.last_mut().expect("open element").text;
                text.push('&');
                text.push_str(r.as_ref());
                text.push(';');
            }
            Event::End(_) => {
                let mut node = stack.pop().expect("open element");
                node.text = node.text.trim().to_string();
                if node.name == "DATETIME" {
                    node.text.clear();
                }
                stack.last_mut().expect("parent").children.push(node);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut document = stack.pop().expect("document");
    document.children.pop().expect("root element")
}
