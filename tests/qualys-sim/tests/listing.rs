//! Container listings over generated accounts: the keyset walk of the paged list, the bulk
//! cursor, QQL handling, the 10 000 cap, records changing between pages, mutations, stats.

mod common;

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use common::*;
use qualys_sim::{Endpoint, Fault, FaultRule, SimConfig, SimHandle, Truth};
use serde_json::{Value, json};

const START_MS: i64 = 1_712_052_000_000;
/// The paged container list (keyset walk).
const PAGED: &str = "/csapi/v1.3/containers";
/// The bulk container list (`Link` cursor).
const BULK: &str = "/csapi/v1.3/containers/list";

fn config(containers: usize) -> SimConfig {
    SimConfig {
        start_ms: Some(START_MS),
        ..SimConfig::generated(containers, 42)
    }
}

fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("valid ms")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `sha` of every record in a list answer's `data`.
fn shas(body: &Value) -> impl Iterator<Item = String> + '_ {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["sha"].as_str().expect("sha").to_string())
}

/// Every container the truth does not mark DELETED.
fn live_shas(truth: &Truth) -> BTreeSet<String> {
    truth
        .containers
        .iter()
        .filter(|c| c.state != "DELETED")
        .map(|c| c.sha.clone())
        .collect()
}

fn updated(record: &Value) -> i64 {
    record["updated"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("updated ms string")
}

/// The client's keyset walk: raise the lower bound to the last `updated`, skip shas already
/// returned at exactly that ms, and only page forward when a whole page shares one value.
async fn keyset_walk(
    sim: &SimHandle,
    token: &str,
    base: &str,
    since: i64,
    until: i64,
    size: usize,
) -> Vec<String> {
    let mut low = since;
    let mut seen_at_low: HashSet<String> = HashSet::new();
    let mut page_number = 1;
    let mut out = Vec::new();
    loop {
        let filter = format!(r#"({base}) and updated:["{}".."{}"]"#, iso(low), iso(until));
        let page_number_text = page_number.to_string();
        let size_text = size.to_string();
        let response = gateway_get(
            sim,
            token,
            PAGED,
            &[
                ("filter", &filter),
                ("pageNumber", &page_number_text),
                ("pageSize", &size_text),
                ("sort", "updated:asc"),
            ],
        )
        .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        let data = body["data"].as_array().expect("data").clone();
        for record in &data {
            let sha = record["sha"].as_str().expect("sha").to_string();
            if updated(record) == low && seen_at_low.contains(&sha) {
                continue;
            }
            out.push(sha);
        }
        if data.len() < size {
            return out;
        }
        let last = updated(data.last().expect("non-empty"));
        let whole_page_tied = data.iter().all(|r| updated(r) == last);
        if last != low {
            seen_at_low.clear();
            low = last;
        }
        seen_at_low.extend(
            data.iter()
                .filter(|r| updated(r) == low)
                .map(|r| r["sha"].as_str().expect("sha").to_string()),
        );
        page_number = if whole_page_tied { page_number + 1 } else { 1 };
    }
}

/// Follows the bulk `Link` cursor, re-sending the filter with each `paginationQuery`.
async fn bulk_walk(
    sim: &SimHandle,
    token: &str,
    filter: &str,
    limit: usize,
) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let limit_text = limit.to_string();
        let mut query = vec![("filter", filter), ("limit", limit_text.as_str())];
        if let Some(cursor) = &cursor {
            query.push(("paginationQuery", cursor));
        }
        let response = gateway_get(sim, token, BULK, &query).await;
        assert_eq!(response.status(), 200);
        pages += 1;
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().expect("ascii").to_string());
        let body: Value = response.json().await.expect("json");
        out.extend(shas(&body));
        let Some(link) = link.filter(|l| l != "null") else {
            return (out, pages);
        };
        let url = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("url in <>");
        let url = url::Url::parse(url).expect("link URL");
        assert_eq!(url.host_str(), Some("qualysapi.qualys.com"));
        cursor = url
            .query_pairs()
            .find(|(k, _)| k == "paginationQuery")
            .map(|(_, v)| v.into_owned());
        assert!(
            cursor
                .as_deref()
                .is_some_and(|c| c.starts_with("updated>=") && c.contains(" AND not uuid: ["))
        );
    }
}

