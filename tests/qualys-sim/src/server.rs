//! The HTTP side: routes, the per-request pipeline (statistics, faults, limits, auth) and the
//! answers of every endpoint, plus the accept loop that can drop a connection on purpose.
//!
//! A request goes through: count it → fire faults → (KB) concurrency slot → delay → reset →
//! revoke tokens → forced 5xx / rate faults → sliding window → auth → the endpoint → truncate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::account::{Account, Mutation, MutationError, Shape};
use crate::auth::{TokenBook, TokenProblem};
use crate::config::{SimConfig, VulnEnvelope};
use crate::faults::{Endpoint, Fault, FaultBook, FaultRule};
use crate::kb;
use crate::limits::{Limiters, Verdict};
use crate::qql::{Fields, Filter};

/// The documented ceiling of the paged container list.
const PAGED_CAP: u64 = 10_000;
/// Host of the bulk `Link` header, as in the documented sample (clients must not follow it).
const LINK_BASE: &str = "http://qualysapi.qualys.com/csapi/v1.3/containers/list";
const JSON_TYPE: &str = "application/json;charset=UTF-8";
const XML_TYPE: &str = "text/xml;charset=UTF-8";

/// Request and status counters, as served by `/sim/stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Requests per endpoint name (`auth`, `containers`, `containers_list`, `container`,
    /// `container_vuln`, `image`, `kb`), faulted ones included.
    pub requests: BTreeMap<String, u64>,
    /// Answers per HTTP status code (dropped connections are not answers).
    pub statuses: BTreeMap<String, u64>,
}

impl Stats {
    /// Requests made to `endpoint`.
    pub fn requests_to(&self, endpoint: Endpoint) -> u64 {
        self.requests.get(endpoint.name()).copied().unwrap_or(0)
    }
}

/// State shared by all requests.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub account: RwLock<Account>,
    pub tokens: Mutex<TokenBook>,
    pub faults: Mutex<FaultBook>,
    limiters: Mutex<Limiters>,
    kb_running: AtomicU32,
    pub kb_account_expired: AtomicBool,
    stats: Mutex<Stats>,
}

/// Locks a mutex, recovering the data if a panicking request poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read(account: &RwLock<Account>) -> std::sync::RwLockReadGuard<'_, Account> {
    account
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write access to the account.
pub(crate) fn write(account: &RwLock<Account>) -> std::sync::RwLockWriteGuard<'_, Account> {
    account
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wall-clock epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Shared {
    pub(crate) fn new(config: SimConfig, account: Account) -> Self {
        let mut faults = FaultBook::default();
        for rule in &config.faults {
            faults.add(rule.clone());
        }
        Self {
            limiters: Mutex::new(Limiters::new(&config.limits)),
            tokens: Mutex::new(TokenBook::new(config.seed)),
            kb_account_expired: AtomicBool::new(config.kb_account_expired),
            account: RwLock::new(account),
            faults: Mutex::new(faults),
            kb_running: AtomicU32::new(0),
            stats: Mutex::new(Stats::default()),
            config,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }
}

/// Handle that lets a request close its own connection without answering.
#[derive(Clone)]
pub(crate) struct ConnKill(Arc<Notify>);

/// An answer under construction.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: StatusCode, value: &Value) -> Self {
        Self {
            status,
            content_type: JSON_TYPE,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    fn xml(status: StatusCode, text: String) -> Self {
        Self {
            status,
            content_type: XML_TYPE,
            headers: Vec::new(),
            body: text.into_bytes(),
        }
    }

    /// The CS error trio `{errorCode, message, timestamp}`.
    fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &json!({"errorCode": code, "message": message, "timestamp": now_ms()}),
        )
    }

    fn bad_request(message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "400 BAD_REQUEST", message)
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::SERVER, HeaderValue::from_static("Qualys"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(name, value);
            }
        }
        response
    }
}

/// One incoming call, reduced to what the endpoints need.
struct Call {
    endpoint: Endpoint,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    sha: Option<String>,
    kill: Option<ConnKill>,
}

