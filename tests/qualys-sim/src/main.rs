//! `qualys-sim`: serves a simulated Qualys account on 127.0.0.1.
//!
//! Prints `qualys-sim listening on http://127.0.0.1:PORT` once ready; scripts wait for it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use qualys_sim::{Fault, FaultRule, RateLimits, Scope, SimConfig, Simulator, VulnEnvelope, Window};

/// Local simulator of the Qualys Container Security and KnowledgeBase APIs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Port on 127.0.0.1 (0 picks a free one; the chosen one is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Containers of the generated account.
    #[arg(long, default_value_t = 100)]
    containers: usize,
    /// Seed of the generated account.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve the account recorded in this fixture directory (shared/fixtures/qualys).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Require this username (default: accept any).
    #[arg(long)]
    username: Option<String>,
    /// Require this password (default: accept any).
    #[arg(long)]
    password: Option<String>,
    /// JWT lifetime in seconds (the `exp` claim).
    #[arg(long, default_value_t = 14_400)]
    token_lifetime_secs: u64,
    /// Anchor time of the generated account, epoch ms (default: now).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Limit of /csapi/v1.3/containers/list as CALLS/SECONDS.
    #[arg(long, default_value = "120/60")]
    rate_limit_containers_list: Window,
    /// Limit of the other /csapi/v1.3/containers/** calls.
    #[arg(long, default_value = "5000/60")]
    rate_limit_containers: Window,
    /// Limit of /csapi/v1.3/images/**.
    #[arg(long, default_value = "5000/60")]
    rate_limit_images: Window,
    /// Limit of the KnowledgeBase.
    #[arg(long, default_value = "300/3600")]
    rate_limit_kb: Window,
    /// KnowledgeBase calls allowed at the same time.
    #[arg(long, default_value_t = 2)]
    rate_limit_kb_concurrency: u32,
    /// Envelope of /containers/{sha}/vuln: vulns, array or mixed.
    #[arg(long, default_value = "mixed")]
    vuln_envelope: VulnEnvelope,
    /// Send `Link: null` on the last bulk page instead of no Link header.
    #[arg(long)]
    null_link: bool,
    /// Answer KnowledgeBase calls with 200 + SIMPLE_RETURN 2001 (account expired).
    #[arg(long)]
    kb_account_expired: bool,
    /// Revoke all tokens after this many Container Security requests (one 401 mid-run).
    #[arg(long, value_name = "K")]
    expire_tokens_after: Option<u64>,
    /// Answer the next N requests with 503.
    #[arg(long, value_name = "N")]
    server_errors: Option<u64>,
    /// Delay every answer by this many milliseconds.
    #[arg(long, value_name = "MS")]
    slow_ms: Option<u64>,
    /// Arm a fault rule given as JSON (repeatable), e.g.
    /// '{"fault":"kb_rate_limit","wait_secs":30,"after":2,"times":1}'.
    #[arg(long = "fault", value_name = "JSON", value_parser = parse_rule)]
    faults: Vec<FaultRule>,
}

fn parse_rule(text: &str) -> Result<FaultRule, String> {
    serde_json::from_str(text).map_err(|e| format!("bad fault rule {text}: {e}"))
}

impl Cli {
    fn into_config(self) -> SimConfig {
        let mut faults = self.faults;
        if let Some(after) = self.expire_tokens_after {
            faults.push(
                FaultRule::once(Fault::ExpireTokens)
                    .scoped(Scope::Gateway)
                    .after(after),
            );
        }
        if let Some(n) = self.server_errors {
            faults.push(FaultRule::once(Fault::ServerError { status: 503 }).times(Some(n)));
        }
        if let Some(delay_ms) = self.slow_ms {
            faults.push(FaultRule::once(Fault::Slow { delay_ms }).times(None));
        }
        SimConfig {
            port: self.port,
            containers: self.containers,
            seed: self.seed,
            fixtures: self.fixtures,
            username: self.username,
            password: self.password,
            token_lifetime_secs: self.token_lifetime_secs,
            limits: RateLimits {
                containers_list: self.rate_limit_containers_list,
                containers: self.rate_limit_containers,
                images: self.rate_limit_images,
                kb: self.rate_limit_kb,
                kb_concurrency: self.rate_limit_kb_concurrency,
            },
            vuln_envelope: self.vuln_envelope,
            null_link: self.null_link,
            kb_account_expired: self.kb_account_expired,
            start_ms: self.start_ms,
            faults,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Cli::parse().into_config();
    let handle = match Simulator::start(config).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "qualys-sim did not start");
            eprintln!("qualys-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("qualys-sim listening on {}", handle.base_url());
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    drop(handle);
    ExitCode::SUCCESS
}
