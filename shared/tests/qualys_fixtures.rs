//! Every recorded or built Qualys answer in `shared/fixtures/qualys` goes through the client
//! (served by wiremock) and comes out as the documented domain records or errors.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use qcvr::config::ListingMode;
use qcvr::model::{CveRef, KbEntry, Vulnerability};
use qcvr::qualys::{QualysApi, QualysError};
use support::*;
use tokio::time::Instant;
use wiremock::matchers::{bearer_token, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONTAINER_1: &str = "ae6f4d93848e75f67c37a2b3416da4a16b47e87fad7b5cb7c9826ad6ddaa77b9";
const CONTAINER_2: &str = "1035f5462727a8b1efdf0b0c4930fc44a833dccf0c572056e1da7ec94544ca6a";

/// Mounts the paged listing endpoint answering every request with `response`.
async fn serve_listing(server: &MockServer, response: ResponseTemplate) {
    mount(server, "GET", "/csapi/v1.3/containers", response, None).await;
}

async fn vulns_of(file: &str, sha: &str) -> Vec<Vulnerability> {
    let server = gateway().await;
    let at = format!("/csapi/v1.3/containers/{sha}/vuln");
    mount(&server, "GET", &at, fixture_ok(file), None).await;
    client(&server)
        .container_vulnerabilities(sha, deadline())
        .await
        .expect("vulnerabilities")
}

async fn kb(file: &str, headers: &str, qids: &[u32]) -> Result<Vec<KbEntry>, QualysError> {
    let server = MockServer::start().await;
    serve_kb(&server, fixture_response(file, headers), None).await;
    client(&server).knowledge_base(qids, deadline()).await
}

#[tokio::test]
async fn the_fixture_token_is_used_as_bearer() {
    let server = MockServer::start().await;
    let token = String::from_utf8(fixture("auth/token.txt")).expect("text");
    mount(
        &server,
        "POST",
        "/auth",
        ResponseTemplate::new(201).set_body_string(token.clone()),
        None,
    )
    .await;
    Mock::given(method("GET"))
        .and(path(format!("/csapi/v1.3/containers/{CONTAINER_2}/vuln")))
        .and(bearer_token(token.trim()))
        .respond_with(fixture_ok("cs/container-vuln-details-array.json"))
        .expect(1)
        .mount(&server)
        .await;
    let vulns = client(&server)
        .container_vulnerabilities(CONTAINER_2, deadline())
        .await
        .expect("vulnerabilities");
    assert_eq!(vulns.len(), 5);
}

#[tokio::test]
async fn container_pages_map_into_containers() {
    let server = gateway().await;
    serve_listing(
        &server,
        fixture_response("cs/containers-page-1.json", "cs/containers-page-1.headers"),
    )
    .await;
    let page = first_page(&server, 50, ListingMode::Paged)
        .await
        .expect("page 1");
    assert_eq!(page.next, None, "3 records on a page of 50 end the listing");
    assert_eq!(page.skipped_without_sha, 0);
    let states: Vec<_> = page.containers.iter().map(|c| c.state.as_deref()).collect();
    assert_eq!(
        states,
        vec![Some("RUNNING"), Some("RUNNING"), Some("STOPPED")]
    );
    let first = &page.containers[0];
    assert_eq!(first.sha, CONTAINER_1);
    assert_eq!(first.container_id.as_deref(), Some("ae6f4d93848e"));
    assert_eq!(
        first.uuid.as_deref(),
        Some("96a62733-7afe-3088-af22-0fff95757735")
    );
    assert_eq!(
        first.image_sha.as_deref(),
        Some("847686802536914c0b209b400e89fa2af140bad935a373100c19b255fcc5e0ed")
    );
    assert_eq!(
        first.created,
        Utc.timestamp_millis_opt(1_711_357_964_000).single()
    );
    assert_eq!(
        first.updated,
        Utc.timestamp_millis_opt(1_711_951_205_118).single()
    );
    assert_eq!(
        first.state_changed,
        Utc.timestamp_millis_opt(1_711_357_967_902).single()
    );
    assert_eq!(
        first.last_scanned,
        Utc.timestamp_millis_opt(1_711_951_121_560).single()
    );
    assert_eq!(
        first.host_name.as_deref(),
        Some("k8s-worker-01.lab.acmelabs.example")
    );
    assert_eq!(first.host_ip.as_deref(), Some("192.0.2.21"));
    assert_eq!(first.operating_system.as_deref(), Some("Debian Linux 12.4"));
    assert_eq!(first.namespace.as_deref(), Some("payments"));
    assert_eq!(first.pod.as_deref(), Some("payments-api-6f7c9d8b4-x2klm"));
    assert_eq!(page.containers[2].namespace, None, "no cluster, no labels");

    reset_gateway(&server).await;
    serve_listing(
        &server,
        fixture_response("cs/containers-page-2.json", "cs/containers-page-2.headers"),
    )
    .await;
    let page = first_page(&server, 50, ListingMode::Paged)
        .await
        .expect("page 2");
    assert_eq!(page.containers.len(), 3);
    let sixth = &page.containers[2];
    assert_eq!(sixth.container_id.as_deref(), Some("42e1d45d8796"));
    assert_eq!(sixth.image_sha, None);
    assert!(
        sixth
            .image_digest
            .as_deref()
            .is_some_and(|d| d.contains("33054e48bc95"))
    );
}

#[tokio::test]
async fn records_without_sha_are_counted_and_skipped() {
    let server = gateway().await;
    let mut body: serde_json::Value =
        serde_json::from_slice(&fixture("cs/containers-page-1.json")).expect("json");
    body["data"][1]["sha"] = serde_json::Value::Null;
    serve_listing(&server, ResponseTemplate::new(200).set_body_json(body)).await;
    let page = first_page(&server, 50, ListingMode::Paged)
        .await
        .expect("page");
    assert_eq!(page.containers.len(), 2);
    assert_eq!(page.skipped_without_sha, 1);
}

#[tokio::test]
async fn both_vulnerability_envelopes_parse() {
    let vulns = vulns_of("cs/container-vuln-details-vulns.json", CONTAINER_1).await;
    let qids: Vec<_> = vulns.iter().map(|v| v.qid).collect();
    assert_eq!(qids, vec![376157, 376157, 376187, 379329, 6000458]);
    let paths: BTreeSet<_> = vulns
        .iter()
        .filter(|v| v.qid == 376157)
        .filter_map(|v| v.software[0].package_path.clone())
        .collect();
    assert_eq!(paths.len(), 2, "two log4j-core JARs");
    assert_eq!(vulns[2].type_detected.as_deref(), Some("POTENTIAL"));
    assert_eq!(vulns[4].software.len(), 2);
    let log4shell = &vulns[0];
    assert_eq!(log4shell.severity, Some(5));
    assert_eq!(log4shell.qds_score, Some(100));
    assert_eq!(log4shell.patch_available, Some(true));
    assert_eq!(log4shell.cve_ids, vec!["CVE-2021-44228", "CVE-2021-45046"]);
    assert_eq!(
        log4shell.first_found,
        Utc.timestamp_millis_opt(1_711_357_967_902).single()
    );
    assert_eq!(log4shell.software[0].fix_version.as_deref(), Some("2.17.1"));
    assert!(
        log4shell
            .result
            .as_deref()
            .is_some_and(|r| r.starts_with("#table"))
    );

    let vulns = vulns_of("cs/container-vuln-details-array.json", CONTAINER_2).await;
    let qids: Vec<_> = vulns.iter().map(|v| v.qid).collect();
    assert_eq!(qids, vec![379548, 379548, 379329, 376157, 376187]);
    let packages: BTreeSet<_> = vulns[..2]
        .iter()
        .filter_map(|v| v.software[0].name.clone())
        .collect();
    assert_eq!(
        packages,
        BTreeSet::from(["liblzma5".to_owned(), "xz-utils".to_owned()])
    );
}

#[tokio::test]
async fn all_four_images_parse() {
    let server = gateway().await;
    let files = [
        (
            "847686802536914c0b209b400e89fa2af140bad935a373100c19b255fcc5e0ed",
            "cs/image-847686802536.json",
        ),
        (
            "894a76d0a87a09868e53d30de0385a7ae4c04cd1a6c4e31c608a7311830a93be",
            "cs/image-894a76d0a87a.json",
        ),
        (
            "874dbcbfd40dc0c42d8598251df155d2db52869b3d683d8cf325538265792982",
            "cs/image-874dbcbfd40d.json",
        ),
        (
            "85f2fdcd91e4413970c8090f55b5eb06f460db23e5419ccdba414035c2668d3f",
            "cs/image-85f2fdcd91e4.json",
        ),
    ];
    for (sha, file) in files {
        let at = format!("/csapi/v1.3/images/{sha}");
        mount(&server, "GET", &at, fixture_ok(file), None).await;
    }
    let client = client(&server);
    let mut images = Vec::new();
    for (sha, _) in files {
        let image = client
            .image(sha, deadline())
            .await
            .expect("image")
            .expect("scanned");
        assert_eq!(image.sha, sha);
        assert_eq!(image.image_id.as_deref(), Some(&sha[..12]));
        assert_eq!(image.is_base_image, Some(false));
        assert_eq!(image.digests.len(), 1);
        assert_eq!(image.architecture.as_deref(), Some("amd64"));
        images.push(image);
    }
    let payments = &images[0];
    assert_eq!(payments.repos.len(), 2);
    assert_eq!(payments.repos[1].tag.as_deref(), Some("stable"));
    assert_eq!(
        payments.repos[0].repository.as_deref(),
        Some("payments/payments-api")
    );
    assert_eq!(payments.size, Some(412_337_152));
    assert_eq!(payments.layers_count, Some(4));
    assert_eq!(payments.associated_containers_count, Some(2));
    assert_eq!(
        payments.operating_system.as_deref(),
        Some("Debian Linux 12.4")
    );
    assert_eq!(payments.qids, vec![376157, 376187, 379329, 6000458]);
    assert_eq!(
        payments.created,
        Utc.timestamp_millis_opt(1_709_648_530_000).single()
    );
    assert_eq!(images[1].qids, vec![376157, 376187, 379329, 379548]);
    assert_eq!(images[2].qids, vec![379329, 6000458]);
    assert_eq!(images[3].qids, Vec::<u32>::new());
    assert_eq!(images[3].layers_count, Some(2));
    assert!(
        images[2].digests[0].starts_with("33054e48bc95"),
        "nginx digest = container 6's"
    );
}

#[tokio::test]
async fn cs_error_bodies_become_errors() {
    let server = gateway().await;
    serve_listing(
        &server,
        fixture_response(
            "cs/error-400-bad-filter.json",
            "cs/error-400-bad-filter.headers",
        ),
    )
    .await;
    let err = first_page(&server, 50, ListingMode::Paged)
        .await
        .expect_err("400");
    match err {
        QualysError::Rejected {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((status, code.as_str()), (400, "400 BAD_REQUEST"));
            assert!(message.starts_with("Invalid filter query"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn kb_details_all_agrees_with_the_container_findings() {
    let entries = kb(
        "kb/kb-list-details-all.xml",
        "kb/kb-list-details-all.headers",
        &[376157, 376187, 379329, 379548, 6000458],
    )
    .await
    .expect("entries");
    let qids: Vec<_> = entries.iter().map(|e| e.qid).collect();
    assert_eq!(qids, vec![376157, 376187, 379329, 379548, 6000458]);

    let mut vulns = vulns_of("cs/container-vuln-details-vulns.json", CONTAINER_1).await;
    vulns.extend(vulns_of("cs/container-vuln-details-array.json", CONTAINER_2).await);
    for vuln in &vulns {
        let entry = entries
            .iter()
            .find(|e| e.qid == vuln.qid)
            .expect("every QID is in the KB");
        assert_eq!(entry.title, vuln.title, "title of {}", vuln.qid);
        assert_eq!(entry.severity, vuln.severity, "severity of {}", vuln.qid);
        assert_eq!(
            entry.patchable, vuln.patch_available,
            "patchable of {}",
            vuln.qid
        );
        let kb_cves: Vec<_> = entry.cves.iter().map(|c| c.id.clone()).collect();
        assert_eq!(kb_cves, vuln.cve_ids, "CVEs of {}", vuln.qid);
    }

    let log4shell = &entries[0];
    assert_eq!(log4shell.vuln_type.as_deref(), Some("Vulnerability"));
    assert_eq!(log4shell.category.as_deref(), Some("Local"));
    assert_eq!(
        log4shell.published,
        Utc.with_ymd_and_hms(2021, 12, 10, 18, 5, 13).single()
    );
    assert_eq!(
        log4shell.last_modified,
        Utc.with_ymd_and_hms(2024, 2, 15, 6, 31, 7).single()
    );
    assert!(
        log4shell
            .diagnosis
            .as_deref()
            .is_some_and(|d| d.contains("<P>") && d.contains("&quot;"))
    );
    assert!(
        log4shell
            .solution
            .as_deref()
            .is_some_and(|s| s.starts_with("<P>Customers"))
    );
    assert!(log4shell.consequence.is_some());
    let v2 = log4shell.cvss_v2.as_ref().expect("CVSS");
    assert_eq!(
        (v2.base.as_deref(), v2.temporal.as_deref()),
        (Some("9.3"), Some("8.1"))
    );
    assert_eq!(
        (v2.access_vector.as_deref(), v2.access_complexity.as_deref()),
        (Some("3"), Some("2"))
    );
    let v3 = log4shell.cvss_v3.as_ref().expect("CVSS v3");
    assert_eq!(v3.base.as_deref(), Some("10.0"));
    assert_eq!(v3.access_vector.as_deref(), Some("4"));
    assert!(
        v3.vector
            .as_deref()
            .is_some_and(|v| v.starts_with("CVSS:3.1/"))
    );
    assert_eq!(log4shell.software, vec!["apache log4j"]);
    assert_eq!(
        log4shell.vendor_references,
        vec!["Apache Log4j Security Vulnerabilities"]
    );
    assert!(log4shell.threat_intel.contains(&"Zero_Day".to_owned()));
    assert_eq!(log4shell.pci_flag, Some(true));
    assert_eq!(
        log4shell.cves[0],
        CveRef {
            id: "CVE-2021-44228".into(),
            url: Some("http://cve.mitre.org/cgi-bin/cvename.cgi?name=CVE-2021-44228".into()),
        }
    );
}

#[tokio::test]
async fn kb_recorded_single_entry() {
    let entries = kb(
        "kb/kb-recorded-316760.xml",
        "kb/kb-recorded-316760.headers",
        &[316760],
    )
    .await
    .expect("entry");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.qid, 316760);
    assert_eq!(
        e.vuln_type.as_deref(),
        Some("Vulnerability or Potential Vulnerability")
    );
    assert_eq!(e.severity, Some(3));
    assert_eq!(e.category.as_deref(), Some("Cisco"));
    assert_eq!(e.software, vec!["cisco ios_xe"]);
    assert_eq!(e.cves.len(), 1);
    assert!(
        e.consequence
            .as_deref()
            .is_some_and(|c| c.starts_with("A successful exploit"))
    );
    assert_eq!(
        e.published,
        Utc.with_ymd_and_hms(2020, 10, 7, 12, 11, 44).single()
    );
}

#[tokio::test]
async fn kb_42_of_43_leaves_the_missing_qid_out() {
    let mut asked: Vec<u32> = vec![
        6, 45017, 45038, 150001, 150009, 150010, 150018, 150020, 150021, 150053, 150054, 150067,
        150076, 150084, 150112, 150115, 150124, 150126, 150142, 150150, 150151, 150152, 150158,
        150162, 150176, 150202, 150204, 150206, 150208, 150210, 150245, 150246, 150247, 150261,
        150262, 150263, 150272, 150375, 150400, 150456, 150461, 150462,
    ];
    asked.push(150454);
    let entries = kb(
        "kb/kb-recorded-42-of-43-qids.xml",
        "kb/kb-recorded-42-of-43-qids.headers",
        &asked,
    )
    .await
    .expect("entries");
    assert_eq!(entries.len(), 42);
    assert!(entries.iter().all(|e| e.qid != 150454));
    assert!(
        entries
            .iter()
            .all(|e| e.title.is_some() && e.severity.is_some())
    );
}

#[tokio::test]
async fn kb_unknown_qid_is_empty() {
    let entries = kb(
        "kb/kb-recorded-unknown-qid-123.xml",
        "kb/kb-recorded-unknown-qid-123.headers",
        &[123],
    )
    .await
    .expect("no entries, no error");
    assert!(entries.is_empty());
}

#[tokio::test]
async fn kb_bad_ids_are_rejected() {
    let err = kb(
        "kb/kb-error-1905-bad-ids.xml",
        "kb/kb-error-1905-bad-ids.headers",
        &[1],
    )
    .await
    .expect_err("1905");
    match &err {
        QualysError::Rejected {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((*status, code.as_str()), (400, "1905"));
            assert!(
                message.contains("neither a positive integer nor a range"),
                "{message}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(err.error_type(), "QualysError");
}

#[tokio::test]
async fn kb_expired_account_is_auth_failed_despite_http_200() {
    let err = kb(
        "kb/kb-expired-account.xml",
        "kb/kb-expired-account.headers",
        &[1],
    )
    .await
    .expect_err("2001");
    assert!(
        matches!(&err, QualysError::AuthFailed { reason } if reason.contains("This account has expired.")),
        "{err:?}"
    );
    assert!(!err.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn kb_409_rate_limit_asks_for_1242_seconds() {
    let server = MockServer::start().await;
    serve_kb(
        &server,
        fixture_response("kb/kb-409-rate-limit.xml", "kb/kb-409-rate-limit.headers"),
        None,
    )
    .await;
    let client = real_delay_client(&server);
    let call = client.knowledge_base(&[376157], Instant::now() + Duration::from_secs(600));
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("returns without sleeping")
        .expect_err("rate limited");
    assert!(
        matches!(err, QualysError::RateLimited { retry_after } if retry_after == Duration::from_secs(1242)),
        "{err:?}"
    );
    assert_eq!(
        server.received_requests().await.unwrap_or_default().len(),
        1
    );
}