impl Call {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn form(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text).into_owned().collect()
}

/// Releases the KnowledgeBase concurrency slot when the request ends, even if dropped.
struct KbSlot(Arc<Shared>);

impl Drop for KbSlot {
    fn drop(&mut self) {
        self.0.kb_running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn rate_headers(
    reply: Reply,
    endpoint: Endpoint,
    verdict: &Verdict,
    running: u32,
    shared: &Shared,
) -> Reply {
    if endpoint == Endpoint::Kb {
        reply
            .header("x-ratelimit-limit", verdict.limit)
            .header("x-ratelimit-window-sec", verdict.window_secs)
            .header(
                "x-concurrency-limit-limit",
                shared.config.limits.kb_concurrency,
            )
            .header("x-concurrency-limit-running", running)
            .header("x-ratelimit-towait-sec", verdict.to_wait_secs.unwrap_or(0))
            .header("x-ratelimit-remaining", verdict.remaining)
    } else {
        let reply = reply
            .header("X-RateLimit-Limit", verdict.limit)
            .header("X-RateLimit-Window-Sec", verdict.window_secs)
            .header("X-RateLimit-Remaining", verdict.remaining);
        match verdict.to_wait_secs {
            Some(wait) => reply.header("X-RateLimit-ToWait-Sec", wait),
            None => reply,
        }
    }
}

fn kb_blocked(code: u32, text: &str, wait: Option<u64>) -> Reply {
    Reply::xml(
        StatusCode::CONFLICT,
        kb::simple_return(Some(code), text, wait, now_ms()),
    )
}

fn cs_rate_limited() -> Reply {
    Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "429 TOO_MANY_REQUESTS",
        "API rate limit exceeded. Retry after the rate limit period.",
    )
}

/// The request pipeline shared by every API endpoint.
async fn pipeline(shared: Arc<Shared>, call: Call) -> Response {
    let endpoint = call.endpoint;
    *lock(&shared.stats)
        .requests
        .entry(endpoint.name().to_string())
        .or_default() += 1;
    let fired = lock(&shared.faults).on_request(endpoint);
    tracing::debug!(endpoint = endpoint.name(), ?fired, "request");

    let concurrency = shared.config.limits.kb_concurrency;
    let mut slot = None;
    let mut running = 0;
    if endpoint == Endpoint::Kb {
        running = shared.kb_running.fetch_add(1, Ordering::SeqCst) + 1;
        slot = Some(KbSlot(shared.clone()));
    }

    let reply = if endpoint == Endpoint::Kb && running > concurrency {
        let verdict = lock(&shared.limiters).peek(endpoint, Instant::now());
        let text = format!(
            "This API cannot be run again until {concurrency} currently running instances have finished."
        );
        rate_headers(
            kb_blocked(1960, &text, None),
            endpoint,
            &verdict,
            running,
            &shared,
        )
    } else {
        for fault in &fired {
            if let Fault::Slow { delay_ms } = fault {
                tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
            }
        }
        if fired.contains(&Fault::Reset) {
            if let Some(kill) = &call.kill {
                kill.0.notify_one();
            }
            drop(slot);
            tracing::debug!(
                endpoint = endpoint.name(),
                "dropping the connection (reset fault)"
            );
            return std::future::pending().await;
        }
        answer(&shared, &call, &fired, running).await
    };
    drop(slot);

    let mut reply = reply;
    if fired.contains(&Fault::Truncate) {
        let half = reply.body.len() / 2;
        reply.body.truncate(half);
    }
    *lock(&shared.stats)
        .statuses
        .entry(reply.status.as_u16().to_string())
        .or_default() += 1;
    reply.into_response()
}

async fn answer(shared: &Arc<Shared>, call: &Call, fired: &[Fault], running: u32) -> Reply {
    let endpoint = call.endpoint;
    if fired.contains(&Fault::ExpireTokens) {
        lock(&shared.tokens).expire_all();
    }
    if endpoint == Endpoint::Auth {
        if let Some(status) = server_error(fired) {
            return Reply::error(
                status,
                &error_code(status),
                "Service temporarily unavailable.",
            );
        }
        return auth(shared, call);
    }

    let real = lock(&shared.limiters).peek(endpoint, Instant::now());
    let with_headers =
        |reply: Reply, verdict: &Verdict| rate_headers(reply, endpoint, verdict, running, shared);
    if let Some(status) = server_error(fired) {
        let reply = if endpoint == Endpoint::Kb {
            Reply::xml(
                status,
                format!("<html><body><h1>{status}</h1></body></html>\n"),
            )
        } else {
            Reply::error(
                status,
                &error_code(status),
                "The service is temporarily unavailable.",
            )
        };
        return with_headers(reply, &real);
    }
    for fault in fired {
        let forced = |wait: u64| Verdict {
            remaining: 0,
            to_wait_secs: Some(wait),
            ..real
        };
        match fault {
            Fault::CsRateLimit { wait_secs } => {
                return with_headers(cs_rate_limited(), &forced(*wait_secs));
            }
            Fault::KbRateLimit { wait_secs } => {
                let reply = kb_blocked(1965, &kb::wait_text(*wait_secs), Some(*wait_secs));
                return with_headers(reply, &forced(*wait_secs));
            }
            Fault::KbConcurrency => {
                let text = format!(
                    "This API cannot be run again until {} currently running instances have finished.",
                    shared.config.limits.kb_concurrency
                );
                return rate_headers(
                    kb_blocked(1960, &text, None),
                    endpoint,
                    &real,
                    shared.config.limits.kb_concurrency + 1,
                    shared,
                );
            }
            _ => {}
        }
    }

    let Some(verdict) = lock(&shared.limiters).acquire(endpoint, Instant::now()) else {
        return auth(shared, call);
    };
    if let Some(wait) = verdict.to_wait_secs {
        let reply = if endpoint == Endpoint::Kb {
            kb_blocked(1965, &kb::wait_text(wait), Some(wait))
        } else {
            cs_rate_limited()
        };
        return with_headers(reply, &verdict);
    }

    let reply = if endpoint == Endpoint::Kb {
        knowledge_base(shared, call)
    } else {
        let authorization = call
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let checked = lock(&shared.tokens).check(authorization, now_ms() / 1000);
        match checked {
            Err(problem) => Reply::json(
                StatusCode::UNAUTHORIZED,
                &json!({"status": 401, "error": "Unauthorized", "message": match problem {
                    TokenProblem::Expired => "JWT expired",
                    TokenProblem::Invalid => "Not authenticated",
                }}),
            ),
            Ok(()) => {
                let change = fired.iter().find_map(|fault| match fault {
                    Fault::ChangeBetweenPages { ahead, behind } => Some((*ahead, *behind)),
                    _ => None,
                });
                match endpoint {
                    Endpoint::Containers => paged(shared, call, change),
                    Endpoint::ContainersList => bulk(shared, call, change),
                    Endpoint::Container => container(shared, call),
                    Endpoint::ContainerVuln => container_vuln(shared, call),
                    _ => image(shared, call),
                }
            }
        }
    };
    with_headers(reply, &verdict)
}

/// `500 INTERNAL_SERVER_ERROR`, in the style of the documented `400 BAD_REQUEST`.
fn error_code(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("ERROR");
    format!(
        "{} {}",
        status.as_u16(),
        reason.to_uppercase().replace(' ', "_")
    )
}

fn server_error(fired: &[Fault]) -> Option<StatusCode> {
    fired.iter().find_map(|fault| match fault {
        Fault::ServerError { status } => StatusCode::from_u16(*status).ok(),
        _ => None,
    })
}

fn auth(shared: &Shared, call: &Call) -> Reply {
    let username = call.param("username").unwrap_or_default();
    let password = call.param("password").unwrap_or_default();
    let config = &shared.config;
    let user_ok = config.username.as_deref().is_none_or(|u| u == username);
    let password_ok = config.password.as_deref().is_none_or(|p| p == password);
    if username.is_empty() || !user_ok || !password_ok {
        return Reply::json(
            StatusCode::UNAUTHORIZED,
            &json!({"status": 401, "error": "Unauthorized", "message": "Bad credentials"}),
        );
    }
    let token = lock(&shared.tokens).issue(username, now_ms() / 1000, config.token_lifetime_secs);
    Reply {
        status: StatusCode::CREATED,
        content_type: "text/plain;charset=UTF-8",
        headers: Vec::new(),
        body: token.into_bytes(),
    }
}

fn parse_filter(text: Option<&str>) -> Result<Filter, Reply> {
    let text = text.unwrap_or_default();
    Filter::parse(text).map_err(|reason| {
        tracing::debug!(%reason, "bad filter");
        Reply::bad_request(&format!("Invalid filter query: {text}"))
    })
}

fn fields(account: &Account, index: usize) -> Fields<'_> {
    let c = &account.containers[index];
    Fields {
        state: &c.state,
        updated_ms: c.updated_ms,
        uuid: &c.uuid,
    }
}