fn assert_exactly_once(walked: &[String], expected: &BTreeSet<String>) {
    let distinct: BTreeSet<String> = walked.iter().cloned().collect();
    assert_eq!(distinct.len(), walked.len(), "a container came back twice");
    assert_eq!(&distinct, expected);
}

#[tokio::test]
async fn paged_and_bulk_walks_over_12345_containers_return_each_match_once() {
    let sim = start(config(12_345)).await;
    let token = token(&sim).await;
    let truth = sim.truth();
    let since = START_MS - 7 * 86_400_000;
    let live = live_shas(&truth);
    assert!(live.len() > 10_000, "the walk must cross the 10 000 cap");

    let base = "state:'RUNNING' or state:'STOPPED'";
    let paged = keyset_walk(&sim, &token, base, since, START_MS, 1000).await;
    assert_exactly_once(&paged, &live);

    let all: BTreeSet<String> = truth.containers.iter().map(|c| c.sha.clone()).collect();
    let (bulk, pages) = bulk_walk(&sim, &token, "", 250).await;
    assert_exactly_once(&bulk, &all);
    assert_eq!(pages, 12_345usize.div_ceil(250));
    assert_eq!(
        sim.stats().requests_to(Endpoint::ContainersList),
        pages as u64
    );
}

#[tokio::test]
async fn small_pages_walk_through_tied_timestamps() {
    let mut config = config(500);
    config.limits.containers_list = qualys_sim::Window {
        limit: 1000,
        window_secs: 60,
    };
    let sim = start(config).await;
    let token = token(&sim).await;
    let truth = sim.truth();
    let mut per_ms = std::collections::HashMap::<i64, usize>::new();
    for c in &truth.containers {
        *per_ms.entry(c.updated_ms).or_default() += 1;
    }
    assert!(
        per_ms.values().any(|n| *n > 5),
        "a tie group larger than a page exists"
    );
    let expected = live_shas(&truth);
    let base = "state:RUNNING or state:`STOPPED`";
    let walked = keyset_walk(&sim, &token, base, START_MS - 7 * 86_400_000, START_MS, 5).await;
    assert_exactly_once(&walked, &expected);
    let (bulk, _) = bulk_walk(&sim, &token, "not state:\"DELETED\"", 3).await;
    assert_exactly_once(&bulk, &expected);
}

#[tokio::test]
async fn last_bulk_page_can_send_link_null() {
    let sim = start(SimConfig {
        null_link: true,
        ..config(10)
    })
    .await;
    let token = token(&sim).await;
    let response = gateway_get(&sim, &token, BULK, &[("limit", "250")]).await;
    assert_eq!(
        response.headers().get("link").map(|v| v.as_bytes()),
        Some(&b"null"[..])
    );
    let plain = start(config(10)).await;
    let token = common::token(&plain).await;
    let response = gateway_get(&plain, &token, BULK, &[("limit", "250")]).await;
    assert!(response.headers().get("link").is_none());
}

