//! The Qualys client against wiremock: auth and token refresh, rate limits, retries,
//! deadlines, listing (bulk Link cursor, keyset walk with ties) and request validation.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::DateTime;
use qcvr::config::ListingMode;
use qcvr::model::Vulnerability;
use qcvr::qualys::{ClientSettings, ListCursor, Qql, QualysApi, QualysError};
use support::*;
use tokio::time::Instant;
use wiremock::matchers::{
    basic_auth, bearer_token, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SHA: &str = "ae6f4d93848e75f67c37a2b3416da4a16b47e87fad7b5cb7c9826ad6ddaa77b9";
const VULN_PATH: &str =
    "/csapi/v1.3/containers/ae6f4d93848e75f67c37a2b3416da4a16b47e87fad7b5cb7c9826ad6ddaa77b9/vuln";

fn no_vulns() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string(r#"{"details":{"vulns":[]}}"#)
}

/// Mounts `GET VULN_PATH` answering `response` (see [`mount`] for `times`).
async fn serve_vulns(server: &MockServer, response: ResponseTemplate, times: Option<u64>) {
    mount(server, "GET", VULN_PATH, response, times).await;
}

fn error_429() -> ResponseTemplate {
    fixture_response("cs/error-429.json", "cs/error-429.headers")
}

fn jwt_expired() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_bytes(fixture("auth/401-jwt-expired.json"))
}

/// One vulnerability request for [`SHA`] through a fresh fast client.
async fn fetch_vulns(server: &MockServer) -> Result<Vec<Vulnerability>, QualysError> {
    client(server)
        .container_vulnerabilities(SHA, deadline())
        .await
}

fn assert_no_secrets(error: &QualysError, token: &str) {
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(PASSWORD), "password leaked: {shown}");
        assert!(!shown.contains("s3cr"), "password leaked: {shown}");
        assert!(!shown.contains(token), "token leaked: {shown}");
        assert!(
            !shown.to_ascii_lowercase().contains("authorization"),
            "header leaked: {shown}"
        );
    }
}

#[tokio::test]
async fn token_is_fetched_once_form_encoded_and_reused() {
    let server = MockServer::start().await;
    let token = jwt(4 * 3600);
    mount_auth(&server, &token).await;
    Mock::given(method("GET"))
        .and(path(VULN_PATH))
        .and(bearer_token(token.as_str()))
        .respond_with(no_vulns())
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);

    client
        .container_vulnerabilities(SHA, deadline())
        .await
        .expect("first call");
    client
        .container_vulnerabilities(SHA, deadline())
        .await
        .expect("second call");

    let auth = requests_to(&server, "/auth").await;
    assert_eq!(auth.len(), 1, "the token is cached");
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&auth[0].body)
        .into_owned()
        .collect();
    assert_eq!(form.get("username").map(String::as_str), Some(USER));
    assert_eq!(form.get("password").map(String::as_str), Some(PASSWORD));
    assert_eq!(form.get("token").map(String::as_str), Some("true"));
    assert_eq!(form.get("permissions").map(String::as_str), Some("true"));
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_retries() {
    let server = gateway().await;
    serve_vulns(&server, jwt_expired(), Some(1)).await;
    serve_vulns(&server, no_vulns(), None).await;

    fetch_vulns(&server)
        .await
        .expect("the retry with a new token succeeds");

    assert_eq!(requests_to(&server, "/auth").await.len(), 2);
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_second_401_is_auth_failed_without_secrets() {
    let server = MockServer::start().await;
    let token = jwt(4 * 3600);
    mount_auth(&server, &token).await;
    serve_vulns(&server, jwt_expired(), None).await;

    let err = fetch_vulns(&server).await.expect_err("refused twice");

    assert!(matches!(err, QualysError::AuthFailed { .. }), "{err:?}");
    assert_eq!(err.error_type(), "AuthFailed");
    assert_eq!(requests_to(&server, "/auth").await.len(), 2);
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 2);
    assert_no_secrets(&err, &token);
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_before_use() {
    let server = MockServer::start().await;
    mount_auth(&server, &jwt(5 * 60)).await;
    serve_vulns(&server, no_vulns(), None).await;
    let client = client(&server);

    client
        .container_vulnerabilities(SHA, deadline())
        .await
        .expect("first");
    client
        .container_vulnerabilities(SHA, deadline())
        .await
        .expect("second");

    // Each token expires within the 10-minute leeway, so each call asks for a new one.
    assert_eq!(requests_to(&server, "/auth").await.len(), 2);
    assert!(
        requests_to(&server, VULN_PATH)
            .await
            .iter()
            .all(|r| r.headers.get("authorization").is_some())
    );
}

#[tokio::test]
async fn refused_credentials_are_auth_failed_without_the_password() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        "/auth",
        ResponseTemplate::new(401).set_body_string("Bad credentials"),
        None,
    )
    .await;

    let err = fetch_vulns(&server).await.expect_err("refused");

    assert!(matches!(err, QualysError::AuthFailed { .. }), "{err:?}");
    assert_no_secrets(&err, "no-token");
    assert!(requests_to(&server, VULN_PATH).await.is_empty());
}