fn number(call: &Call, name: &str, default: u64) -> Result<u64, Reply> {
    match call.param(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| Reply::bad_request(&format!("Invalid value for {name}: {text}"))),
    }
}

/// Bumps `updated` of some containers after `served` (ahead) and on or before it (behind).
fn change_between_pages(
    shared: &Shared,
    order: &[usize],
    served: usize,
    ahead: usize,
    behind: usize,
) {
    let mut account = write(&shared.account);
    let now = now_ms();
    let later = &order[served.min(order.len())..];
    let earlier = &order[..served.min(order.len())];
    let spread = |list: &[usize], n: usize| -> Vec<usize> {
        if list.is_empty() || n == 0 {
            return Vec::new();
        }
        let step = (list.len() / n).max(1);
        list.iter().step_by(step).take(n).copied().collect()
    };
    for index in spread(later, ahead)
        .into_iter()
        .chain(spread(earlier, behind))
    {
        let container = &mut account.containers[index];
        container.updated_ms = now.max(container.updated_ms + 1);
    }
}

fn paged(shared: &Shared, call: &Call, change: Option<(usize, usize)>) -> Reply {
    let result = (|| {
        let page_number = number(call, "pageNumber", 1)?;
        let page_size = number(call, "pageSize", 50)?;
        if !(1..=1000).contains(&page_size) {
            return Err(Reply::bad_request(&format!(
                "Invalid pageSize {page_size}: it must be between 1 and 1000."
            )));
        }
        if page_number < 1 {
            return Err(Reply::bad_request(
                "Invalid pageNumber: it must be 1 or more.",
            ));
        }
        if page_number * page_size > PAGED_CAP {
            return Err(Reply::bad_request(&format!(
                "pageNumber * pageSize must not exceed {PAGED_CAP}; use the bulk API /csapi/v1.3/containers/list for more records."
            )));
        }
        let filter = parse_filter(call.param("filter"))?;
        let sort = call.param("sort").unwrap_or("updated:asc");
        let (token, direction) = sort.split_once(':').unwrap_or((sort, "asc"));
        let descending = match direction {
            "asc" => false,
            "desc" => true,
            _ => return Err(Reply::bad_request(&format!("Invalid sort: {sort}"))),
        };
        let by_created = match token {
            "updated" => false,
            "created" => true,
            _ => return Err(Reply::bad_request(&format!("Invalid sort: {sort}"))),
        };
        Ok((page_number, page_size, filter, by_created, descending))
    })();
    let (page_number, page_size, filter, by_created, descending) = match result {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };

    let (body, order, served) = {
        let account = read(&shared.account);
        let mut order: Vec<usize> = (0..account.containers.len())
            .filter(|&i| filter.matches(&fields(&account, i)))
            .collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&account.containers[a], &account.containers[b]);
            let key = |c: &crate::account::Container| {
                if by_created {
                    c.created_ms
                } else {
                    c.updated_ms
                }
            };
            key(a).cmp(&key(b)).then_with(|| a.sha.cmp(&b.sha))
        });
        if descending {
            order.reverse();
        }
        let start = ((page_number - 1) * page_size) as usize;
        let end = (start + page_size as usize).min(order.len());
        let data: Vec<Value> = order
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|&i| account.container_json(i, Shape::List))
            .collect();
        (json!({"data": data, "count": order.len()}), order, end)
    };
    if let Some((ahead, behind)) = change {
        change_between_pages(shared, &order, served, ahead, behind);
    }
    Reply::json(StatusCode::OK, &body)
}