#[tokio::test]
async fn qql_variants_agree_and_malformed_filters_are_400() {
    let sim = start(config(300)).await;
    let token = token(&sim).await;
    let running = sim
        .truth()
        .containers
        .iter()
        .filter(|c| c.state == "RUNNING")
        .count();
    for filter in [
        "state:'RUNNING'",
        "state:`RUNNING`",
        "state:RUNNING",
        "state:\"RUNNING\"",
        "(state: running)",
        "NOT (state:STOPPED Or state:DELETED)",
    ] {
        let response = gateway_get(
            &sim,
            &token,
            PAGED,
            &[("filter", filter), ("pageSize", "1")],
        )
        .await;
        assert_eq!(response.status(), 200, "{filter}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["count"], json!(running), "{filter}");
    }
    for filter in [
        r#"updated:["2024-03-26T10:00:00Z".."#,
        "state:RUNNING AND",
        "image.sha:abc",
        "state:RUNNING state:STOPPED",
        "updated>=yesterday",
    ] {
        let response = gateway_get(&sim, &token, PAGED, &[("filter", filter)]).await;
        assert_eq!(response.status(), 400, "{filter}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["errorCode"], "400 BAD_REQUEST");
        assert_eq!(
            body["message"],
            json!(format!("Invalid filter query: {filter}"))
        );
        let response = gateway_get(&sim, &token, BULK, &[("filter", filter)]).await;
        assert_eq!(response.status(), 400, "bulk {filter}");
    }
}

#[tokio::test]
async fn page_size_and_10000_cap_are_enforced() {
    let sim = start(config(50)).await;
    let token = token(&sim).await;
    let get = |query: Vec<(&'static str, &'static str)>| {
        let sim = &sim;
        let token = &token;
        async move {
            gateway_get(sim, token, PAGED, &query)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        get(vec![("pageNumber", "10"), ("pageSize", "1000")]).await,
        200
    );
    assert_eq!(
        get(vec![("pageNumber", "11"), ("pageSize", "1000")]).await,
        400
    );
    assert_eq!(
        get(vec![("pageNumber", "201"), ("pageSize", "50")]).await,
        400
    );
    assert_eq!(get(vec![("pageSize", "1001")]).await, 400);
    assert_eq!(get(vec![("pageSize", "0")]).await, 400);
    assert_eq!(get(vec![("sort", "name:asc")]).await, 400);
    let response = gateway_get(&sim, &token, BULK, &[("limit", "251")]).await;
    assert_eq!(response.status(), 400);

    // created:desc really sorts descending, with count the total.
    let response = gateway_get(
        &sim,
        &token,
        PAGED,
        &[("sort", "created:desc"), ("pageSize", "50")],
    )
    .await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["count"], 50);
    let created: Vec<i64> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| {
            r["created"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("created")
        })
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]));
}

#[tokio::test]
async fn records_change_between_pages_when_the_fault_fires() {
    let sim = start(config(100)).await;
    let token = token(&sim).await;
    let before = sim.truth();
    sim.add_fault(FaultRule::once(Fault::ChangeBetweenPages {
        ahead: 3,
        behind: 2,
    }));
    let response = gateway_get(&sim, &token, PAGED, &[("pageSize", "10")]).await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.expect("json");
    let returned: BTreeSet<String> = shas(&page).collect();
    let after = sim.truth();
    let bumped: Vec<_> = after
        .containers
        .iter()
        .zip(&before.containers)
        .filter(|(a, b)| a.updated_ms != b.updated_ms)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(bumped.len(), 5);
    assert!(bumped.iter().all(|c| c.updated_ms > START_MS));
    assert_eq!(
        bumped.iter().filter(|c| returned.contains(&c.sha)).count(),
        2
    );
}

