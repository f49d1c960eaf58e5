//! [`QualysClient`]: the [`QualysApi`] over HTTP.
//!
//! One `reqwest::Client` (rustls) is reused for every call. Container Security calls go to
//! the gateway with a cached JWT (refreshed once on a 401); KnowledgeBase calls go to the
//! API server with Basic auth and `X-Requested-With`. Every call passes through the
//! limiters and retry policy of [`super::limits`]. Spans carry the endpoint, page, container
//! sha and QID count, never a credential or header.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, LINK};
use tokio::time::Instant;
use url::Url;

use super::auth::{BearerToken, CredentialsSource, TokenCache};
use super::cs::{self, CsContainer, ListPage};
use super::error::BodyError;
use super::hosts::QualysHosts;
use super::kb_xml::{self, KbDocument, KbWarning, SimpleReturn};
use super::limits::{EndpointFamily, Limiters, RateHeaders, Retrier, Retry, RetryPolicy};
use super::{ContainerPage, ContainerQuery, ListCursor, QualysApi, QualysError};
use crate::config::{ListingMode, PAGE_SIZE_RANGE};
use crate::model::{Container, Image, KbEntry, Qid, Vulnerability};

/// Default KnowledgeBase path (configurable: Qualys is versioning the `/api/2.0` family).
pub const DEFAULT_KB_PATH: &str = "/api/2.0/fo/knowledge_base/vuln/";
/// Default QIDs per KnowledgeBase request.
pub const DEFAULT_KB_BATCH_SIZE: usize = 250;
/// The bulk endpoint's largest `limit`.
pub const BULK_LIMIT_MAX: u32 = 250;
/// The paged endpoint's reach: `pageNumber * pageSize` may not pass it.
pub const PAGED_RESULT_CAP: u64 = 10_000;
/// Sent as `X-Requested-With` (mandatory on `/api/2.0` calls).
const REQUESTED_WITH: &str = "qcvr";
/// Most `WARNING` URLs followed for one KB batch before giving up.
const MAX_KB_FOLLOWS: usize = 100;

/// How the client talks to Qualys.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// API server URL (KnowledgeBase); falls back to the secret's `api_url`.
    pub api_url: Option<String>,
    /// Gateway URL (Container Security); falls back to the secret's `gateway_url`, then to
    /// the platform table.
    pub gateway_url: Option<String>,
    /// KnowledgeBase path on the API server.
    pub kb_path: String,
    /// QIDs per KnowledgeBase request.
    pub kb_batch_size: usize,
    /// KnowledgeBase requests at once, before Qualys's header lowers it.
    pub kb_concurrency: usize,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout for Container Security calls.
    pub request_timeout: Duration,
    /// Whole-request timeout for KnowledgeBase calls (large XML).
    pub kb_timeout: Duration,
    /// Waits and retries.
    pub retry: RetryPolicy,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            api_url: None,
            gateway_url: None,
            kb_path: DEFAULT_KB_PATH.to_owned(),
            kb_batch_size: DEFAULT_KB_BATCH_SIZE,
            kb_concurrency: 2,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            kb_timeout: Duration::from_secs(180),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientSettings {
    /// Settings from `QCVR_QUALYS_API_URL`, `QCVR_QUALYS_GATEWAY_URL` and
    /// `QCVR_KB_BATCH_SIZE` (1..=1000, default 250); everything else at its default.
    pub fn from_env() -> Result<ClientSettings, QualysError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`ClientSettings::from_env`], reading variables through `var`.
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientSettings, QualysError> {
        let non_empty = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let kb_batch_size = match non_empty("QCVR_KB_BATCH_SIZE") {
            None => DEFAULT_KB_BATCH_SIZE,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    QualysError::InvalidRequest(format!(
                        "QCVR_KB_BATCH_SIZE={raw:?} is not a number from 1 to 1000"
                    ))
                })?,
        };
        Ok(ClientSettings {
            api_url: non_empty("QCVR_QUALYS_API_URL"),
            gateway_url: non_empty("QCVR_QUALYS_GATEWAY_URL"),
            kb_batch_size,
            ..ClientSettings::default()
        })
    }
}

/// One HTTP answer, read in full.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// What one attempt's answer means.
enum Step<T> {
    Done(T),
    Retry(Retry),
    Fail(QualysError),
}