fn bulk(shared: &Shared, call: &Call, change: Option<(usize, usize)>) -> Reply {
    let limit = match number(call, "limit", 100) {
        Ok(limit) if (1..=250).contains(&limit) => limit as usize,
        Ok(limit) => {
            return Reply::bad_request(&format!(
                "Invalid limit {limit}: it must be between 1 and 250."
            ));
        }
        Err(reply) => return reply,
    };
    let user = match parse_filter(call.param("filter")) {
        Ok(filter) => filter,
        Err(reply) => return reply,
    };
    let cursor = match parse_filter(call.param("paginationQuery")) {
        Ok(filter) => filter,
        Err(reply) => return reply,
    };
    let combined = user.clone().and(cursor);

    let (body, link, order, served) = {
        let account = read(&shared.account);
        let mut order: Vec<usize> = (0..account.containers.len())
            .filter(|&i| combined.matches(&fields(&account, i)))
            .collect();
        let key = |i: usize| {
            let c = &account.containers[i];
            (c.updated_ms, c.uuid.as_str())
        };
        order.sort_by(|&a, &b| key(a).cmp(&key(b)));
        let served = limit.min(order.len());
        let data: Vec<Value> = order[..served]
            .iter()
            .map(|&i| account.container_json(i, Shape::Bulk))
            .collect();
        let link = if order.len() > served {
            let (last_updated, last_uuid) = key(order[served - 1]);
            let seen: BTreeSet<&str> = (0..account.containers.len())
                .filter(|&i| {
                    let (updated, uuid) = key(i);
                    updated == last_updated
                        && uuid <= last_uuid
                        && user.matches(&fields(&account, i))
                })
                .map(|i| key(i).1)
                .collect();
            let query = format!(
                "updated>={last_updated} AND not uuid: [{}]",
                seen.into_iter().collect::<Vec<_>>().join(",")
            );
            let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
            Some(format!(
                "<{LINK_BASE}?limit={limit}&paginationQuery={encoded}>;rel=next"
            ))
        } else if shared.config.null_link {
            Some("null".to_string())
        } else {
            None
        };
        (json!({"data": data}), link, order, served)
    };
    if let Some((ahead, behind)) = change {
        change_between_pages(shared, &order, served, ahead, behind);
    }
    let reply = Reply::json(StatusCode::OK, &body);
    match link {
        Some(link) => reply.header("link", link),
        None => reply,
    }
}

