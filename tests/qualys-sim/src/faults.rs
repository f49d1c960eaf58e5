//! Fault rules: what can go wrong on purpose, on which endpoints, and how often.
//!
//! A rule counts the requests it applies to and fires on request `after + 1`, then on every
//! `every`-th one after that, at most `times` times (`null` = without end). This module only
//! decides which faults fire; the server carries them out.

use serde::{Deserialize, Serialize};

/// The endpoints the simulator serves, as seen by rules, limits and statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /auth`.
    Auth,
    /// `GET /csapi/v1.3/containers` (paged list).
    Containers,
    /// `GET /csapi/v1.3/containers/list` (bulk cursor list).
    ContainersList,
    /// `GET /csapi/v1.3/containers/{sha}`.
    Container,
    /// `GET /csapi/v1.3/containers/{sha}/vuln`.
    ContainerVuln,
    /// `GET /csapi/v1.3/images/{sha}`.
    Image,
    /// `GET|POST /api/2.0/fo/knowledge_base/vuln/`.
    Kb,
}

impl Endpoint {
    /// Every endpoint, in a stable order.
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Auth,
        Endpoint::Containers,
        Endpoint::ContainersList,
        Endpoint::Container,
        Endpoint::ContainerVuln,
        Endpoint::Image,
        Endpoint::Kb,
    ];

    /// The snake_case name used in `/sim/stats` and in rule scopes.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Auth => "auth",
            Endpoint::Containers => "containers",
            Endpoint::ContainersList => "containers_list",
            Endpoint::Container => "container",
            Endpoint::ContainerVuln => "container_vuln",
            Endpoint::Image => "image",
            Endpoint::Kb => "kb",
        }
    }

    /// True for the JWT-protected Container Security endpoints.
    pub fn is_gateway_api(self) -> bool {
        !matches!(self, Endpoint::Auth | Endpoint::Kb)
    }
}

/// Which requests a rule looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every endpoint the fault can act on.
    #[default]
    All,
    /// All Container Security endpoints (not `/auth`, not the KnowledgeBase).
    Gateway,
    /// Both container list endpoints.
    Lists,
    /// One endpoint.
    #[serde(untagged)]
    Only(Endpoint),
}

impl Scope {
    fn covers(self, endpoint: Endpoint) -> bool {
        match self {
            Scope::All => true,
            Scope::Gateway => endpoint.is_gateway_api(),
            Scope::Lists => matches!(endpoint, Endpoint::Containers | Endpoint::ContainersList),
            Scope::Only(only) => only == endpoint,
        }
    }
}

/// One kind of misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Revoke every token issued so far; the request that fires it already gets 401.
    ExpireTokens,
    /// KnowledgeBase 409 `SIMPLE_RETURN` 1960 (concurrency limit).
    KbConcurrency,
    /// KnowledgeBase 409 `SIMPLE_RETURN` 1965 with `SECONDS_TO_WAIT` = `wait_secs`.
    KbRateLimit {
        /// Seconds to wait, sent in the body and in `X-RateLimit-ToWait-Sec`.
        wait_secs: u64,
    },
    /// Container Security 429 with `X-RateLimit-ToWait-Sec` = `wait_secs`.
    CsRateLimit {
        /// Seconds to wait.
        wait_secs: u64,
    },
    /// Answer with this 5xx status (500, 502, 503, 504).
    ServerError {
        /// The HTTP status.
        status: u16,
    },
    /// Wait `delay_ms` before answering.
    Slow {
        /// Delay in milliseconds.
        delay_ms: u64,
    },
    /// Send only the first half of the body, with the real status.
    Truncate,
    /// Close the connection without any answer (TCP reset).
    Reset,
    /// After a list page is served, bump `updated` of `ahead` containers not yet returned
    /// and `behind` containers already returned to now.
    ChangeBetweenPages {
        /// Containers after the page that change.
        #[serde(default = "one")]
        ahead: usize,
        /// Containers on or before the page that change.
        #[serde(default = "one")]
        behind: usize,
    },
}

impl Fault {
    /// Endpoints this fault can act on at all.
    fn acts_on(&self, endpoint: Endpoint) -> bool {
        match self {
            Fault::ExpireTokens | Fault::CsRateLimit { .. } => endpoint.is_gateway_api(),
            Fault::KbConcurrency | Fault::KbRateLimit { .. } => endpoint == Endpoint::Kb,
            Fault::ChangeBetweenPages { .. } => {
                matches!(endpoint, Endpoint::Containers | Endpoint::ContainersList)
            }
            Fault::ServerError { .. } | Fault::Slow { .. } | Fault::Truncate | Fault::Reset => true,
        }
    }
}