/// The Qualys client. Build it once per Lambda container and reuse it.
#[derive(Debug)]
pub struct QualysClient<C> {
    http: reqwest::Client,
    hosts: QualysHosts,
    settings: ClientSettings,
    credentials: C,
    token: TokenCache,
    limiters: Limiters,
}

impl<C: CredentialsSource> QualysClient<C> {
    /// A client for `hosts`.
    pub fn new(
        settings: ClientSettings,
        hosts: QualysHosts,
        credentials: C,
    ) -> Result<QualysClient<C>, QualysError> {
        if settings.kb_batch_size == 0 {
            return Err(QualysError::InvalidRequest(
                "kb_batch_size must be at least 1".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .user_agent(concat!("qcvr/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                QualysError::InvalidRequest(format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(QualysClient {
            http,
            hosts,
            limiters: Limiters::new(settings.kb_concurrency),
            settings,
            credentials,
            token: TokenCache::default(),
        })
    }

    /// A client whose hosts come from `settings`, else from the secret, the gateway being
    /// derived from the API server by the platform table when neither names it.
    pub async fn connect(
        settings: ClientSettings,
        credentials: C,
    ) -> Result<QualysClient<C>, QualysError> {
        let (api_url, gateway_url) = match (&settings.api_url, &settings.gateway_url) {
            (Some(api), Some(gateway)) => (api.clone(), Some(gateway.clone())),
            _ => {
                let secret = credentials.credentials().await?;
                let api = settings.api_url.clone().or(secret.api_url).ok_or_else(|| {
                    QualysError::InvalidRequest(
                        "no Qualys API server URL: set QCVR_QUALYS_API_URL or \"api_url\" in the \
                         secret"
                            .into(),
                    )
                })?;
                (api, settings.gateway_url.clone().or(secret.gateway_url))
            }
        };
        let hosts = QualysHosts::new(&api_url, gateway_url.as_deref())?;
        QualysClient::new(settings, hosts, credentials)
    }

    /// The hosts in use.
    pub fn hosts(&self) -> &QualysHosts {
        &self.hosts
    }

    async fn read(
        &self,
        request: reqwest::RequestBuilder,
        endpoint: &str,
    ) -> Result<Answer, String> {
        let describe = |e: reqwest::Error| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else if e.is_body() || e.is_decode() {
                "body cut off"
            } else {
                "request failed"
            };
            format!("{endpoint}: {what}")
        };
        let response = request.send().await.map_err(describe)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(describe)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Asks the gateway for a JWT.
    async fn fetch_token(&self, deadline: Instant) -> Result<String, QualysError> {
        let credentials = self.credentials.credentials().await?;
        let url = format!("{}/auth", self.hosts.gateway_url());
        let mut retrier = Retrier::new(&self.settings.retry, deadline);
        loop {
            let request = self
                .http
                .post(&url)
                .timeout(self.settings.request_timeout)
                .header("X-Requested-With", REQUESTED_WITH)
                .form(&[
                    ("username", credentials.username.as_str()),
                    ("password", credentials.password.expose()),
                    ("token", "true"),
                    ("permissions", "true"),
                ]);
            let answer = match self.read(request, "auth").await {
                Ok(answer) => answer,
                Err(detail) => {
                    retrier
                        .wait(
                            Retry::Transient(detail),
                            &self.limiters,
                            EndpointFamily::Containers,
                        )
                        .await?;
                    continue;
                }
            };
            let retry = match answer.status.as_u16() {
                201 => {
                    let token = String::from_utf8_lossy(&answer.body).trim().to_owned();
                    if token.is_empty() {
                        return Err(QualysError::AuthFailed {
                            reason: "the gateway /auth answered 201 without a token".into(),
                        });
                    }
                    tracing::info!("gateway token issued");
                    return Ok(token);
                }
                401 | 403 => {
                    return Err(QualysError::AuthFailed {
                        reason: format!(
                            "the gateway /auth answered HTTP {} for user {}",
                            answer.status.as_u16(),
                            credentials.username
                        ),
                    });
                }
                429 => Retry::RateLimited {
                    advertised_sec: RateHeaders::from_headers(&answer.headers).to_wait_sec,
                },
                500..=599 => Retry::Transient(format!("auth: HTTP {}", answer.status.as_u16())),
                other => {
                    return Err(QualysError::AuthFailed {
                        reason: format!(
                            "the gateway /auth answered HTTP {other}; check the gateway URL \
                             ({})",
                            self.hosts.gateway_url()
                        ),
                    });
                }
            };
            retrier
                .wait(retry, &self.limiters, EndpointFamily::Containers)
                .await?;
        }
    }

    async fn bearer(&self, deadline: Instant) -> Result<BearerToken, QualysError> {
        self.token.get(|| self.fetch_token(deadline)).await
    }

    /// One gateway GET with auth, limits and retries; `handle` turns an answer that is
    /// neither 401, 429 nor 5xx into the result.
    async fn gateway<T>(
        &self,
        family: EndpointFamily,
        endpoint: &str,
        path: &str,
        query: &[(&str, String)],
        deadline: Instant,
        handle: impl Fn(&Answer) -> Step<T>,
    ) -> Result<T, QualysError> {
        let url = format!("{}{path}", self.hosts.gateway_url());
        let policy = &self.settings.retry;
        let mut retrier = Retrier::new(policy, deadline);
        let mut refreshed = false;
        loop {
            self.limiters.ready(family, deadline).await?;
            let token = self.bearer(deadline).await?;
            let request = self
                .http
                .get(&url)
                .query(query)
                .timeout(self.settings.request_timeout)
                .header(ACCEPT, "application/json")
                .bearer_auth(token.expose());
            let answer = match self.read(request, endpoint).await {
                Ok(answer) => answer,
                Err(detail) => {
                    retrier
                        .wait(Retry::Transient(detail), &self.limiters, family)
                        .await?;
                    continue;
                }
            };
            let rate = RateHeaders::from_headers(&answer.headers);
            self.limiters.observe(family, &rate, policy);
            tracing::debug!(
                endpoint,
                status = answer.status.as_u16(),
                remaining = rate.remaining,
                "gateway answer"
            );
            let step = match answer.status.as_u16() {
                401 if !refreshed => {
                    tracing::info!(endpoint, "gateway token refused; refreshing once");
                    refreshed = true;
                    self.token.invalidate(&token).await;
                    continue;
                }
                401 => Step::Fail(QualysError::AuthFailed {
                    reason: format!(
                        "the gateway refused a freshly issued token on {endpoint} (HTTP 401)"
                    ),
                }),
                429 => Step::Retry(Retry::RateLimited {
                    advertised_sec: rate.to_wait_sec,
                }),
                500..=599 => Step::Retry(Retry::Transient(format!(
                    "{endpoint}: HTTP {}",
                    answer.status.as_u16()
                ))),
                _ => handle(&answer),
            };
            match step {
                Step::Done(value) => return Ok(value),
                Step::Fail(error) => return Err(error),
                Step::Retry(why) => retrier.wait(why, &self.limiters, family).await?,
            }
        }
    }

    #[tracing::instrument(skip_all, fields(endpoint = "containers", page))]
    async fn list_paged(
        &self,
        query: &ContainerQuery,
        cursor: &ListCursor,
        deadline: Instant,
    ) -> Result<ContainerPage, QualysError> {
        let (bound_ms, seen, page) = match cursor {
            ListCursor::Start => (query.window.since.timestamp_millis(), Vec::new(), 1),
            ListCursor::Paged {
                updated_ms,
                seen_at_bound,
                page,
            } => (*updated_ms, seen_at_bound.clone(), *page),
            ListCursor::Bulk { .. } => {
                return Err(QualysError::InvalidRequest(
                    "a bulk cursor cannot resume a paged listing; restart the run".into(),
                ));
            }
        };
        if page == 0 {
            return Err(QualysError::InvalidRequest(
                "the cursor's page number is 0".into(),
            ));
        }
        if u64::from(page) * u64::from(query.page_size) > PAGED_RESULT_CAP {
            return Err(QualysError::InvalidRequest(format!(
                "more than {PAGED_RESULT_CAP} containers share updated={bound_ms} ms, beyond \
                 the paged endpoint's reach; switch the integration to the bulk listing mode"
            )));
        }
        tracing::Span::current().record("page", page);
        let params = [
            (
                "filter",
                query.filter.with_lower_bound_ms(bound_ms, &query.window),
            ),
            ("pageNumber", page.to_string()),
            ("pageSize", query.page_size.to_string()),
            ("sort", "updated:asc".to_owned()),
        ];
        let list = self
            .gateway(
                EndpointFamily::Containers,
                "containers",
                "/csapi/v1.3/containers",
                &params,
                deadline,
                |a| cs_json("containers", a, cs::parse_container_list),
            )
            .await?;
        let full_page = list.records.len() >= query.page_size as usize;
        let next = if full_page {
            Some(next_keyset(&list.records, bound_ms, seen.clone(), page))
        } else {
            None
        };
        let seen: HashSet<String> = seen.into_iter().collect();
        let page = into_page(list, |sha| seen.contains(sha), next);
        tracing::info!(
            containers = page.containers.len(),
            skipped_without_sha = page.skipped_without_sha,
            more = page.next.is_some(),
            "container page"
        );
        Ok(page)
    }

    #[tracing::instrument(skip_all, fields(endpoint = "containers/list"))]
    async fn list_bulk(
        &self,
        query: &ContainerQuery,
        cursor: &ListCursor,
        deadline: Instant,
    ) -> Result<ContainerPage, QualysError> {
        let pagination_query = match cursor {
            ListCursor::Start => None,
            ListCursor::Bulk { pagination_query } => Some(pagination_query.clone()),
            ListCursor::Paged { .. } => {
                return Err(QualysError::InvalidRequest(
                    "a paged cursor cannot resume a bulk listing; restart the run".into(),
                ));
            }
        };
        let mut params = vec![
            ("filter", query.filter.with_window(&query.window)),
            ("limit", query.page_size.min(BULK_LIMIT_MAX).to_string()),
        ];
        if let Some(q) = pagination_query {
            params.push(("paginationQuery", q));
        }
        let (list, next) = self
            .gateway(
                EndpointFamily::ContainerList,
                "containers/list",
                "/csapi/v1.3/containers/list",
                &params,
                deadline,
                |a| {
                    let next = match next_pagination_query(&a.headers) {
                        Ok(next) => next,
                        Err(detail) => {
                            return Step::Fail(QualysError::Malformed {
                                endpoint: "containers/list".into(),
                                detail,
                            });
                        }
                    };
                    match cs_json("containers/list", a, cs::parse_container_list) {
                        Step::Done(list) => Step::Done((list, next)),
                        Step::Retry(r) => Step::Retry(r),
                        Step::Fail(e) => Step::Fail(e),
                    }
                },
            )
            .await?;
        let next = next.map(|pagination_query| ListCursor::Bulk { pagination_query });
        let page = into_page(list, |_| false, next);
        tracing::info!(
            containers = page.containers.len(),
            skipped_without_sha = page.skipped_without_sha,
            more = page.next.is_some(),
            "bulk container page"
        );
        Ok(page)
    }

    /// One KnowledgeBase request: the form POST for `ids`, or a GET of a `WARNING` URL's
    /// query. Retried per the policy.
    async fn kb_request(
        &self,
        ids: &str,
        follow_query: Option<&str>,
        deadline: Instant,
    ) -> Result<(Vec<KbEntry>, Option<KbWarning>), QualysError> {
        let family = EndpointFamily::KnowledgeBase;
        let policy = &self.settings.retry;
        let url = format!("{}{}", self.hosts.api_url(), self.settings.kb_path);
        let mut retrier = Retrier::new(policy, deadline);
        loop {
            let credentials = self.credentials.credentials().await?;
            let permit = self.limiters.kb_permit(deadline, policy).await?;
            self.limiters.ready(family, deadline).await?;
            let request = match follow_query {
                Some(q) => self.http.get(format!("{url}?{q}")),
                None => self.http.post(&url).form(&[
                    ("action", "list"),
                    ("details", "All"),
                    ("ids", ids),
                ]),
            }
            .timeout(self.settings.kb_timeout)
            .header("X-Requested-With", REQUESTED_WITH)
            .basic_auth(&credentials.username, Some(credentials.password.expose()));
            let read = self.read(request, "knowledge_base").await;
            drop(permit);
            let answer = match read {
                Ok(answer) => answer,
                Err(detail) => {
                    retrier
                        .wait(Retry::Transient(detail), &self.limiters, family)
                        .await?;
                    continue;
                }
            };
            let rate = RateHeaders::from_headers(&answer.headers);
            self.limiters.observe(family, &rate, policy);
            match kb_step(&answer, &rate) {
                Step::Done(found) => return Ok(found),
                Step::Fail(error) => return Err(error),
                Step::Retry(why) => retrier.wait(why, &self.limiters, family).await?,
            }
        }
    }

    /// One batch of QIDs, following truncation warnings.
    async fn kb_batch(&self, qids: &[Qid], deadline: Instant) -> Result<Vec<KbEntry>, QualysError> {
        let ids = qid_ranges(qids);
        let (mut entries, mut warning) = self.kb_request(&ids, None, deadline).await?;
        let mut follows = 0;
        while let Some(w) = warning.take() {
            let Some(url) = w.url.as_deref() else {
                if w.code.as_deref() == Some("1980") {
                    return Err(QualysError::Malformed {
                        endpoint: "knowledge_base".into(),
                        detail: "truncated list (code 1980) without a URL for the rest".into(),
                    });
                }
                tracing::warn!(code = ?w.code, text = ?w.text, "KnowledgeBase warning");
                break;
            };
            follows += 1;
            if follows > MAX_KB_FOLLOWS {
                return Err(QualysError::Malformed {
                    endpoint: "knowledge_base".into(),
                    detail: format!("more than {MAX_KB_FOLLOWS} truncation warnings for one batch"),
                });
            }
            // Only the query is taken: requests stay on the configured host.
            let query = Url::parse(url)
                .ok()
                .and_then(|u| u.query().map(str::to_owned))
                .ok_or_else(|| QualysError::Malformed {
                    endpoint: "knowledge_base".into(),
                    detail: "truncation warning with an unreadable URL".into(),
                })?;
            tracing::info!(follows, "KnowledgeBase list truncated; fetching the rest");
            let (more, next) = self.kb_request(&ids, Some(&query), deadline).await?;
            entries.extend(more);
            warning = next;
        }
        Ok(entries)
    }
}

/// Maps a successful CS JSON answer through `parse`; anything else is rejected.
fn cs_json<T>(
    endpoint: &str,
    answer: &Answer,
    parse: impl Fn(&[u8]) -> Result<T, BodyError>,
) -> Step<T> {
    if !answer.status.is_success() {
        return Step::Fail(cs_rejection(endpoint, answer));
    }
    match parse(&answer.body) {
        Ok(value) => Step::Done(value),
        Err(BodyError::Truncated(detail)) => {
            Step::Retry(Retry::Transient(format!("{endpoint}: {detail}")))
        }
        Err(BodyError::Invalid(detail)) => Step::Fail(QualysError::Malformed {
            endpoint: endpoint.to_owned(),
            detail,
        }),
    }
}

/// The error of a non-2xx CS answer (the body is the `{errorCode, message}` trio).
fn cs_rejection(endpoint: &str, answer: &Answer) -> QualysError {
    let trio = cs::parse_error_trio(&answer.body).unwrap_or_default();
    let message = trio
        .message
        .unwrap_or_else(|| "no error message".to_owned());
    if answer.status == StatusCode::FORBIDDEN {
        return QualysError::AuthFailed {
            reason: format!(
                "HTTP 403 on {endpoint} ({message}); the user needs Container Security API access"
            ),
        };
    }
    QualysError::Rejected {
        endpoint: endpoint.to_owned(),
        status: answer.status.as_u16(),
        code: trio.error_code.unwrap_or_default(),
        message,
    }
}

/// Where the keyset walk goes after a full page read at `bound_ms`.
fn next_keyset(
    records: &[CsContainer],
    bound_ms: i64,
    mut seen: Vec<String>,
    page: u32,
) -> ListCursor {
    let last_ms = records.iter().rev().find_map(CsContainer::updated_ms);
    match last_ms {
        Some(last) if last > bound_ms => ListCursor::Paged {
            updated_ms: last,
            seen_at_bound: records
                .iter()
                .filter(|r| r.updated_ms() == Some(last))
                .filter_map(|r| r.sha().map(str::to_owned))
                .collect(),
            page: 1,
        },
        // The whole page shares the bound: only the page number can move on.
        _ => {
            for sha in records.iter().filter_map(CsContainer::sha) {
                if !seen.iter().any(|s| s == sha) {
                    seen.push(sha.to_owned());
                }
            }
            ListCursor::Paged {
                updated_ms: bound_ms,
                seen_at_bound: seen,
                page: page + 1,
            }
        }
    }
}

/// Turns raw records into a page: drops records without `sha` (counted) and those `skip`
/// says were already returned.
fn into_page(
    list: ListPage,
    skip: impl Fn(&str) -> bool,
    next: Option<ListCursor>,
) -> ContainerPage {
    let mut skipped_without_sha = 0u32;
    let mut returned = HashSet::new();
    let mut containers: Vec<Container> = Vec::with_capacity(list.records.len());
    for record in list.records {
        match record.sha() {
            None => {
                skipped_without_sha += 1;
                continue;
            }
            Some(sha) if skip(sha) || !returned.insert(sha.to_owned()) => continue,
            Some(_) => {}
        }
        if let Some(container) = record.into_model() {
            containers.push(container);
        }
    }
    if skipped_without_sha > 0 {
        tracing::warn!(skipped_without_sha, "container records without sha skipped");
    }
    ContainerPage {
        containers,
        skipped_without_sha,
        next,
    }
}

/// The decoded `paginationQuery` of the `Link: <…>;rel=next` header; `None` at the end
/// (no header, or `null`). The link's host is ignored.
fn next_pagination_query(headers: &HeaderMap) -> Result<Option<String>, String> {
    for value in headers.get_all(LINK) {
        let value = value
            .to_str()
            .map_err(|_| "the Link header is not ASCII".to_owned())?
            .trim();
        if value.is_empty() || value.eq_ignore_ascii_case("null") {
            continue;
        }
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                return Err("the Link header has an unclosed '<'".into());
            };
            let target = rest[open + 1..open + close].trim();
            let after = &rest[open + close + 1..];
            let params = &after[..after.find('<').unwrap_or(after.len())];
            rest = after;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim().to_ascii_lowercase();
                p == "rel=next" || p == "rel=\"next\""
            });
            if !is_next || target.eq_ignore_ascii_case("null") {
                continue;
            }
            let base = Url::parse("http://link.invalid/").map_err(|e| e.to_string())?;
            let url = base
                .join(target)
                .map_err(|_| "the Link header's URL does not parse".to_owned())?;
            return url
                .query_pairs()
                .find(|(k, _)| k == "paginationQuery")
                .map(|(_, v)| Some(v.into_owned()))
                .ok_or_else(|| "the Link header's URL has no paginationQuery".into());
        }
    }
    Ok(None)
}

