//! Rate limits, concurrency and retries.
//!
//! Every answer's `X-RateLimit-*` and `X-Concurrency-Limit-*` headers are read. A limiter per
//! endpoint family (the bulk container list; other container calls; images; the
//! KnowledgeBase) holds requests back when Qualys says none remain, and a semaphore keeps
//! KnowledgeBase calls within the advertised concurrency (default 2).
//!
//! Retries: 409/1960 waits a fixed delay; 409/1965 and 429 wait what Qualys advertises (or
//! 2, 4, 8… s capped at 60 s) plus jitter; 5xx, connection errors, timeouts and cut-off
//! bodies back off exponentially for a bounded number of attempts; other 4xx are never
//! retried. No wait ever ends past the caller's deadline: the call returns
//! [`QualysError::RateLimited`] (or [`QualysError::Transient`]) at once instead.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, sleep, timeout_at};

use super::QualysError;

/// How long and how often the client waits and retries. Every delay is configurable so
/// tests can run in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total for one call failing with 5xx / connection errors / cut-off
    /// bodies (default 5).
    pub max_attempts: u32,
    /// First backoff after such a failure, doubled each time (default 1 s).
    pub backoff_base: Duration,
    /// Longest single backoff (default 30 s).
    pub backoff_cap: Duration,
    /// Rate-limit waits (409/1960/1965, 429) allowed in one call before giving up with
    /// `RateLimited` (default 10).
    pub max_rate_limit_waits: u32,
    /// Wait after 409/1960, the KnowledgeBase concurrency limit (default 10 s).
    pub concurrency_wait: Duration,
    /// First wait after a rate limit without an advertised time, doubled each time
    /// (default 2 s).
    pub rate_limit_fallback_base: Duration,
    /// Longest fallback rate-limit wait (default 60 s).
    pub rate_limit_fallback_cap: Duration,
    /// Upper bound of the random jitter added to each wait (default 1 s).
    pub jitter: Duration,
    /// How long one second advertised by Qualys (`SECONDS_TO_WAIT`,
    /// `X-RateLimit-ToWait-Sec`, `X-RateLimit-Window-Sec`) lasts: 1 s, except in tests.
    pub advertised_second: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            max_rate_limit_waits: 10,
            concurrency_wait: Duration::from_secs(10),
            rate_limit_fallback_base: Duration::from_secs(2),
            rate_limit_fallback_cap: Duration::from_secs(60),
            jitter: Duration::from_secs(1),
            advertised_second: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The real length of `seconds` advertised by Qualys.
    pub fn advertised(&self, seconds: u64) -> Duration {
        self.advertised_second
            .saturating_mul(u32::try_from(seconds).unwrap_or(u32::MAX))
    }

    fn jitter(&self) -> Duration {
        let max = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::rng().random_range(0..=max))
    }
}

/// `base * 2^(n-1)`, capped.
fn doubling(base: Duration, n: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// The rate and concurrency headers of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// `X-RateLimit-Limit`: calls allowed per window.
    pub limit: Option<u64>,
    /// `X-RateLimit-Window-Sec`: window length.
    pub window_sec: Option<u64>,
    /// `X-RateLimit-Remaining`: calls left in the window.
    pub remaining: Option<u64>,
    /// `X-RateLimit-ToWait-Sec`: seconds before the next call is allowed.
    pub to_wait_sec: Option<u64>,
    /// `X-Concurrency-Limit-Limit`: parallel calls allowed.
    pub concurrency_limit: Option<u64>,
    /// `X-Concurrency-Limit-Running`: calls running now.
    pub concurrency_running: Option<u64>,
}

impl RateHeaders {
    /// Reads the headers (names are case-insensitive; unreadable values are ignored).
    pub fn from_headers(headers: &HeaderMap) -> RateHeaders {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        RateHeaders {
            limit: number("x-ratelimit-limit"),
            window_sec: number("x-ratelimit-window-sec"),
            remaining: number("x-ratelimit-remaining"),
            to_wait_sec: number("x-ratelimit-towait-sec"),
            concurrency_limit: number("x-concurrency-limit-limit"),
            concurrency_running: number("x-concurrency-limit-running"),
        }
    }
}