fn one() -> usize {
    1
}

fn one_u64() -> u64 {
    1
}

fn once() -> Option<u64> {
    Some(1)
}

/// A fault plus when it fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
    /// Which requests are counted.
    #[serde(default)]
    pub scope: Scope,
    /// Requests in scope to let through before the first firing.
    #[serde(default)]
    pub after: u64,
    /// Fire on every `every`-th request in scope (1 = each one).
    #[serde(default = "one_u64")]
    pub every: u64,
    /// How many times to fire; `None` (JSON `null`) fires without end.
    #[serde(default = "once")]
    pub times: Option<u64>,
}

impl FaultRule {
    /// A rule that fires once, on the next request it applies to.
    pub fn once(fault: Fault) -> Self {
        Self {
            fault,
            scope: Scope::All,
            after: 0,
            every: 1,
            times: Some(1),
        }
    }

    /// The same rule limited to `scope`.
    pub fn scoped(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The same rule, skipping the first `after` requests.
    pub fn after(mut self, after: u64) -> Self {
        self.after = after;
        self
    }

    /// The same rule, firing `times` times (`None` = without end).
    pub fn times(mut self, times: Option<u64>) -> Self {
        self.times = times;
        self
    }

    /// The same rule, firing on every `every`-th request only.
    pub fn every(mut self, every: u64) -> Self {
        self.every = every.max(1);
        self
    }
}

/// The armed rules and their counters.
#[derive(Debug, Default)]
pub(crate) struct FaultBook {
    rules: Vec<Armed>,
}

#[derive(Debug)]
struct Armed {
    rule: FaultRule,
    seen: u64,
    fired: u64,
}

impl FaultBook {
    /// Arms a rule.
    pub(crate) fn add(&mut self, rule: FaultRule) {
        self.rules.push(Armed {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    /// Disarms every rule.
    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules with their counters, for `/sim/faults`.
    pub(crate) fn describe(&self) -> Vec<serde_json::Value> {
        self.rules
            .iter()
            .map(|armed| {
                serde_json::json!({
                    "rule": armed.rule,
                    "seen": armed.seen,
                    "fired": armed.fired,
                })
            })
            .collect()
    }

    /// Counts a request to `endpoint` and returns the faults that fire on it.
    pub(crate) fn on_request(&mut self, endpoint: Endpoint) -> Vec<Fault> {
        let mut fired = Vec::new();
        for armed in &mut self.rules {
            let rule = &armed.rule;
            if !rule.scope.covers(endpoint) || !rule.fault.acts_on(endpoint) {
                continue;
            }
            armed.seen += 1;
            let exhausted = rule.times.is_some_and(|times| armed.fired >= times);
            let due = armed.seen > rule.after && (armed.seen - rule.after - 1) % rule.every == 0;
            if due && !exhausted {
                armed.fired += 1;
                fired.push(rule.fault.clone());
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_json_has_defaults_and_flattened_fault() {
        let rule: FaultRule =
            serde_json::from_str(r#"{"fault":"server_error","status":503,"times":3}"#)
                .expect("rule parses");
        assert_eq!(rule.fault, Fault::ServerError { status: 503 });
        assert_eq!((rule.after, rule.every, rule.times), (0, 1, Some(3)));
        assert_eq!(rule.scope, Scope::All);

        let scoped: FaultRule =
            serde_json::from_str(r#"{"fault":"reset","scope":"container_vuln","times":null}"#)
                .expect("rule parses");
        assert_eq!(scoped.scope, Scope::Only(Endpoint::ContainerVuln));
        assert_eq!(scoped.times, None);
    }

    #[test]
    fn every_nth_after_k_fires_on_the_right_requests() {
        let mut book = FaultBook::default();
        book.add(
            FaultRule::once(Fault::Truncate)
                .after(2)
                .every(3)
                .times(Some(2)),
        );
        let fired: Vec<bool> = (0..12)
            .map(|_| !book.on_request(Endpoint::Image).is_empty())
            .collect();
        let expected = [
            false, false, true, false, false, true, false, false, false, false, false, false,
        ];
        assert_eq!(fired, expected);
    }

    #[test]
    fn faults_only_count_endpoints_they_can_act_on() {
        let mut book = FaultBook::default();
        book.add(FaultRule::once(Fault::KbConcurrency));
        assert!(book.on_request(Endpoint::Containers).is_empty());
        assert_eq!(book.on_request(Endpoint::Kb), vec![Fault::KbConcurrency]);
        assert!(book.on_request(Endpoint::Kb).is_empty());
    }
}
