//! Fixtures mode serves every recorded fixture file: same JSON, same XML tree (answer times
//! aside), same status and the headers that matter.

mod common;

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use qualys_sim::{Fault, FaultRule, Mutation, Scope, SimConfig};
use serde_json::Value;

const SHA_1: &str = "ae6f4d93848e75f67c37a2b3416da4a16b47e87fad7b5cb7c9826ad6ddaa77b9";
const SHA_2: &str = "1035f5462727a8b1efdf0b0c4930fc44a833dccf0c572056e1da7ec94544ca6a";

/// Status code from the first line of a `.headers` fixture.
fn recorded_status(name: &str) -> u16 {
    fixture(name)
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line")
}

/// A header value from a `.headers` fixture.
fn recorded_header(name: &str, header: &str) -> Option<String> {
    fixture(name).lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(header)
            .then(|| value.trim().to_string())
    })
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Same keys, same `errorCode`, numeric `timestamp`.
fn assert_error_trio(served: &Value, recorded: &Value, same_message: bool) {
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<BTreeSet<_>>())
            .unwrap_or_default()
    };
    assert_eq!(keys(served), keys(recorded));
    assert_eq!(served["errorCode"], recorded["errorCode"]);
    assert!(served["timestamp"].is_i64());
    if same_message {
        assert_eq!(served["message"], recorded["message"]);
    }
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[tokio::test]
async fn every_fixture_file_is_served() {
    let sim = start(SimConfig::fixtures(fixtures_dir())).await;
    let mut covered: BTreeSet<&str> = BTreeSet::new();

    // Auth: 201, raw JWT with the recorded header and claims, 4 h lifetime.
    let response = client()
        .post(format!("{}/auth", sim.base_url()))
        .form(&[
            ("username", "acme"),
            ("password", "x"),
            ("token", "true"),
            ("permissions", "true"),
        ])
        .send()
        .await
        .expect("auth");
    assert_eq!(
        response.status().as_u16(),
        recorded_status("auth/token.headers")
    );
    assert!(header(&response, "content-type").is_some_and(|t| t.starts_with("text/plain")));
    let token = response.text().await.expect("token");
    let recorded = fixture("auth/token.txt");
    assert_eq!(jwt_part(&token, 0), jwt_part(&recorded, 0));
    let keys = |v: Value| {
        v.as_object()
            .expect("claims")
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(jwt_part(&token, 1)), keys(jwt_part(&recorded, 1)));
    let claims = jwt_part(&token, 1);
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        14_400
    );
    covered.extend(["auth/token.txt", "auth/token.headers"]);

    // Paged list: both pages exactly, with the rate-limit headers.
    for (page, file) in [("1", "cs/containers-page-1"), ("2", "cs/containers-page-2")] {
        let response = gateway_get(
            &sim,
            &token,
            "/csapi/v1.3/containers",
            &[
                ("pageNumber", page),
                ("pageSize", "3"),
                ("sort", "updated:asc"),
            ],
        )
        .await;
        let headers_file = format!("{file}.headers");
        assert_eq!(response.status().as_u16(), recorded_status(&headers_file));
        for name in ["X-RateLimit-Limit", "X-RateLimit-Window-Sec"] {
            assert_eq!(
                header(&response, name),
                recorded_header(&headers_file, name),
                "{name}"
            );
        }
        assert!(header(&response, "X-RateLimit-Remaining").is_some());
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, fixture_json(&format!("{file}.json")), "{file}");
    }
    covered.extend([
        "cs/containers-page-1.json",
        "cs/containers-page-1.headers",
        "cs/containers-page-2.json",
        "cs/containers-page-2.headers",
    ]);

    // Bulk list: the two detail records and the recorded Link header, byte for byte.
    let response = gateway_get(
        &sim,
        &token,
        "/csapi/v1.3/containers/list",
        &[("limit", "2")],
    )
    .await;
    assert_eq!(
        response.status().as_u16(),
        recorded_status("cs/containers-list-bulk.headers")
    );
    assert_eq!(
        header(&response, "link"),
        recorded_header("cs/containers-list-bulk.headers", "link")
    );
    assert_eq!(
        header(&response, "X-RateLimit-Limit"),
        recorded_header("cs/containers-list-bulk.headers", "X-RateLimit-Limit")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, fixture_json("cs/containers-list-bulk.json"));
    covered.extend([
        "cs/containers-list-bulk.json",
        "cs/containers-list-bulk.headers",
    ]);

    // Findings of containers 1 and 2, one envelope each.
    for (sha, file) in [
        (SHA_1, "cs/container-vuln-details-vulns.json"),
        (SHA_2, "cs/container-vuln-details-array.json"),
    ] {
        let response = gateway_get(
            &sim,
            &token,
            &format!("/csapi/v1.3/containers/{sha}/vuln"),
            &[],
        )
        .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, fixture_json(file), "{file}");
        covered.insert(file);
    }

    // Images.
    for id in [
        "847686802536",
        "894a76d0a87a",
        "874dbcbfd40d",
        "85f2fdcd91e4",
    ] {
        let file = format!("cs/image-{id}.json");
        let recorded = fixture_json(&file);
        let sha = recorded["sha"].as_str().expect("sha").to_string();
        let response = gateway_get(&sim, &token, &format!("/csapi/v1.3/images/{sha}"), &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.expect("json"),
            recorded,
            "{file}"
        );
        covered.insert(match id {
            "847686802536" => "cs/image-847686802536.json",
            "894a76d0a87a" => "cs/image-894a76d0a87a.json",
            "874dbcbfd40d" => "cs/image-874dbcbfd40d.json",
            _ => "cs/image-85f2fdcd91e4.json",
        });
    }

    // 400 for the recorded unbalanced range.
    let bad = r#"updated:["2024-03-26T10:00:00Z".."#;
    let response = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[("filter", bad)]).await;
    assert_eq!(
        response.status().as_u16(),
        recorded_status("cs/error-400-bad-filter.headers")
    );
    let body: Value = response.json().await.expect("json");
    assert_error_trio(&body, &fixture_json("cs/error-400-bad-filter.json"), true);
    covered.extend([
        "cs/error-400-bad-filter.json",
        "cs/error-400-bad-filter.headers",
    ]);

    // 429 on the bulk list with the recorded wait.
    sim.add_fault(
        FaultRule::once(Fault::CsRateLimit { wait_secs: 23 })
            .scoped(Scope::Only(qualys_sim::Endpoint::ContainersList)),
    );
    let response = gateway_get(
        &sim,
        &token,
        "/csapi/v1.3/containers/list",
        &[("limit", "2")],
    )
    .await;
    assert_eq!(
        response.status().as_u16(),
        recorded_status("cs/error-429.headers")
    );
    for name in [
        "X-RateLimit-Limit",
        "X-RateLimit-Window-Sec",
        "X-RateLimit-Remaining",
        "X-RateLimit-ToWait-Sec",
    ] {
        assert_eq!(
            header(&response, name),
            recorded_header("cs/error-429.headers", name),
            "{name}"
        );
    }
    assert_error_trio(
        &response.json().await.expect("json"),
        &fixture_json("cs/error-429.json"),
        true,
    );
    covered.extend(["cs/error-429.json", "cs/error-429.headers"]);

    // An image without scan data.
    let nginx = fixture_json("cs/image-874dbcbfd40d.json")["sha"]
        .as_str()
        .expect("sha")
        .to_string();
    sim.mutate(&Mutation::SetImageScanned {
        sha: nginx.clone(),
        scanned: false,
    })
    .expect("mutate");
    let response = gateway_get(&sim, &token, &format!("/csapi/v1.3/images/{nginx}"), &[]).await;
    assert_eq!(response.status(), 404);
    assert_error_trio(
        &response.json().await.expect("json"),
        &fixture_json("cs/error-image-not-scanned-cms-2002.json"),
        true,
    );
    covered.insert("cs/error-image-not-scanned-cms-2002.json");

    // KnowledgeBase answers.
    let kb_cases: [(&str, Vec<(&str, String)>); 4] = [
        (
            "kb/kb-list-details-all",
            vec![
                ("details", "All".into()),
                ("ids", "376157,376187,379329,379548,6000458".into()),
            ],
        ),
        ("kb/kb-error-1905-bad-ids", vec![("ids", "abc123".into())]),
        ("kb/kb-recorded-316760", vec![("ids", "316760".into())]),
        (
            "kb/kb-recorded-unknown-qid-123",
            vec![("ids", "123".into())],
        ),
    ];
    for (file, params) in kb_cases {
        let mut form: Vec<(&str, &str)> = vec![("action", "list")];
        form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        let response = kb_post(&sim, &form).await;
        let headers_file = format!("{file}.headers");
        assert_eq!(
            response.status().as_u16(),
            recorded_status(&headers_file),
            "{file}"
        );
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-window-sec",
            "x-concurrency-limit-limit",
        ] {
            assert_eq!(
                header(&response, name),
                recorded_header(&headers_file, name),
                "{file} {name}"
            );
        }
        let text = response.text().await.expect("xml");
        assert_eq!(
            xml_tree(&text),
            xml_tree(&fixture(&format!("{file}.xml"))),
            "{file}"
        );
        covered.insert(Box::leak(format!("{file}.xml").into_boxed_str()));
        covered.insert(Box::leak(headers_file.into_boxed_str()));
    }

    // 42 of 43 QIDs: the unknown one is silently left out.
    let recorded = fixture("kb/kb-recorded-42-of-43-qids.xml");
    let mut qids: Vec<String> = recorded
        .split("<QID>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next().map(str::to_string))
        .collect();
    assert_eq!(qids.len(), 42);
    qids.push("150454".into());
    let ids = qids.join(",");
    let response = kb_post(
        &sim,
        &[("action", "list"), ("details", "All"), ("ids", &ids)],
    )
    .await;
    assert_eq!(
        response.status().as_u16(),
        recorded_status("kb/kb-recorded-42-of-43-qids.headers")
    );
    assert_eq!(
        xml_tree(&response.text().await.expect("xml")),
        xml_tree(&recorded)
    );
    covered.extend([
        "kb/kb-recorded-42-of-43-qids.xml",
        "kb/kb-recorded-42-of-43-qids.headers",
    ]);

    // 409 1965 with the recorded wait.
    sim.add_fault(FaultRule::once(Fault::KbRateLimit { wait_secs: 1242 }));
    let response = kb_post(&sim, &[("action", "list"), ("ids", "376157")]).await;
    assert_eq!(
        response.status().as_u16(),
        recorded_status("kb/kb-409-rate-limit.headers")
    );
    for name in [
        "x-ratelimit-towait-sec",
        "x-ratelimit-remaining",
        "x-ratelimit-limit",
    ] {
        assert_eq!(
            header(&response, name),
            recorded_header("kb/kb-409-rate-limit.headers", name),
            "{name}"
        );
    }
    assert_eq!(
        xml_tree(&response.text().await.expect("xml")),
        xml_tree(&fixture("kb/kb-409-rate-limit.xml"))
    );
    covered.extend(["kb/kb-409-rate-limit.xml", "kb/kb-409-rate-limit.headers"]);

    // Expired account: HTTP 200 carrying SIMPLE_RETURN 2001.
    sim.set_kb_account_expired(true);
    let response = kb_post(&sim, &[("action", "list"), ("ids", "376157")]).await;
    assert_eq!(
        response.status().as_u16(),
        recorded_status("kb/kb-expired-account.headers")
    );
    assert_eq!(
        xml_tree(&response.text().await.expect("xml")),
        xml_tree(&fixture("kb/kb-expired-account.xml"))
    );
    covered.extend(["kb/kb-expired-account.xml", "kb/kb-expired-account.headers"]);

    // Expired JWT.
    sim.expire_tokens();
    let response = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[]).await;
    assert_eq!(
        response.status().as_u16(),
        recorded_status("auth/401-jwt-expired.headers")
    );
    assert!(header(&response, "content-type").is_some_and(|t| t.starts_with("application/json")));
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        fixture_json("auth/401-jwt-expired.json")
    );
    covered.extend(["auth/401-jwt-expired.json", "auth/401-jwt-expired.headers"]);

    // Every file of the directory (README aside) was checked.
    let mut all = BTreeSet::new();
    for sub in ["auth", "cs", "kb"] {
        for entry in std::fs::read_dir(fixtures_dir().join(sub)).expect("fixture dir") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            all.insert(format!("{sub}/{name}"));
        }
    }
    let covered: BTreeSet<String> = covered.into_iter().map(str::to_string).collect();
    assert_eq!(all, covered);
}

#[tokio::test]
async fn fixture_truth_follows_the_readme_chain() {
    let sim = start(SimConfig::fixtures(fixtures_dir())).await;
    let truth = sim.truth();
    assert_eq!(truth.containers.len(), 6);
    assert_eq!(truth.images.len(), 4);
    let digest_only = &truth.containers[5];
    assert_eq!(digest_only.image_sha, None);
    assert_eq!(
        digest_only.image_digest.as_deref(),
        Some("33054e48bc9587d48800a4ecf602cc022b904317a1a78849b06546c3ae03c192")
    );
    let of = |sha: &str| {
        truth
            .findings
            .iter()
            .filter(|f| f.container_sha == sha)
            .count()
    };
    // Container 1: five vulnerability objects, 6000458 with two packages.
    assert_eq!(of(SHA_1), 6);
    assert_eq!(of(SHA_2), 5);
    let kb: BTreeSet<u32> = truth.kb.iter().map(|k| k.qid).collect();
    assert!(truth.findings.iter().all(|f| kb.contains(&f.qid)));
    assert!(kb.contains(&316760) && kb.contains(&150001));
}