/// Qualys endpoints that share one rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointFamily {
    /// `/csapi/v1.3/containers/list` (120 calls / 60 s).
    ContainerList,
    /// Every other `/csapi/v1.3/containers/**` call (5000 / 60 s).
    Containers,
    /// `/csapi/v1.3/images/**` (5000 / 60 s).
    Images,
    /// `/api/2.0/fo/knowledge_base/vuln/` (per subscription, typically 300 / 3600 s).
    KnowledgeBase,
}

impl EndpointFamily {
    fn index(self) -> usize {
        match self {
            EndpointFamily::ContainerList => 0,
            EndpointFamily::Containers => 1,
            EndpointFamily::Images => 2,
            EndpointFamily::KnowledgeBase => 3,
        }
    }
}

/// The limiters of one client: per family "not before" times and the KB semaphore.
#[derive(Debug)]
pub(crate) struct Limiters {
    not_before: [Mutex<Option<Instant>>; 4],
    kb_permits: Semaphore,
    kb_limit: Mutex<usize>,
}

impl Limiters {
    /// Limiters with `kb_concurrency` KnowledgeBase calls allowed at once (at least 1).
    pub(crate) fn new(kb_concurrency: usize) -> Limiters {
        let kb_concurrency = kb_concurrency.max(1);
        Limiters {
            not_before: Default::default(),
            kb_permits: Semaphore::new(kb_concurrency),
            kb_limit: Mutex::new(kb_concurrency),
        }
    }

    fn slot(&self, family: EndpointFamily) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.not_before[family.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `family` back until `until` (never shortens an existing hold).
    pub(crate) fn hold(&self, family: EndpointFamily, until: Instant) {
        let mut slot = self.slot(family);
        if slot.is_none_or(|t| t < until) {
            *slot = Some(until);
        }
    }

    /// Waits until `family` may send, or gives up with `RateLimited` when that is past
    /// `deadline`.
    pub(crate) async fn ready(
        &self,
        family: EndpointFamily,
        deadline: Instant,
    ) -> Result<(), QualysError> {
        let until = *self.slot(family);
        let Some(until) = until else { return Ok(()) };
        let now = Instant::now();
        if until <= now {
            return Ok(());
        }
        if until > deadline {
            return Err(QualysError::RateLimited {
                retry_after: until - now,
            });
        }
        tracing::info!(
            ?family,
            wait_ms = (until - now).as_millis() as u64,
            "waiting for the rate window"
        );
        sleep(until - now).await;
        Ok(())
    }

    /// Takes in the headers of an answer: no calls left → hold the family until Qualys
    /// allows more; a lower concurrency limit → fewer KB permits.
    pub(crate) fn observe(
        &self,
        family: EndpointFamily,
        headers: &RateHeaders,
        policy: &RetryPolicy,
    ) {
        if headers.remaining == Some(0) {
            let seconds = headers
                .to_wait_sec
                .filter(|s| *s > 0)
                .or(headers.window_sec)
                .unwrap_or(0);
            if seconds > 0 {
                tracing::info!(
                    ?family,
                    seconds,
                    "Qualys says no calls remain in this window"
                );
                self.hold(family, Instant::now() + policy.advertised(seconds));
            }
        }
        if family == EndpointFamily::KnowledgeBase
            && let Some(limit) = headers.concurrency_limit.filter(|l| *l > 0)
        {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let mut current = self.kb_limit.lock().unwrap_or_else(|e| e.into_inner());
            if limit < *current {
                let forgotten = self.kb_permits.forget_permits(*current - limit);
                *current -= forgotten;
                tracing::debug!(limit, now = *current, "KnowledgeBase concurrency lowered");
            }
        }
    }

    /// One KnowledgeBase concurrency slot, waited for until `deadline`.
    pub(crate) async fn kb_permit(
        &self,
        deadline: Instant,
        policy: &RetryPolicy,
    ) -> Result<SemaphorePermit<'_>, QualysError> {
        match timeout_at(deadline, self.kb_permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(QualysError::RateLimited {
                retry_after: policy.concurrency_wait,
            }),
        }
    }

