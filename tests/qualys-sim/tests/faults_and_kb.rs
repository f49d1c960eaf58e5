//! KnowledgeBase requests, authentication, real and forced rate limits, and the faults
//! (expired tokens, 5xx bursts, truncated bodies, dropped connections), over HTTP.

mod common;

use common::*;
use qualys_sim::{Endpoint, Fault, FaultRule, Scope, SimConfig, Window};
use serde_json::{Value, json};

fn qids_in(xml: &str) -> Vec<u32> {
    xml.split("<QID>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next()?.parse().ok())
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn kb_ids_accept_lists_and_ranges_and_skip_unknown_qids() {
    let sim = start(SimConfig::generated(600, 5)).await;
    let kb: Vec<u32> = sim.truth().kb.iter().map(|k| k.qid).collect();
    assert!(kb.len() >= 60);
    let (low, high) = (kb[3], kb[9]);
    let ids = format!("{},{low}-{high},1,{}", kb[0], kb[20]);
    let response = kb_post(
        &sim,
        &[("action", "list"), ("details", "All"), ("ids", &ids)],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-ratelimit-limit").as_deref(),
        Some("300")
    );
    assert_eq!(
        header(&response, "x-concurrency-limit-limit").as_deref(),
        Some("2")
    );
    let xml = response.text().await.expect("xml");
    let mut expected = vec![kb[0]];
    expected.extend(&kb[3..=9]);
    expected.push(kb[20]);
    assert_eq!(qids_in(&xml), expected);
    assert!(xml.contains("<!DOCTYPE KNOWLEDGE_BASE_VULN_LIST_OUTPUT"));
    assert!(xml.contains("<!-- keep-alive for KNOWLEDGE_BASE_VULN_LIST_OUTPUT  -->"));
    assert!(xml.contains("<![CDATA[") && xml.contains("<CVE_LIST>") && xml.contains("<CVSS_V3>"));
    assert!(xml.trim_end().ends_with("//-->"));
    let tree = xml_tree(&xml);
    assert_eq!(tree.name, "KNOWLEDGE_BASE_VULN_LIST_OUTPUT");

    // GET with the same query works too.
    let response = client()
        .get(format!(
            "{}/api/2.0/fo/knowledge_base/vuln/",
            sim.base_url()
        ))
        .basic_auth("u", Some("p"))
        .header("X-Requested-With", "t")
        .query(&[("action", "list"), ("ids", &kb[5].to_string())])
        .send()
        .await
        .expect("kb get");
    assert_eq!(qids_in(&response.text().await.expect("xml")), vec![kb[5]]);

    for bad in ["abc123", "5-1", "1,,2", "0"] {
        let response = kb_post(&sim, &[("action", "list"), ("ids", bad)]).await;
        assert_eq!(response.status(), 400, "{bad}");
        let xml = response.text().await.expect("xml");
        assert!(xml.contains("<CODE>1905</CODE>"), "{bad}");
    }
}

#[tokio::test]
async fn kb_requires_x_requested_with_and_credentials() {
    let config = SimConfig {
        username: Some("acme".into()),
        password: Some("secret".into()),
        ..SimConfig::generated(10, 1)
    };
    let sim = start(config).await;
    let url = format!("{}/api/2.0/fo/knowledge_base/vuln/", sim.base_url());
    let no_header = client()
        .post(&url)
        .basic_auth("acme", Some("secret"))
        .form(&[("action", "list")])
        .send()
        .await
        .expect("kb");
    assert_eq!(no_header.status(), 400);
    assert!(
        no_header
            .text()
            .await
            .expect("xml")
            .contains("<SIMPLE_RETURN>")
    );
    let wrong = client()
        .post(&url)
        .basic_auth("acme", Some("nope"))
        .header("X-Requested-With", "t")
        .form(&[("action", "list")])
        .send()
        .await
        .expect("kb");
    assert_eq!(wrong.status(), 401);
    assert_eq!(kb_post(&sim, &[("action", "list")]).await.status(), 200);
    assert_eq!(kb_post(&sim, &[("ids", "1")]).await.status(), 400);

    let auth = |password: &'static str| {
        let url = format!("{}/auth", sim.base_url());
        async move {
            client()
                .post(url)
                .form(&[
                    ("username", "acme"),
                    ("password", password),
                    ("token", "true"),
                ])
                .send()
                .await
                .expect("auth")
                .status()
        }
    };
    assert_eq!(auth("nope").await, 401);
    assert_eq!(auth("secret").await, 201);
}

#[tokio::test]
async fn kb_rate_window_and_concurrency_give_409s_with_headers() {
    let mut config = SimConfig::generated(10, 1);
    config.limits.kb = Window {
        limit: 2,
        window_secs: 3600,
    };
    let sim = start(config).await;
    for _ in 0..2 {
        assert_eq!(kb_post(&sim, &[("action", "list")]).await.status(), 200);
    }
    let response = kb_post(&sim, &[("action", "list")]).await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        header(&response, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    let wait: u64 = header(&response, "x-ratelimit-towait-sec")
        .and_then(|w| w.parse().ok())
        .expect("wait");
    assert!((3500..=3600).contains(&wait));
    let xml = response.text().await.expect("xml");
    assert!(xml.contains("<CODE>1965</CODE>") && xml.contains("<KEY>SECONDS_TO_WAIT</KEY>"));

    // Concurrency: two held calls occupy both slots; a third one is refused with 1960.
    // The third is sent once the simulator has counted the first two (they hold their slot
    // from that moment until their delay ends).
    let sim = start(SimConfig::generated(10, 1)).await;
    sim.add_fault(
        FaultRule::once(Fault::Slow { delay_ms: 3_000 })
            .scoped(Scope::Only(Endpoint::Kb))
            .times(Some(2)),
    );
    let first = kb_post(&sim, &[("action", "list")]);
    let second = kb_post(&sim, &[("action", "list")]);
    let third = async {
        while sim.stats().requests_to(Endpoint::Kb) < 2 {
            tokio::task::yield_now().await;
        }
        kb_post(&sim, &[("action", "list")]).await
    };
    let (first, second, third) = tokio::join!(first, second, third);
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    assert_eq!(third.status(), 409);
    assert_eq!(
        header(&third, "x-concurrency-limit-running").as_deref(),
        Some("3")
    );
    assert!(
        third
            .text()
            .await
            .expect("xml")
            .contains("<CODE>1960</CODE>")
    );

    // Forced 1960 through the control endpoint.
    let rule = json!({"fault": "kb_concurrency"});
    let armed = client()
        .post(format!("{}/sim/faults", sim.base_url()))
        .json(&rule)
        .send()
        .await
        .expect("faults");
    assert_eq!(armed.status(), 200);
    let response = kb_post(&sim, &[("action", "list")]).await;
    assert_eq!(response.status(), 409);
    assert!(
        response
            .text()
            .await
            .expect("xml")
            .contains("<CODE>1960</CODE>")
    );
    assert_eq!(kb_post(&sim, &[("action", "list")]).await.status(), 200);
}

#[tokio::test]
async fn cs_rate_window_gives_429_with_to_wait() {
    let mut config = SimConfig::generated(10, 1);
    config.limits.containers = Window {
        limit: 3,
        window_secs: 60,
    };
    let sim = start(config).await;
    let token = token(&sim).await;
    for remaining in ["2", "1", "0"] {
        let response = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "X-RateLimit-Remaining").as_deref(),
            Some(remaining)
        );
        assert_eq!(header(&response, "X-RateLimit-Limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "X-RateLimit-Window-Sec").as_deref(),
            Some("60")
        );
    }
    let response = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[]).await;
    assert_eq!(response.status(), 429);
    let wait: u64 = header(&response, "X-RateLimit-ToWait-Sec")
        .and_then(|w| w.parse().ok())
        .expect("wait");
    assert!((1..=60).contains(&wait));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errorCode"], "429 TOO_MANY_REQUESTS");
    // Images have their own window.
    let image = sim.truth().images[0].sha.clone();
    let response = gateway_get(&sim, &token, &format!("/csapi/v1.3/images/{image}"), &[]).await;
    assert_ne!(response.status(), 429);
}