/// Sorted QIDs as the `ids` parameter, consecutive runs collapsed: `1,2,5-9`.
pub fn qid_ranges(sorted: &[Qid]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = sorted.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end.wrapping_add(1))) && end < Qid::MAX {
            end += 1;
            iter.next();
        }
        parts.push(if end > start {
            format!("{start}-{end}")
        } else {
            start.to_string()
        });
    }
    parts.join(",")
}

/// What a KnowledgeBase answer means.
fn kb_step(answer: &Answer, rate: &RateHeaders) -> Step<(Vec<KbEntry>, Option<KbWarning>)> {
    let status = answer.status.as_u16();
    if answer.status.is_server_error() {
        return Step::Retry(Retry::Transient(format!("knowledge_base: HTTP {status}")));
    }
    match kb_xml::parse_kb(&answer.body) {
        Ok(KbDocument::List { entries, warning }) if answer.status.is_success() => {
            tracing::info!(entries = entries.len(), "KnowledgeBase batch");
            Step::Done((entries, warning))
        }
        Ok(KbDocument::List { .. }) => Step::Fail(QualysError::Rejected {
            endpoint: "knowledge_base".into(),
            status,
            code: String::new(),
            message: "a vulnerability list with an error status".into(),
        }),
        Ok(KbDocument::SimpleReturn(simple)) => simple_return_step(status, &simple, rate),
        Err(BodyError::Truncated(detail)) if answer.status.is_success() => {
            Step::Retry(Retry::Transient(format!("knowledge_base: {detail}")))
        }
        Err(BodyError::Truncated(detail) | BodyError::Invalid(detail)) => match status {
            200..=299 => Step::Fail(QualysError::Malformed {
                endpoint: "knowledge_base".into(),
                detail,
            }),
            401 | 403 => Step::Fail(QualysError::AuthFailed {
                reason: format!("the API server answered HTTP {status} to the KnowledgeBase call"),
            }),
            409 | 429 => Step::Retry(Retry::RateLimited {
                advertised_sec: rate.to_wait_sec,
            }),
            _ => Step::Fail(QualysError::Rejected {
                endpoint: "knowledge_base".into(),
                status,
                code: String::new(),
                message: "an answer that is not Qualys XML".into(),
            }),
        },
    }
}