fn not_found_container(sha: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "404 NOT_FOUND",
        &format!("Container not found for given sha: {sha}"),
    )
}

fn container(shared: &Shared, call: &Call) -> Reply {
    let sha = call.sha.as_deref().unwrap_or_default();
    let account = read(&shared.account);
    match account.by_sha.get(sha) {
        Some(&index) => Reply::json(
            StatusCode::OK,
            &account.container_json(index, Shape::Detail),
        ),
        None => not_found_container(sha),
    }
}

fn container_vuln(shared: &Shared, call: &Call) -> Reply {
    let sha = call.sha.as_deref().unwrap_or_default();
    let account = read(&shared.account);
    let Some(&index) = account.by_sha.get(sha) else {
        return not_found_container(sha);
    };
    let container = &account.containers[index];
    let vulns: Vec<Value> = account
        .vulns_of(container)
        .iter()
        .map(|v| account.vuln_json(v, false))
        .collect();
    let nested = match shared.config.vuln_envelope {
        VulnEnvelope::Vulns => true,
        VulnEnvelope::Array => false,
        VulnEnvelope::Mixed => index % 2 == 0,
    };
    let body = if nested {
        json!({"details": {"vulns": vulns}})
    } else {
        json!({"details": vulns})
    };
    Reply::json(StatusCode::OK, &body)
}