    /// KnowledgeBase calls currently allowed at once.
    #[cfg(test)]
    fn kb_limit(&self) -> usize {
        *self.kb_limit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why an attempt should be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Retry {
    /// 429 or 409/1965, with the wait Qualys advertised, in seconds.
    RateLimited {
        /// `SECONDS_TO_WAIT` or `X-RateLimit-ToWait-Sec`.
        advertised_sec: Option<u64>,
    },
    /// 409/1960: too many KB calls at once.
    Concurrency,
    /// 5xx, connection error, timeout or cut-off body.
    Transient(String),
}

/// Counts the retries of one call and performs its waits.
#[derive(Debug)]
pub(crate) struct Retrier<'a> {
    policy: &'a RetryPolicy,
    deadline: Instant,
    transient_failures: u32,
    rate_limit_waits: u32,
}

impl<'a> Retrier<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy, deadline: Instant) -> Retrier<'a> {
        Retrier {
            policy,
            deadline,
            transient_failures: 0,
            rate_limit_waits: 0,
        }
    }

    /// Waits before the next attempt, or returns the error the call ends with: the attempts
    /// are used up, or the wait would end past the deadline. While rate limited the whole
    /// family is held, so parallel calls pause too.
    pub(crate) async fn wait(
        &mut self,
        why: Retry,
        limiters: &Limiters,
        family: EndpointFamily,
    ) -> Result<(), QualysError> {
        let policy = self.policy;
        let wait = match &why {
            Retry::RateLimited { advertised_sec } => {
                self.rate_limit_waits += 1;
                let base = match advertised_sec {
                    Some(s) => policy.advertised(*s),
                    None => doubling(
                        policy.rate_limit_fallback_base,
                        self.rate_limit_waits,
                        policy.rate_limit_fallback_cap,
                    ),
                };
                base + policy.jitter()
            }
            Retry::Concurrency => {
                self.rate_limit_waits += 1;
                policy.concurrency_wait + policy.jitter()
            }
            Retry::Transient(_) => {
                self.transient_failures += 1;
                doubling(
                    policy.backoff_base,
                    self.transient_failures,
                    policy.backoff_cap,
                ) + policy.jitter()
            }
        };
        let now = Instant::now();
        match why {
            Retry::RateLimited { .. } | Retry::Concurrency => {
                limiters.hold(family, now + wait);
                if self.rate_limit_waits > policy.max_rate_limit_waits || now + wait > self.deadline
                {
                    return Err(QualysError::RateLimited { retry_after: wait });
                }
                tracing::info!(
                    ?family,
                    wait_ms = wait.as_millis() as u64,
                    ?why,
                    "rate limited; waiting"
                );
            }
            Retry::Transient(detail) => {
                if self.transient_failures >= policy.max_attempts {
                    return Err(QualysError::Transient {
                        detail: format!(
                            "{detail}; gave up after {} attempts",
                            self.transient_failures
                        ),
                    });
                }
                if now + wait > self.deadline {
                    return Err(QualysError::Transient {
                        detail: format!("{detail}; no time left before the deadline to retry"),
                    });
                }
                tracing::warn!(?family, wait_ms = wait.as_millis() as u64, %detail, "transient failure; backing off");
            }
        }
        sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            jitter: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(24 * 3600)
    }

    #[tokio::test(start_paused = true)]
    async fn waits_what_qualys_advertises() {
        let policy = quick();
        let limiters = Limiters::new(2);
        let mut retrier = Retrier::new(&policy, far());
        let start = Instant::now();
        retrier
            .wait(
                Retry::RateLimited {
                    advertised_sec: Some(23),
                },
                &limiters,
                EndpointFamily::ContainerList,
            )
            .await
            .expect("within the deadline");
        assert_eq!(start.elapsed(), Duration::from_secs(23));
    }