/// Maps a `SIMPLE_RETURN` (whatever its HTTP status) to an outcome.
fn simple_return_step<T>(status: u16, simple: &SimpleReturn, rate: &RateHeaders) -> Step<T> {
    let code = simple.code.clone().unwrap_or_default();
    let text = simple.text.clone().unwrap_or_default();
    match code.as_str() {
        "1960" | "1920" => Step::Retry(Retry::Concurrency),
        "1965" => Step::Retry(Retry::RateLimited {
            advertised_sec: simple.seconds_to_wait().or(rate.to_wait_sec),
        }),
        "2001" | "2000" | "2002" | "2003" | "2004" => Step::Fail(QualysError::AuthFailed {
            reason: format!("Qualys code {code}: {text}"),
        }),
        _ if status == 401 || status == 403 => Step::Fail(QualysError::AuthFailed {
            reason: format!("HTTP {status}, Qualys code {code}: {text}"),
        }),
        _ if status == 409 || status == 429 => Step::Retry(Retry::RateLimited {
            advertised_sec: simple.seconds_to_wait().or(rate.to_wait_sec),
        }),
        _ => Step::Fail(QualysError::Rejected {
            endpoint: "knowledge_base".into(),
            status,
            code,
            message: text,
        }),
    }
}

/// Refuses a sha that could not be one (and could reshape the URL path).
fn checked_sha<'a>(what: &str, sha: &'a str) -> Result<&'a str, QualysError> {
    let sha = sha.trim();
    if sha.is_empty() || sha.len() > 128 || !sha.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(QualysError::InvalidRequest(format!(
            "{what} {sha:?} is not a hex sha"
        )));
    }
    Ok(sha)
}

