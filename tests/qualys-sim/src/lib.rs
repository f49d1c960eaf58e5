//! A faithful local simulator of the Qualys Container Security and KnowledgeBase APIs.
//!
//! It serves a generated account (deterministic from a size and a seed) or the recorded
//! fixture account, with the real JSON/XML shapes, JWT and Basic auth, rate limits, and
//! switchable faults. Tests start it in-process with [`Simulator::start`]; the `qualys-sim`
//! binary serves it for the local demo and benchmarks. It never contacts anything external
//! and does not depend on `qcvr-shared`: it is an independent fake of Qualys.

#![recursion_limit = "256"]

mod account;
mod auth;
mod config;
mod faults;
mod fixtures;
mod generate;
mod kb;
mod limits;
mod qql;
mod rng;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use account::{
    Mutation, MutationError, Truth, TruthContainer, TruthFinding, TruthImage, TruthKb,
};
pub use config::{RateLimits, SimConfig, VulnEnvelope, Window};
pub use faults::{Endpoint, Fault, FaultRule, Scope};
pub use fixtures::FixtureError;
pub use server::Stats;

use server::{Shared, lock, now_ms, write};

/// Why the simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The fixture account could not be loaded.
    #[error(transparent)]
    Fixtures(#[from] FixtureError),
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}; pick another --port or use 0")]
    Bind {
        /// The requested port.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
}

/// Entry point of the simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Builds the account and starts serving on 127.0.0.1 in the current tokio runtime.
    pub async fn start(config: SimConfig) -> Result<SimHandle, StartError> {
        let account = match &config.fixtures {
            Some(dir) => fixtures::account(dir)?,
            None => {
                let start = config.start_ms.unwrap_or_else(now_ms);
                generate::account(config.containers, config.seed, start)
            }
        };
        let port = config.port;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| StartError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { port, source })?;
        let shared = Arc::new(Shared::new(config, account));
        let task = tokio::spawn(server::serve(listener, server::router(shared.clone())));
        tracing::info!(%addr, "qualys-sim listening");
        Ok(SimHandle {
            addr,
            shared,
            task: task.abort_handle(),
        })
    }
}

/// A running simulator; dropping it stops accepting connections.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, usable as both the gateway and the API server URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account as it is now (same as `GET /sim/truth`).
    pub fn truth(&self) -> Truth {
        lock_read_truth(&self.shared)
    }

    /// Applies a mutation (same as `POST /sim/mutate`); returns the new `updated` if any.
    pub fn mutate(&self, mutation: &Mutation) -> Result<Option<i64>, MutationError> {
        write(&self.shared.account).mutate(mutation, now_ms())
    }

    /// Arms a fault rule (same as `POST /sim/faults`).
    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.shared.faults).add(rule);
    }

    /// Disarms all fault rules (same as `POST /sim/faults/clear`).
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Revokes every token issued so far, right now.
    pub fn expire_tokens(&self) {
        lock(&self.shared.tokens).expire_all();
    }

    /// Switches the KnowledgeBase "account expired" answer (200 + `SIMPLE_RETURN` 2001).
    pub fn set_kb_account_expired(&self, expired: bool) {
        self.shared
            .kb_account_expired
            .store(expired, Ordering::SeqCst);
    }

    /// Request and status counters (same as `GET /sim/stats`).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

fn lock_read_truth(shared: &Shared) -> Truth {
    shared
        .account
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .truth()
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