    #[tokio::test(start_paused = true)]
    async fn fallback_doubles_and_caps_at_a_minute() {
        let policy = RetryPolicy {
            max_rate_limit_waits: 20,
            ..quick()
        };
        let limiters = Limiters::new(2);
        let mut retrier = Retrier::new(&policy, far());
        let mut waits = Vec::new();
        for _ in 0..7 {
            let start = Instant::now();
            retrier
                .wait(
                    Retry::RateLimited {
                        advertised_sec: None,
                    },
                    &limiters,
                    EndpointFamily::Images,
                )
                .await
                .expect("within the deadline");
            waits.push(start.elapsed().as_secs());
        }
        assert_eq!(waits, vec![2, 4, 8, 16, 32, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_returns_at_once() {
        let policy = quick();
        let limiters = Limiters::new(2);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut retrier = Retrier::new(&policy, deadline);
        let start = Instant::now();
        let err = retrier
            .wait(
                Retry::RateLimited {
                    advertised_sec: Some(1242),
                },
                &limiters,
                EndpointFamily::KnowledgeBase,
            )
            .await
            .expect_err("past the deadline");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(
            matches!(err, QualysError::RateLimited { retry_after } if retry_after == Duration::from_secs(1242))
        );
        // The family stays held, so the next call does not hammer Qualys either.
        let err = limiters
            .ready(EndpointFamily::KnowledgeBase, deadline)
            .await
            .expect_err("still held");
        assert!(matches!(err, QualysError::RateLimited { .. }));
        limiters
            .ready(EndpointFamily::Containers, deadline)
            .await
            .expect("other families are not held");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_then_give_up() {
        let policy = quick();
        let limiters = Limiters::new(2);
        let mut retrier = Retrier::new(&policy, far());
        let start = Instant::now();
        for _ in 0..4 {
            retrier
                .wait(
                    Retry::Transient("HTTP 503".into()),
                    &limiters,
                    EndpointFamily::Containers,
                )
                .await
                .expect("retries left");
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2 + 4 + 8));
        let err = retrier
            .wait(
                Retry::Transient("HTTP 503".into()),
                &limiters,
                EndpointFamily::Containers,
            )
            .await
            .expect_err("fifth failure ends the call");
        assert!(
            matches!(&err, QualysError::Transient { detail } if detail.contains("after 5 attempts")),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_backoff_respects_the_deadline() {
        let policy = quick();
        let limiters = Limiters::new(2);
        let mut retrier = Retrier::new(&policy, Instant::now() + Duration::from_millis(500));
        let err = retrier
            .wait(
                Retry::Transient("HTTP 502".into()),
                &limiters,
                EndpointFamily::Containers,
            )
            .await
            .expect_err("1 s backoff does not fit");
        assert!(matches!(err, QualysError::Transient { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn no_remaining_calls_hold_the_family_until_the_window_allows() {
        let policy = quick();
        let limiters = Limiters::new(2);
        let headers = RateHeaders {
            remaining: Some(0),
            window_sec: Some(60),
            ..RateHeaders::default()
        };
        limiters.observe(EndpointFamily::ContainerList, &headers, &policy);
        let start = Instant::now();
        limiters
            .ready(EndpointFamily::ContainerList, far())
            .await
            .expect("waits");
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        let headers = RateHeaders {
            remaining: Some(0),
            to_wait_sec: Some(5),
            window_sec: Some(60),
            ..RateHeaders::default()
        };
        limiters.observe(EndpointFamily::ContainerList, &headers, &policy);
        let start = Instant::now();
        limiters
            .ready(EndpointFamily::ContainerList, far())
            .await
            .expect("waits");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn headers_are_read_case_insensitively() {
        let mut map = HeaderMap::new();
        for (k, v) in [
            ("X-RateLimit-Limit", "300"),
            ("x-ratelimit-window-sec", "3600"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-ToWait-Sec", "1242"),
            ("x-concurrency-limit-limit", "1"),
            ("X-Concurrency-Limit-Running", "junk"),
        ] {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let h = RateHeaders::from_headers(&map);
        assert_eq!(
            h,
            RateHeaders {
                limit: Some(300),
                window_sec: Some(3600),
                remaining: Some(0),
                to_wait_sec: Some(1242),
                concurrency_limit: Some(1),
                concurrency_running: None,
            }
        );
    }

    #[tokio::test]
    async fn kb_concurrency_is_lowered_by_the_header() {
        let policy = quick();
        let limiters = Limiters::new(2);
        let headers = RateHeaders {
            concurrency_limit: Some(1),
            ..RateHeaders::default()
        };
        limiters.observe(EndpointFamily::Containers, &headers, &policy);
        assert_eq!(limiters.kb_limit(), 2, "only KB answers count");
        limiters.observe(EndpointFamily::KnowledgeBase, &headers, &policy);
        assert_eq!(limiters.kb_limit(), 1);
        let held = limiters.kb_permit(far(), &policy).await.expect("one slot");
        let err = limiters
            .kb_permit(Instant::now() + Duration::from_millis(20), &policy)
            .await
            .expect_err("no second slot");
        assert!(matches!(err, QualysError::RateLimited { .. }));
        drop(held);
    }
}
