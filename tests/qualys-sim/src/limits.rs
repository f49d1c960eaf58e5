//! Sliding-window rate limits per endpoint family, as Qualys enforces them.
//!
//! A window remembers when each accepted call happened; a call is refused when `limit` calls
//! fall inside the last `window_secs`. Refused calls are not remembered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{RateLimits, Window};
use crate::faults::Endpoint;

/// The outcome of asking a window for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Calls allowed per window.
    pub limit: u32,
    /// Window length.
    pub window_secs: u64,
    /// Calls left after this one.
    pub remaining: u32,
    /// `Some(seconds)` when the call is refused.
    pub to_wait_secs: Option<u64>,
}

#[derive(Debug)]
struct Sliding {
    window: Window,
    calls: VecDeque<Instant>,
}

impl Sliding {
    fn new(window: Window) -> Self {
        Self {
            window,
            calls: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        let length = Duration::from_secs(self.window.window_secs);
        while self
            .calls
            .front()
            .is_some_and(|at| now.duration_since(*at) >= length)
        {
            self.calls.pop_front();
        }
    }

    fn peek(&mut self, now: Instant) -> Verdict {
        self.expire(now);
        Verdict {
            limit: self.window.limit,
            window_secs: self.window.window_secs,
            remaining: self.window.limit.saturating_sub(self.calls.len() as u32),
            to_wait_secs: None,
        }
    }

    fn acquire(&mut self, now: Instant) -> Verdict {
        self.expire(now);
        let length = Duration::from_secs(self.window.window_secs);
        let used = self.calls.len() as u32;
        if used >= self.window.limit {
            let oldest = self.calls.front().copied().unwrap_or(now);
            let free_at = oldest + length;
            let wait = free_at.saturating_duration_since(now);
            return Verdict {
                limit: self.window.limit,
                window_secs: self.window.window_secs,
                remaining: 0,
                to_wait_secs: Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            };
        }
        self.calls.push_back(now);
        Verdict {
            limit: self.window.limit,
            window_secs: self.window.window_secs,
            remaining: self.window.limit - used - 1,
            to_wait_secs: None,
        }
    }
}

/// One window per endpoint family.
#[derive(Debug)]
pub(crate) struct Limiters {
    containers_list: Sliding,
    containers: Sliding,
    images: Sliding,
    kb: Sliding,
}

impl Limiters {
    /// Windows for the configured limits.
    pub(crate) fn new(limits: &RateLimits) -> Self {
        Self {
            containers_list: Sliding::new(limits.containers_list),
            containers: Sliding::new(limits.containers),
            images: Sliding::new(limits.images),
            kb: Sliding::new(limits.kb),
        }
    }

    fn window(&mut self, endpoint: Endpoint) -> Option<&mut Sliding> {
        match endpoint {
            Endpoint::Auth => None,
            Endpoint::ContainersList => Some(&mut self.containers_list),
            Endpoint::Containers | Endpoint::Container | Endpoint::ContainerVuln => {
                Some(&mut self.containers)
            }
            Endpoint::Image => Some(&mut self.images),
            Endpoint::Kb => Some(&mut self.kb),
        }
    }

    /// Asks the family of `endpoint` for one call; `/auth` is not limited.
    pub(crate) fn acquire(&mut self, endpoint: Endpoint, now: Instant) -> Option<Verdict> {
        self.window(endpoint).map(|window| window.acquire(now))
    }

    /// The state of the family of `endpoint` without using a call (all-zero for `/auth`).
    pub(crate) fn peek(&mut self, endpoint: Endpoint, now: Instant) -> Verdict {
        match self.window(endpoint) {
            Some(window) => window.peek(now),
            None => Verdict {
                limit: 0,
                window_secs: 0,
                remaining: 0,
                to_wait_secs: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_refuses_then_frees_up() {
        let mut window = Sliding::new(Window {
            limit: 2,
            window_secs: 60,
        });
        let t0 = Instant::now();
        assert_eq!(window.acquire(t0).remaining, 1);
        assert_eq!(window.acquire(t0 + Duration::from_secs(10)).remaining, 0);
        let refused = window.acquire(t0 + Duration::from_secs(20));
        assert_eq!(refused.to_wait_secs, Some(40));
        let later = window.acquire(t0 + Duration::from_secs(60));
        assert_eq!((later.remaining, later.to_wait_secs), (0, None));
    }
}