#[tokio::test]
async fn a_429_waits_and_retries() {
    let server = gateway().await;
    serve_vulns(&server, error_429(), Some(2)).await;
    serve_vulns(&server, no_vulns(), None).await;

    fetch_vulns(&server).await.expect("third attempt succeeds");

    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 3);
}

#[tokio::test]
async fn a_429_past_the_deadline_is_rate_limited_at_once() {
    let server = gateway().await;
    serve_vulns(&server, error_429(), None).await;
    // Real seconds: the advertised 23 s wait cannot fit before a 5 s deadline.
    let client = real_delay_client(&server);

    let call = client.container_vulnerabilities(SHA, Instant::now() + Duration::from_secs(5));
    let err = tokio::time::timeout(Duration::from_secs(4), call)
        .await
        .expect("returns without sleeping")
        .expect_err("rate limited");

    assert!(
        matches!(err, QualysError::RateLimited { retry_after } if retry_after == Duration::from_secs(23)),
        "{err:?}"
    );
    assert_eq!(err.error_type(), "RateLimited");
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 1);
}

#[tokio::test]
async fn server_errors_back_off_then_succeed() {
    let server = gateway().await;
    serve_vulns(&server, ResponseTemplate::new(503), Some(1)).await;
    serve_vulns(&server, ResponseTemplate::new(502), Some(1)).await;
    serve_vulns(&server, no_vulns(), None).await;

    fetch_vulns(&server).await.expect("third attempt succeeds");
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 3);
}

#[tokio::test]
async fn server_errors_exhaust_into_transient() {
    let server = gateway().await;
    serve_vulns(&server, ResponseTemplate::new(500), None).await;

    let err = fetch_vulns(&server).await.expect_err("never recovers");

    assert!(matches!(err, QualysError::Transient { .. }), "{err:?}");
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 5);
}

#[tokio::test]
async fn other_client_errors_are_not_retried() {
    let server = gateway().await;
    serve_vulns(
        &server,
        ResponseTemplate::new(404).set_body_string(
            r#"{"errorCode":"404 NOT_FOUND","message":"No container","timestamp":1}"#,
        ),
        None,
    )
    .await;

    let err = fetch_vulns(&server).await.expect_err("unknown sha");

    assert!(
        matches!(&err, QualysError::Rejected { status: 404, code, .. } if code == "404 NOT_FOUND"),
        "{err:?}"
    );
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 1);
}