fn image(shared: &Shared, call: &Call) -> Reply {
    let sha = call.sha.as_deref().unwrap_or_default();
    let account = read(&shared.account);
    match account.image_by_sha.get(sha) {
        Some(&index) if account.images[index].scanned => {
            Reply::json(StatusCode::OK, &account.image_json(index))
        }
        Some(_) => Reply::error(
            StatusCode::NOT_FOUND,
            "CMS-2002",
            "Data not available for given Image Id.",
        ),
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "404 NOT_FOUND",
            &format!("Image not found for given sha: {sha}"),
        ),
    }
}

fn knowledge_base(shared: &Shared, call: &Call) -> Reply {
    let now = now_ms();
    let simple = |status: StatusCode, code: Option<u32>, text: &str| {
        Reply::xml(status, kb::simple_return(code, text, None, now))
    };
    if !call.headers.contains_key("x-requested-with") {
        return simple(
            StatusCode::BAD_REQUEST,
            None,
            "Please add an X-Requested-With header to every API v2 request.",
        );
    }
    let credentials = call
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let config = &shared.config;
    let authorized = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(user, password)| {
            !user.is_empty()
                && config.username.as_deref().is_none_or(|u| u == user)
                && config.password.as_deref().is_none_or(|p| p == password)
        });
    if !authorized {
        return simple(StatusCode::UNAUTHORIZED, None, "Bad Login/Password");
    }
    if shared.kb_account_expired.load(Ordering::SeqCst) {
        return simple(StatusCode::OK, Some(2001), "This account has expired.");
    }
    match call.param("action") {
        None => {
            return simple(
                StatusCode::BAD_REQUEST,
                Some(1903),
                "Missing required parameter(s): action",
            );
        }
        Some("list") => {}
        Some(other) => {
            return simple(
                StatusCode::BAD_REQUEST,
                Some(1905),
                &format!("parameter action has invalid value: {other}"),
            );
        }
    }
    if let Some(details) = call.param("details")
        && !matches!(details, "Basic" | "All" | "None")
    {
        return simple(
            StatusCode::BAD_REQUEST,
            Some(1905),
            &format!("parameter details has invalid value: {details}"),
        );
    }
    let account = read(&shared.account);
    let xml = match call.param("ids") {
        None => kb::list_output(account.kb.values(), now),
        Some(ids) => match kb::parse_ids(ids) {
            Err(text) => return simple(StatusCode::BAD_REQUEST, Some(1905), &text),
            Ok(ranges) => {
                let mut qids = BTreeSet::new();
                for (low, high) in ranges {
                    qids.extend(account.kb.range(low..=high).map(|(qid, _)| *qid));
                }
                kb::list_output(qids.iter().filter_map(|qid| account.kb.get(qid)), now)
            }
        },
    };
    Reply::xml(StatusCode::OK, xml)
}

// --- axum handlers --------------------------------------------------------------------------

type Kill = Option<Extension<ConnKill>>;

fn call(
    endpoint: Endpoint,
    query: Option<String>,
    headers: HeaderMap,
    sha: Option<String>,
    kill: Kill,
) -> Call {
    Call {
        endpoint,
        params: form(query.unwrap_or_default().as_bytes()),
        headers,
        sha,
        kill: kill.map(|Extension(kill)| kill),
    }
}

async fn auth_handler(
    State(shared): State<Arc<Shared>>,
    kill: Kill,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = call(Endpoint::Auth, query, headers, None, kill);
    call.params.extend(form(&body));
    pipeline(shared, call).await
}

