//! Helpers shared by the Qualys client tests: fixture files, a wiremock gateway with `/auth`,
//! and clients with millisecond retry delays.

#![allow(dead_code)] // Each test crate uses a different subset.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeZone, Utc};
use qcvr::config::ListingMode;
use qcvr::qualys::{
    ClientSettings, ContainerPage, ContainerQuery, ListCursor, Qql, QualysApi, QualysClient,
    QualysError, QualysHosts, RetryPolicy, StaticCredentials,
};
use qcvr::run::Window;
use tokio::time::Instant;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

/// The test login; tests assert it never shows in errors.
pub const USER: &str = "acme3xy";
/// A password with characters that need form encoding.
pub const PASSWORD: &str = "s3cr&t+pa%ss word";
/// The KnowledgeBase endpoint (POST for batches, GET for truncation follow-ups).
pub const KB_PATH: &str = "/api/2.0/fo/knowledge_base/vuln/";

/// `QCVR_FIXTURES_DIR`, or `shared/fixtures/qualys` beside the repository.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("QCVR_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures/qualys"
            ))
        })
}

/// A fixture file's bytes.
pub fn fixture(rel: &str) -> Vec<u8> {
    let file = fixtures_dir().join(rel);
    std::fs::read(&file).unwrap_or_else(|e| panic!("fixture {}: {e}", file.display()))
}

/// A 200 whose body is the fixture file `rel`, without recorded headers.
pub fn fixture_ok(rel: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_bytes(fixture(rel))
}

/// A response built from `name.json|xml` and its `name.headers` (status line + headers;
/// hop-by-hop headers dropped).
pub fn fixture_response(body: &str, headers: &str) -> ResponseTemplate {
    let text = String::from_utf8(fixture(headers)).expect("headers are text");
    let mut lines = text.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut response = ResponseTemplate::new(status).set_body_bytes(fixture(body));
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if [
            "transfer-encoding",
            "connection",
            "keep-alive",
            "content-length",
            "date",
        ]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
        {
            continue;
        }
        response = response.insert_header(name, value.trim());
    }
    response
}

/// A JWT-shaped token expiring `secs` from now.
pub fn jwt(secs: i64) -> String {
    let now = Utc::now().timestamp();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"iat":{now},"exp":{}}}"#, now + secs)),
        URL_SAFE_NO_PAD.encode(b"not-a-real-signature")
    )
}

/// Mounts `POST /auth` answering 201 with `token`.
pub async fn mount_auth(server: &MockServer, token: &str) {
    Mock::given(method("POST"))
        .and(path("/auth"))
        .and(body_string_contains("token=true"))
        .respond_with(ResponseTemplate::new(201).set_body_string(token))
        .mount(server)
        .await;
}

/// A gateway whose `/auth` hands out a token valid for four hours.
pub async fn gateway() -> MockServer {
    let server = MockServer::start().await;
    mount_auth(&server, &jwt(4 * 3600)).await;
    server
}

/// Drops every mock and request of `server` and mounts a fresh four-hour `/auth`.
pub async fn reset_gateway(server: &MockServer) {
    server.reset().await;
    mount_auth(server, &jwt(4 * 3600)).await;
}

/// Mounts `verb at` answering `response`: to the first `times` matching requests with
/// `Some(times)`, to all of them with `None`. Mocks mounted earlier match first.
pub async fn mount(
    server: &MockServer,
    verb: &str,
    at: &str,
    response: impl Respond + 'static,
    times: Option<u64>,
) {
    let mock = Mock::given(method(verb))
        .and(path(at))
        .respond_with(response);
    match times {
        Some(n) => mock.up_to_n_times(n),
        None => mock,
    }
    .mount(server)
    .await;
}

/// Mounts `POST` [`KB_PATH`] answering `response` (see [`mount`] for `times`).
pub async fn serve_kb(server: &MockServer, response: ResponseTemplate, times: Option<u64>) {
    mount(server, "POST", KB_PATH, response, times).await;
}

/// Retry delays of a millisecond or less, no jitter; one advertised second lasts 100 µs.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
        concurrency_wait: Duration::from_millis(1),
        rate_limit_fallback_base: Duration::from_millis(1),
        rate_limit_fallback_cap: Duration::from_millis(5),
        jitter: Duration::ZERO,
        advertised_second: Duration::from_micros(100),
        ..RetryPolicy::default()
    }
}

/// A client for `server` (both hosts) with `policy`.
pub fn client_with(
    server: &MockServer,
    settings: ClientSettings,
) -> QualysClient<StaticCredentials> {
    let hosts = QualysHosts::new(&server.uri(), Some(&server.uri())).expect("loopback hosts");
    QualysClient::new(settings, hosts, StaticCredentials::new(USER, PASSWORD)).expect("client")
}

/// A client for `server` with fast retries.
pub fn client(server: &MockServer) -> QualysClient<StaticCredentials> {
    client_with(
        server,
        ClientSettings {
            retry: fast_policy(),
            ..ClientSettings::default()
        },
    )
}

/// A client with the default (real-time) retry delays but no jitter, for tests that check an
/// advertised wait is reported rather than slept through.
pub fn real_delay_client(server: &MockServer) -> QualysClient<StaticCredentials> {
    client_with(
        server,
        ClientSettings {
            retry: RetryPolicy {
                jitter: Duration::ZERO,
                ..RetryPolicy::default()
            },
            ..ClientSettings::default()
        },
    )
}

/// The first page of a listing of [`query`] through a fast client.
pub async fn first_page(
    server: &MockServer,
    page_size: u32,
    mode: ListingMode,
) -> Result<ContainerPage, QualysError> {
    client(server)
        .list_containers(&query(page_size, mode), &ListCursor::Start, deadline())
        .await
}

/// A deadline far enough for every fast retry.
pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// The window used in listing tests: 2024-03-26 .. 2024-04-02T10:00Z.
pub fn window() -> Window {
    Window {
        since: Utc
            .with_ymd_and_hms(2024, 3, 26, 10, 0, 0)
            .single()
            .expect("valid"),
        until: Utc
            .with_ymd_and_hms(2024, 4, 2, 10, 0, 0)
            .single()
            .expect("valid"),
    }
}

/// A query for `state:'RUNNING'` over [`window`].
pub fn query(page_size: u32, mode: ListingMode) -> ContainerQuery {
    ContainerQuery {
        filter: Qql::parse("state:'RUNNING'").expect("valid filter"),
        window: window(),
        page_size,
        mode,
    }
}

/// Requests the server got for `path_`.
pub async fn requests_to(server: &MockServer, path_: &str) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == path_)
        .collect()
}