#[tokio::test]
async fn truncated_json_is_retried_then_transient() {
    let server = gateway().await;
    serve_vulns(
        &server,
        ResponseTemplate::new(200).set_body_string(r#"{"details":{"vulns":[{"qid":3"#),
        Some(1),
    )
    .await;
    serve_vulns(&server, no_vulns(), None).await;
    let client = client(&server);
    client
        .container_vulnerabilities(SHA, deadline())
        .await
        .expect("the retry gets the whole body");
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 2);

    reset_gateway(&server).await;
    serve_vulns(
        &server,
        ResponseTemplate::new(200).set_body_string(r#"{"details":["#),
        None,
    )
    .await;
    let err = client
        .container_vulnerabilities(SHA, deadline())
        .await
        .expect_err("always cut off");
    assert!(matches!(err, QualysError::Transient { .. }), "{err:?}");
    assert_eq!(requests_to(&server, VULN_PATH).await.len(), 5);
}

#[tokio::test]
async fn truncated_kb_xml_is_retried_then_transient() {
    let server = MockServer::start().await;
    let full = fixture("kb/kb-list-details-all.xml");
    serve_kb(
        &server,
        ResponseTemplate::new(200).set_body_bytes(full[..full.len() / 2].to_vec()),
        None,
    )
    .await;

    let err = client(&server)
        .knowledge_base(&[376157], deadline())
        .await
        .expect_err("never a partial list");

    assert!(matches!(err, QualysError::Transient { .. }), "{err:?}");
    assert_eq!(requests_to(&server, KB_PATH).await.len(), 5);
}

#[tokio::test]
async fn bulk_listing_follows_the_link_cursor_on_its_own_host() {
    let server = gateway().await;
    let cursor = "updated>=1711951207904 AND not uuid: [801f0d53-19c6-31e7-831a-5a5c6563f3ce]";
    Mock::given(method("GET"))
        .and(path("/csapi/v1.3/containers/list"))
        .and(query_param("limit", "250"))
        .and(query_param_is_missing("paginationQuery"))
        .respond_with(fixture_response(
            "cs/containers-list-bulk.json",
            "cs/containers-list-bulk.headers",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/csapi/v1.3/containers/list"))
        .and(query_param("paginationQuery", cursor))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"data":[]}"#)
                .insert_header("Link", "null"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let query = query(1000, ListingMode::Bulk);

    let first = client
        .list_containers(&query, &ListCursor::Start, deadline())
        .await
        .expect("first page");
    assert_eq!(first.containers.len(), 2);
    let next = first.next.expect("more pages");
    assert_eq!(
        next,
        ListCursor::Bulk {
            pagination_query: cursor.to_owned()
        }
    );
    let json = serde_json::to_string(&next).expect("serialisable");
    let resumed: ListCursor = serde_json::from_str(&json).expect("deserialisable");

    let last = client
        .list_containers(&query, &resumed, deadline())
        .await
        .expect("last page");
    assert!(last.containers.is_empty());
    assert_eq!(last.next, None);
    let filter = query.filter.with_window(&query.window);
    for request in requests_to(&server, "/csapi/v1.3/containers/list").await {
        let sent: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        assert_eq!(
            sent.get("filter"),
            Some(&filter),
            "the filter is re-sent with the cursor"
        );
    }
}

#[tokio::test]
async fn bulk_listing_ends_without_a_link_header() {
    let server = gateway().await;
    Mock::given(method("GET"))
        .and(path("/csapi/v1.3/containers/list"))
        .and(query_param("limit", "7"))
        .respond_with(fixture_ok("cs/containers-list-bulk.json"))
        .mount(&server)
        .await;

    let page = first_page(&server, 7, ListingMode::Bulk)
        .await
        .expect("page");
    assert_eq!(page.next, None);
}

/// Behaves like the simulator's paged endpoint: filters on the `updated` range of the
/// window filter, sorts by (`updated`, `sha`), pages by number and size.
struct PagedFake {
    records: Vec<(i64, Option<String>)>,
}

fn iso_ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .expect("ISO bound")
        .timestamp_millis()
}

impl Respond for PagedFake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let q: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        let filter = &q["filter"];
        let range = &filter[filter.find("updated:[\"").expect("range") + 10..];
        let (lower, rest) = range.split_once("\"..\"").expect("..");
        let upper = &rest[..rest.find('"').expect("closing quote")];
        let (lower, upper) = (iso_ms(lower), iso_ms(upper));
        let page: u32 = q["pageNumber"].parse().expect("page");
        let size: usize = q["pageSize"].parse().expect("size");
        assert_eq!(q["sort"], "updated:asc");
        let mut matching: Vec<_> = self
            .records
            .iter()
            .filter(|(u, _)| (lower..=upper).contains(u))
            .collect();
        matching.sort();
        let data: Vec<_> = matching
            .iter()
            .skip((page as usize - 1) * size)
            .take(size)
            .map(|(u, sha)| serde_json::json!({"sha": sha, "updated": u.to_string(), "state": "RUNNING"}))
            .collect();
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"data": data, "count": matching.len()}))
    }
}