#[tokio::test]
async fn tokens_expire_by_lifetime_and_by_fault() {
    let sim = start(SimConfig {
        token_lifetime_secs: 0,
        ..SimConfig::generated(10, 1)
    })
    .await;
    let token = token(&sim).await;
    let response = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"status": 401, "error": "Unauthorized", "message": "JWT expired"})
    );
    let garbage = gateway_get(&sim, "not-a-token", "/csapi/v1.3/containers", &[]).await;
    assert_eq!(garbage.status(), 401);

    // Revoked after two gateway calls: the third gets 401, a fresh token works again.
    let sim = start(SimConfig {
        faults: vec![FaultRule::once(Fault::ExpireTokens).after(2)],
        ..SimConfig::generated(10, 1)
    })
    .await;
    let token = common::token(&sim).await;
    for expected in [200, 200, 401, 401] {
        let response = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[]).await;
        assert_eq!(response.status(), expected);
    }
    let fresh = common::token(&sim).await;
    assert_eq!(
        gateway_get(&sim, &fresh, "/csapi/v1.3/containers", &[])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn server_error_bursts_truncation_and_resets() {
    let sim = start(SimConfig::generated(20, 1)).await;
    let token = token(&sim).await;

    sim.add_fault(
        FaultRule::once(Fault::ServerError { status: 502 })
            .scoped(Scope::Gateway)
            .times(Some(3)),
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            gateway_get(&sim, &token, "/csapi/v1.3/containers", &[])
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![502, 502, 502, 200]);
    sim.add_fault(FaultRule::once(Fault::ServerError { status: 503 }));
    let body: Value = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["errorCode"], "503 SERVICE_UNAVAILABLE");

    // Truncated: the full status, half the body, not parseable.
    let full = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[])
        .await
        .bytes()
        .await
        .expect("body");
    sim.add_fault(FaultRule::once(Fault::Truncate));
    let response = gateway_get(&sim, &token, "/csapi/v1.3/containers", &[]).await;
    assert_eq!(response.status(), 200);
    let cut = response.bytes().await.expect("body");
    assert_eq!(cut.len(), full.len() / 2);
    assert_eq!(&cut[..], &full[..cut.len()]);
    assert!(serde_json::from_slice::<Value>(&cut).is_err());
    sim.add_fault(FaultRule::once(Fault::Truncate));
    let xml = kb_post(&sim, &[("action", "list")])
        .await
        .text()
        .await
        .expect("xml");
    assert!(!xml.contains("</KNOWLEDGE_BASE_VULN_LIST_OUTPUT>"));

    // Reset: the connection closes without an answer; the next call is fine.
    sim.add_fault(FaultRule::once(Fault::Reset).scoped(Scope::Only(Endpoint::ContainerVuln)));
    let sha = sim.truth().containers[0].sha.clone();
    let dropped = client()
        .get(format!(
            "{}/csapi/v1.3/containers/{sha}/vuln",
            sim.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "expected a dropped connection, got {dropped:?}"
    );
    let again = gateway_get(
        &sim,
        &token,
        &format!("/csapi/v1.3/containers/{sha}/vuln"),
        &[],
    )
    .await;
    assert_eq!(again.status(), 200);

    // Faults can be armed and cleared over HTTP.
    let base = sim.base_url();
    let rules = json!([{"fault": "server_error", "status": 503, "times": null}]);
    client()
        .post(format!("{base}/sim/faults"))
        .json(&rules)
        .send()
        .await
        .expect("arm");
    assert_eq!(
        gateway_get(&sim, &token, "/csapi/v1.3/containers", &[])
            .await
            .status(),
        503
    );
    client()
        .post(format!("{base}/sim/faults/clear"))
        .send()
        .await
        .expect("clear");
    assert_eq!(
        gateway_get(&sim, &token, "/csapi/v1.3/containers", &[])
            .await
            .status(),
        200
    );
    let bad = client()
        .post(format!("{base}/sim/faults"))
        .json(&json!({"fault": "nope"}))
        .send()
        .await
        .expect("bad");
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn vuln_envelope_switch() {
    for (envelope, nested) in [
        (qualys_sim::VulnEnvelope::Vulns, true),
        (qualys_sim::VulnEnvelope::Array, false),
    ] {
        let sim = start(SimConfig {
            vuln_envelope: envelope,
            ..SimConfig::generated(6, 2)
        })
        .await;
        let token = token(&sim).await;
        for container in sim.truth().containers {
            let body: Value = gateway_get(
                &sim,
                &token,
                &format!("/csapi/v1.3/containers/{}/vuln", container.sha),
                &[],
            )
            .await
            .json()
            .await
            .expect("json");
            assert_eq!(body["details"].is_object(), nested);
        }
    }
}