impl<C: CredentialsSource> QualysApi for QualysClient<C> {
    async fn list_containers(
        &self,
        query: &ContainerQuery,
        cursor: &ListCursor,
        deadline: Instant,
    ) -> Result<ContainerPage, QualysError> {
        if !PAGE_SIZE_RANGE.contains(&query.page_size) {
            return Err(QualysError::InvalidRequest(format!(
                "page size {} is out of range: use 1 to 1000",
                query.page_size
            )));
        }
        if query.window.since > query.window.until {
            return Err(QualysError::InvalidRequest(format!(
                "the window starts ({}) after it ends ({})",
                query.window.since, query.window.until
            )));
        }
        match query.mode {
            ListingMode::Paged => self.list_paged(query, cursor, deadline).await,
            ListingMode::Bulk => self.list_bulk(query, cursor, deadline).await,
        }
    }

    #[tracing::instrument(skip_all, fields(endpoint = "containers/vuln", container_sha = %container_sha))]
    async fn container_vulnerabilities(
        &self,
        container_sha: &str,
        deadline: Instant,
    ) -> Result<Vec<Vulnerability>, QualysError> {
        let sha = checked_sha("container sha", container_sha)?;
        let vulns = self
            .gateway(
                EndpointFamily::Containers,
                "containers/vuln",
                &format!("/csapi/v1.3/containers/{sha}/vuln"),
                &[],
                deadline,
                |a| cs_json("containers/vuln", a, cs::parse_vulnerabilities),
            )
            .await?;
        tracing::debug!(vulnerabilities = vulns.len(), "container vulnerabilities");
        Ok(vulns)
    }