#[tokio::test]
async fn paged_keyset_walk_returns_every_container_once_across_ties() {
    let since = window().since.timestamp_millis();
    let at = |offset: i64| since + offset;
    let sha = |n: u32| Some(format!("{n:064x}"));
    // Five records share one millisecond (more than a page), two share another, and a
    // record without sha sits in the middle.
    let mut records = vec![(at(0), sha(1)), (at(10), sha(2)), (at(20), None)];
    records.extend((3..8).map(|n| (at(30), sha(n))));
    records.extend([(at(40), sha(8)), (at(40), sha(9)), (at(50), sha(10))]);
    records.push((window().until.timestamp_millis() + 1, sha(99)));
    let fake = PagedFake { records };
    let server = gateway().await;
    mount(&server, "GET", "/csapi/v1.3/containers", fake, None).await;
    let client = client(&server);
    let query = query(2, ListingMode::Paged);

    let mut cursor = ListCursor::Start;
    let mut returned = Vec::new();
    let mut skipped = 0;
    let mut cursors = Vec::new();
    for _ in 0..20 {
        let page = client
            .list_containers(&query, &cursor, deadline())
            .await
            .expect("page");
        returned.extend(page.containers.into_iter().map(|c| c.sha));
        skipped += page.skipped_without_sha;
        match page.next {
            Some(next) => {
                // Resume from the serialised cursor, as the next Lambda invocation would.
                let json = serde_json::to_string(&next).expect("serialisable");
                cursor = serde_json::from_str(&json).expect("round trip");
                cursors.push(cursor.clone());
            }
            None => break,
        }
    }

    let expected: Vec<String> = (1..=10).filter_map(sha).collect();
    assert_eq!(returned, expected, "every container once, in order");
    assert!(skipped >= 1);
    assert!(
        cursors
            .iter()
            .any(|c| matches!(c, ListCursor::Paged { page, .. } if *page > 1)),
        "the five-way tie needs page 2 at one bound: {cursors:?}"
    );
    // Page numbers move only at a bound shared by a whole page (the 5-way and 2-way ties).
    assert!(cursors.iter().all(|c| matches!(
        c,
        ListCursor::Paged { page, updated_ms, .. } if *page == 1 || [at(30), at(40)].contains(updated_ms)
    )));
}

#[tokio::test]
async fn the_window_filter_is_sent_exactly() {
    let server = gateway().await;
    Mock::given(method("GET"))
        .and(path("/csapi/v1.3/containers"))
        .and(query_param(
            "filter",
            "(state:'RUNNING') and updated:[\"2024-03-26T10:00:00.000Z\"..\"2024-04-02T10:00:00.000Z\"]",
        ))
        .and(query_param("pageNumber", "1"))
        .and(query_param("pageSize", "3"))
        .and(query_param("sort", "updated:asc"))
        .respond_with(fixture_response("cs/containers-page-1.json", "cs/containers-page-1.headers"))
        .expect(1)
        .mount(&server)
        .await;

    let page = first_page(&server, 3, ListingMode::Paged)
        .await
        .expect("page");

    assert_eq!(page.containers.len(), 3);
    assert_eq!(
        page.next,
        Some(ListCursor::Paged {
            updated_ms: 1_711_951_353_771,
            seen_at_bound: vec![
                "1b58a3e4dcb5fd611e320768a8ec7dba52b4b706004e4994f514dbc0f0901b56".to_owned()
            ],
            page: 1,
        })
    );
}

#[tokio::test]
async fn bad_page_sizes_and_filters_are_refused_before_any_request() {
    let server = gateway().await;
    let client = client(&server);
    for size in [0, 1001] {
        for mode in [ListingMode::Paged, ListingMode::Bulk] {
            let err = client
                .list_containers(&query(size, mode), &ListCursor::Start, deadline())
                .await
                .expect_err("out of range");
            assert!(matches!(err, QualysError::InvalidRequest(_)), "{err:?}");
            assert!(err.to_string().contains("1 to 1000"), "{err}");
            assert_eq!(err.error_type(), "InvalidConfig");
        }
    }
    let mut reversed = query(10, ListingMode::Paged);
    std::mem::swap(&mut reversed.window.since, &mut reversed.window.until);
    assert!(
        client
            .list_containers(&reversed, &ListCursor::Start, deadline())
            .await
            .is_err()
    );
    let wrong_mode = ListCursor::Bulk {
        pagination_query: "x".into(),
    };
    assert!(
        client
            .list_containers(&query(10, ListingMode::Paged), &wrong_mode, deadline())
            .await
            .is_err()
    );
    for bad in [
        "(state:RUNNING",
        "state:RUNNING and",
        "updated:[\"2024-03-26T10:00:00Z\"..",
    ] {
        let err = Qql::parse(bad).expect_err("refused");
        assert!(err.to_string().contains("at character"), "{err}");
    }
    assert!(
        client
            .container_vulnerabilities("../images/x", deadline())
            .await
            .is_err()
    );

    assert_eq!(
        server.received_requests().await.unwrap_or_default().len(),
        0
    );
}