/// The GET handler of a gateway endpoint; routes with `{sha}` pass it on.
fn gateway_get(endpoint: Endpoint) -> MethodRouter<Arc<Shared>> {
    get(
        move |State(shared): State<Arc<Shared>>,
              kill: Kill,
              sha: Option<Path<String>>,
              RawQuery(query): RawQuery,
              headers: HeaderMap| async move {
            let sha = sha.map(|Path(sha)| sha);
            pipeline(shared, call(endpoint, query, headers, sha, kill)).await
        },
    )
}

async fn kb_handler(
    State(shared): State<Arc<Shared>>,
    kill: Kill,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = call(Endpoint::Kb, query, headers, None, kill);
    call.params.extend(form(&body));
    pipeline(shared, call).await
}

async fn truth_handler(State(shared): State<Arc<Shared>>) -> Response {
    let truth = read(&shared.account).truth();
    axum::Json(truth).into_response()
}

async fn stats_handler(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.stats()).into_response()
}

fn control_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

async fn mutate_handler(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mutation: Mutation = match serde_json::from_slice(&body) {
        Ok(mutation) => mutation,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, format!("bad mutation: {e}")),
    };
    let result = write(&shared.account).mutate(&mutation, now_ms());
    match result {
        Ok(updated_ms) => axum::Json(json!({"ok": true, "updated_ms": updated_ms})).into_response(),
        Err(e @ MutationError::UnknownSha(_)) => {
            control_error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => control_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<FaultRule>),
    One(Box<FaultRule>),
}

async fn add_faults_handler(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let rules = match serde_json::from_slice::<OneOrMany>(&body) {
        Ok(OneOrMany::Many(rules)) => rules,
        Ok(OneOrMany::One(rule)) => vec![*rule],
        Err(e) => return control_error(StatusCode::BAD_REQUEST, format!("bad fault rule: {e}")),
    };
    let mut book = lock(&shared.faults);
    for rule in rules {
        book.add(rule);
    }
    axum::Json(json!({"faults": book.describe()})).into_response()
}

async fn list_faults_handler(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({"faults": lock(&shared.faults).describe()})).into_response()
}

async fn clear_faults_handler(State(shared): State<Arc<Shared>>) -> Response {
    lock(&shared.faults).clear();
    axum::Json(json!({"faults": []})).into_response()
}

async fn fallback() -> Response {
    Reply::error(
        StatusCode::NOT_FOUND,
        "404 NOT_FOUND",
        "No such endpoint in the simulator.",
    )
    .into_response()
}

/// All routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let kb = get(kb_handler).post(kb_handler);
    Router::new()
        .route("/auth", post(auth_handler))
        .route("/csapi/v1.3/containers", gateway_get(Endpoint::Containers))
        .route(
            "/csapi/v1.3/containers/list",
            gateway_get(Endpoint::ContainersList),
        )
        .route(
            "/csapi/v1.3/containers/{sha}",
            gateway_get(Endpoint::Container),
        )
        .route(
            "/csapi/v1.3/containers/{sha}/vuln",
            gateway_get(Endpoint::ContainerVuln),
        )
        .route("/csapi/v1.3/images/{sha}", gateway_get(Endpoint::Image))
        .route("/api/2.0/fo/knowledge_base/vuln/", kb.clone())
        .route("/api/2.0/fo/knowledge_base/vuln", kb)
        .route("/sim/truth", get(truth_handler))
        .route("/sim/stats", get(stats_handler))
        .route("/sim/mutate", post(mutate_handler))
        .route(
            "/sim/faults",
            get(list_faults_handler).post(add_faults_handler),
        )
        .route("/sim/faults/clear", post(clear_faults_handler))
        .fallback(fallback)
        .with_state(shared)
}

/// Accepts connections forever. Each connection gets a [`ConnKill`] its requests can fire to
/// drop it: the connection future is dropped, which closes the socket without a response.
pub(crate) async fn serve(listener: TcpListener, router: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let kill = Arc::new(Notify::new());
        let router = router.clone();
        let request_kill = ConnKill(kill.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(request_kill.clone());
                let router = router.clone();
                async move { router.oneshot(request).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = kill.notified() => tracing::debug!("connection dropped by a reset fault"),
            }
        });
    }
}