    #[tracing::instrument(skip_all, fields(endpoint = "images", image_sha = %image_sha))]
    async fn image(
        &self,
        image_sha: &str,
        deadline: Instant,
    ) -> Result<Option<Image>, QualysError> {
        let sha = checked_sha("image sha", image_sha)?;
        self.gateway(
            EndpointFamily::Images,
            "images",
            &format!("/csapi/v1.3/images/{sha}"),
            &[],
            deadline,
            |a| {
                let not_scanned = cs::parse_error_trio(&a.body)
                    .and_then(|t| t.error_code)
                    .is_some_and(|c| c.eq_ignore_ascii_case("CMS-2002"));
                if a.status == StatusCode::NOT_FOUND || not_scanned {
                    tracing::info!(status = a.status.as_u16(), "no image data in Qualys");
                    return Step::Done(None);
                }
                match cs_json("images", a, |body| cs::parse_image(body, sha)) {
                    Step::Done(image) => Step::Done(Some(image)),
                    Step::Retry(r) => Step::Retry(r),
                    Step::Fail(e) => Step::Fail(e),
                }
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(endpoint = "knowledge_base", qids = qids.len()))]
    async fn knowledge_base(
        &self,
        qids: &[Qid],
        deadline: Instant,
    ) -> Result<Vec<KbEntry>, QualysError> {
        let mut wanted: Vec<Qid> = qids.iter().copied().filter(|q| *q > 0).collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let batches: Vec<Vec<Qid>> = wanted
            .chunks(self.settings.kb_batch_size)
            .map(<[Qid]>::to_vec)
            .collect();
        let found: Vec<Vec<KbEntry>> = stream::iter(batches)
            .map(|batch| async move { self.kb_batch(&batch, deadline).await })
            .buffer_unordered(self.settings.kb_concurrency.max(1))
            .try_collect()
            .await?;
        let mut entries: Vec<KbEntry> = found.into_iter().flatten().collect();
        entries.sort_by_key(|e| e.qid);
        entries.dedup_by_key(|e| e.qid);
        tracing::info!(
            asked = wanted.len(),
            found = entries.len(),
            "KnowledgeBase entries"
        );
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn link(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(LINK, HeaderValue::from_str(value).expect("ascii"));
        headers
    }

    #[test]
    fn link_header_forms() {
        let fixture = "<http://qualysapi.qualys.com/csapi/v1.3/containers/list?limit=2&paginationQuery=updated%3E%3D1711951207904+AND+not+uuid%3A+%5B801f0d53-19c6-31e7-831a-5a5c6563f3ce%5D>;rel=next";
        assert_eq!(
            next_pagination_query(&link(fixture))
                .expect("parses")
                .as_deref(),
            Some("updated>=1711951207904 AND not uuid: [801f0d53-19c6-31e7-831a-5a5c6563f3ce]")
        );
        assert_eq!(next_pagination_query(&HeaderMap::new()), Ok(None));
        assert_eq!(next_pagination_query(&link("null")), Ok(None));
        assert_eq!(next_pagination_query(&link("<null>;rel=next")), Ok(None));
        assert_eq!(
            next_pagination_query(&link(
                "</x?paginationQuery=a>; rel=\"prev\", </y?paginationQuery=b%2Cc>; rel=\"next\""
            )),
            Ok(Some("b,c".into()))
        );
        assert!(next_pagination_query(&link("<http://h/x?limit=2>;rel=next")).is_err());
    }

    #[test]
    fn qids_collapse_into_ranges() {
        assert_eq!(qid_ranges(&[1, 2, 5, 6, 7, 8, 9, 11]), "1-2,5-9,11");
        assert_eq!(qid_ranges(&[376157]), "376157");
        assert_eq!(qid_ranges(&[]), "");
        assert_eq!(
            qid_ranges(&[Qid::MAX - 1, Qid::MAX]),
            format!("{}-{}", Qid::MAX - 1, Qid::MAX)
        );
    }

    #[test]
    fn settings_from_env() {
        let vars = |name: &str| match name {
            "QCVR_QUALYS_API_URL" => Some("http://127.0.0.1:9000".to_owned()),
            "QCVR_QUALYS_GATEWAY_URL" => Some(" ".to_owned()),
            "QCVR_KB_BATCH_SIZE" => Some("100".to_owned()),
            _ => None,
        };
        let settings = ClientSettings::from_lookup(vars).expect("valid");
        assert_eq!(settings.api_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(settings.gateway_url, None);
        assert_eq!(settings.kb_batch_size, 100);
        assert_eq!(settings.kb_path, DEFAULT_KB_PATH);
        let bad = ClientSettings::from_lookup(|n| (n == "QCVR_KB_BATCH_SIZE").then(|| "0".into()));
        assert!(bad.is_err());
    }
}