#[tokio::test]
async fn images_without_data_are_none() {
    let server = gateway().await;
    mount(
        &server,
        "GET",
        "/csapi/v1.3/images/aaaa",
        ResponseTemplate::new(404)
            .set_body_string(r#"{"errorCode":"404 NOT_FOUND","message":"no","timestamp":1}"#),
        None,
    )
    .await;
    mount(
        &server,
        "GET",
        "/csapi/v1.3/images/bbbb",
        ResponseTemplate::new(400)
            .set_body_bytes(fixture("cs/error-image-not-scanned-cms-2002.json")),
        None,
    )
    .await;
    let client = client(&server);
    assert_eq!(client.image("aaaa", deadline()).await.expect("404"), None);
    assert_eq!(
        client.image("bbbb", deadline()).await.expect("CMS-2002"),
        None
    );
}

#[tokio::test]
async fn kb_requests_are_batched_ranged_and_basic_authenticated() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(KB_PATH))
        .and(basic_auth(USER, PASSWORD))
        .and(header("X-Requested-With", "qcvr"))
        .respond_with(fixture_response(
            "kb/kb-recorded-unknown-qid-123.xml",
            "kb/kb-recorded-unknown-qid-123.headers",
        ))
        .expect(3)
        .mount(&server)
        .await;
    let client = client_with(
        &server,
        ClientSettings {
            kb_batch_size: 3,
            retry: fast_policy(),
            ..ClientSettings::default()
        },
    );

    let entries = client
        .knowledge_base(&[9, 7, 1, 2, 3, 3, 8, 0, 20], deadline())
        .await
        .expect("empty answers");
    assert!(entries.is_empty());

    let mut ids: Vec<String> = requests_to(&server, KB_PATH)
        .await
        .iter()
        .map(|r| {
            let form: BTreeMap<String, String> =
                url::form_urlencoded::parse(&r.body).into_owned().collect();
            assert_eq!(form["action"], "list");
            assert_eq!(form["details"], "All");
            form["ids"].clone()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["1-3", "20", "7-9"]);
}

#[tokio::test]
async fn kb_concurrency_and_rate_limits_are_waited_out() {
    let server = MockServer::start().await;
    let simple = |code: &str| {
        format!(
            "<SIMPLE_RETURN><RESPONSE><CODE>{code}</CODE><TEXT>busy</TEXT></RESPONSE></SIMPLE_RETURN>"
        )
    };
    serve_kb(
        &server,
        ResponseTemplate::new(409).set_body_string(simple("1960")),
        Some(1),
    )
    .await;
    serve_kb(
        &server,
        fixture_response("kb/kb-409-rate-limit.xml", "kb/kb-409-rate-limit.headers"),
        Some(1),
    )
    .await;
    serve_kb(
        &server,
        fixture_response("kb/kb-recorded-316760.xml", "kb/kb-recorded-316760.headers"),
        None,
    )
    .await;

    let entries = client(&server)
        .knowledge_base(&[316760], deadline())
        .await
        .expect("third attempt succeeds");
    assert_eq!(entries.len(), 1);
    assert_eq!(requests_to(&server, KB_PATH).await.len(), 3);
}

#[tokio::test]
async fn kb_truncation_warning_is_followed_on_the_configured_host() {
    let server = MockServer::start().await;
    let first = "<KNOWLEDGE_BASE_VULN_LIST_OUTPUT><RESPONSE><VULN_LIST><VULN><QID>1</QID></VULN>\
        </VULN_LIST><WARNING><CODE>1980</CODE><TEXT>1 record limit exceeded. Use URL to get next \
        batch of results.</TEXT><URL><![CDATA[https://qualysapi.qualys.com/api/2.0/fo/knowledge_base/vuln/?action=list&details=All&ids=1-2&id_min=2]]></URL>\
        </WARNING></RESPONSE></KNOWLEDGE_BASE_VULN_LIST_OUTPUT>";
    let second = "<KNOWLEDGE_BASE_VULN_LIST_OUTPUT><RESPONSE><VULN_LIST><VULN><QID>2</QID></VULN>\
        </VULN_LIST></RESPONSE></KNOWLEDGE_BASE_VULN_LIST_OUTPUT>";
    Mock::given(method("POST"))
        .and(path(KB_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_string(first))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(KB_PATH))
        .and(query_param("id_min", "2"))
        .and(basic_auth(USER, PASSWORD))
        .respond_with(ResponseTemplate::new(200).set_body_string(second))
        .expect(1)
        .mount(&server)
        .await;

    let entries = client(&server)
        .knowledge_base(&[1, 2], deadline())
        .await
        .expect("both parts");
    assert_eq!(
        entries.iter().map(|e| e.qid).collect::<Vec<_>>(),
        vec![1, 2]
    );
}