#[tokio::test]
async fn mutations_show_in_answers_truth_and_stats() {
    let sim = start(config(40)).await;
    let token = token(&sim).await;
    let truth = sim.truth();
    let target = truth.containers[0].sha.clone();
    let qid = truth.kb[0].qid;
    let mutate = |body: Value| {
        let url = format!("{}/sim/mutate", sim.base_url());
        async move {
            client()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("mutate")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        mutate(json!({"action": "fix_vuln", "sha": target, "qid": 1})).await,
        400
    );
    assert_eq!(
        mutate(json!({"action": "add_vuln", "sha": target, "qid": 1})).await,
        400
    );
    assert_eq!(mutate(json!({"action": "touch", "sha": "nope"})).await, 404);
    assert_eq!(
        mutate(json!({"action": "add_vuln", "sha": target, "qid": qid})).await,
        200
    );
    let vuln_path = format!("/csapi/v1.3/containers/{target}/vuln");
    let vulns = |body: &Value| -> Vec<Value> {
        match &body["details"] {
            Value::Array(list) => list.clone(),
            other => other["vulns"].as_array().expect("vulns").clone(),
        }
    };
    let response = gateway_get(&sim, &token, &vuln_path, &[]).await;
    let body: Value = response.json().await.expect("json");
    assert!(vulns(&body).iter().any(|v| v["qid"] == json!(qid)));
    assert_eq!(
        mutate(json!({"action": "fix_vuln", "sha": target, "qid": qid})).await,
        200
    );
    let response = gateway_get(&sim, &token, &vuln_path, &[]).await;
    let body: Value = response.json().await.expect("json");
    assert!(vulns(&body).iter().all(|v| v["qid"] != json!(qid)));
    assert_eq!(
        mutate(json!({"action": "set_state", "sha": target, "state": "STOPPED"})).await,
        200
    );
    assert_eq!(
        mutate(json!({"action": "touch", "sha": target, "updated_ms": 5})).await,
        200
    );

    let truth: Value = client()
        .get(format!("{}/sim/truth", sim.base_url()))
        .send()
        .await
        .expect("truth")
        .json()
        .await
        .expect("json");
    let container = &truth["containers"][0];
    assert_eq!(container["state"], "STOPPED");
    assert_eq!(container["updated_ms"], 5);
    assert!(
        truth["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["qid"] != json!(qid) || f["container_sha"] != json!(target))
    );

    let detail = gateway_get(
        &sim,
        &token,
        &format!("/csapi/v1.3/containers/{target}"),
        &[],
    )
    .await;
    let detail: Value = detail.json().await.expect("json");
    assert_eq!(detail["state"], "STOPPED");
    assert_eq!(detail["updated"], "5");
    let missing = gateway_get(&sim, &token, "/csapi/v1.3/containers/0000/vuln", &[]).await;
    assert_eq!(missing.status(), 404);

    let stats: Value = client()
        .get(format!("{}/sim/stats", sim.base_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["requests"]["container_vuln"], 3);
    assert_eq!(stats["requests"]["container"], 1);
    assert_eq!(stats["requests"]["auth"], 1);
    assert_eq!(stats["statuses"]["404"], 1);
}

#[tokio::test]
async fn generated_shapes_match_the_fixture_shapes() {
    let sim = start(config(200)).await;
    let token = token(&sim).await;
    let keys = |v: &Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };

    let page: Value = gateway_get(&sim, &token, PAGED, &[("pageSize", "5")])
        .await
        .json()
        .await
        .expect("json");
    let recorded = fixture_json("cs/containers-page-1.json");
    assert_eq!(keys(&page["data"][0]), keys(&recorded["data"][0]));
    assert!(page["data"][0]["updated"].is_string());

    let bulk: Value = gateway_get(&sim, &token, BULK, &[("limit", "5")])
        .await
        .json()
        .await
        .expect("json");
    let recorded_bulk = fixture_json("cs/containers-list-bulk.json");
    assert_eq!(keys(&bulk["data"][0]), keys(&recorded_bulk["data"][0]));

    let truth = sim.truth();
    let with_vulns = truth
        .findings
        .iter()
        .find(|f| f.package.is_some())
        .expect("a finding");
    let body: Value = gateway_get(
        &sim,
        &token,
        &format!("/csapi/v1.3/containers/{}/vuln", with_vulns.container_sha),
        &[],
    )
    .await
    .json()
    .await
    .expect("json");
    let vuln = match &body["details"] {
        Value::Array(list) => list[0].clone(),
        other => other["vulns"][0].clone(),
    };
    let recorded_vuln =
        &fixture_json("cs/container-vuln-details-vulns.json")["details"]["vulns"][0];
    assert_eq!(keys(&vuln), keys(recorded_vuln));
    assert!(vuln["published"].is_i64() && vuln["firstFound"].is_string());

    let image_sha = truth
        .containers
        .iter()
        .find_map(|c| c.image_sha.clone())
        .expect("an image");
    let response = gateway_get(
        &sim,
        &token,
        &format!("/csapi/v1.3/images/{image_sha}"),
        &[],
    )
    .await;
    if response.status() == 200 {
        let image: Value = response.json().await.expect("json");
        assert_eq!(
            keys(&image),
            keys(&fixture_json("cs/image-847686802536.json"))
        );
    } else {
        assert_eq!(
            response.json::<Value>().await.expect("json")["errorCode"],
            "CMS-2002"
        );
    }
}
