//! `client-bench`: listing throughput and peak memory of the Qualys client against the
//! in-process simulator (`make bench`).
//!
//! It generates an account of `--containers` containers (seed `--seed`), lists all of it
//! through the client in both listing modes (paged keyset walk with pages of 1000, bulk
//! cursor with pages of 250) and prints, per mode, the containers returned, the requests
//! sent, the seconds taken and the containers per second, plus the process's peak resident
//! memory (`VmHWM`) before and after listing. Pages are streamed: only a count and a set of
//! shas (to check that each container came exactly once) are kept. The simulator's rate
//! windows are lifted so the numbers measure the client and the simulator, not waiting.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use qcvr::config::ListingMode;
use qcvr::qualys::{
    ClientSettings, ContainerQuery, ListCursor, Qql, QualysApi, QualysClient, QualysHosts,
    StaticCredentials,
};
use qcvr::run::Window;
use qualys_sim::{Endpoint, RateLimits, SimConfig, SimHandle, Simulator};
use tokio::time::Instant;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "client-bench",
    about = "List a simulated Qualys account through the qcvr client in both modes and \
             report throughput and peak memory."
)]
struct Args {
    /// Containers in the generated account.
    #[arg(long, default_value_t = 50_000)]
    containers: usize,
    /// Seed of the generated account.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What one listing run measured.
struct Measured {
    containers: u64,
    distinct: usize,
    requests: u64,
    seconds: f64,
}

/// The process's peak resident set size in KiB (`VmHWM`), where Linux reports it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn show_rss(kib: Option<u64>) -> String {
    match kib {
        Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
        None => "n/a (no /proc/self/status)".to_owned(),
    }
}

/// Lists the whole account in `mode`, page by page.
async fn list_all(sim: &SimHandle, mode: ListingMode, page_size: u32) -> Result<Measured, String> {
    let url = sim.base_url();
    let hosts = QualysHosts::new(&url, Some(&url)).map_err(|e| e.to_string())?;
    let client = QualysClient::new(
        ClientSettings::default(),
        hosts,
        StaticCredentials::new("bench", "bench"),
    )
    .map_err(|e| e.to_string())?;
    let now = Utc::now();
    let query = ContainerQuery {
        filter: Qql::parse("").map_err(|e| e.to_string())?,
        // The generated account spans the six days before the simulator started.
        window: Window {
            since: now - chrono::Duration::days(30),
            until: now + chrono::Duration::days(1),
        },
        page_size,
        mode,
    };
    let endpoint = match mode {
        ListingMode::Paged => Endpoint::Containers,
        ListingMode::Bulk => Endpoint::ContainersList,
    };
    let requests_before = sim.stats();
    let started = Instant::now();
    let mut cursor = ListCursor::Start;
    let mut containers = 0u64;
    let mut shas: HashSet<String> = HashSet::new();
    loop {
        let page = client
            .list_containers(&query, &cursor, Instant::now() + Duration::from_secs(300))
            .await
            .map_err(|e| format!("{mode:?} listing failed after {containers} containers: {e}"))?;
        containers += page.containers.len() as u64;
        shas.extend(page.containers.into_iter().map(|c| c.sha));
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests_after = sim.stats();
    let requests = [endpoint, Endpoint::Auth]
        .iter()
        .map(|e| requests_after.requests_to(*e) - requests_before.requests_to(*e))
        .sum();
    Ok(Measured {
        containers,
        distinct: shas.len(),
        requests,
        seconds,
    })
}

async fn run(args: Args) -> Result<(), String> {
    let rss_start = peak_rss_kib();
    let wide = qualys_sim::Window {
        limit: u32::MAX,
        window_secs: 60,
    };
    let config = SimConfig {
        limits: RateLimits {
            containers_list: wide,
            containers: wide,
            ..RateLimits::default()
        },
        ..SimConfig::generated(args.containers, args.seed)
    };
    let sim = Simulator::start(config)
        .await
        .map_err(|e| format!("the simulator did not start: {e}"))?;
    let rss_before = peak_rss_kib();
    println!(
        "client-bench: {} containers, seed {}, simulator at {}",
        args.containers,
        args.seed,
        sim.base_url()
    );
    println!("peak RSS at start:                 {}", show_rss(rss_start));
    println!(
        "peak RSS before listing (with sim): {}",
        show_rss(rss_before)
    );
    println!(
        "{:<6} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "mode", "page size", "containers", "requests", "seconds", "containers/s"
    );
    let mut failures = Vec::new();
    for (mode, page_size) in [(ListingMode::Paged, 1000), (ListingMode::Bulk, 250)] {
        let m = list_all(&sim, mode, page_size).await?;
        println!(
            "{:<6} {:>10} {:>10} {:>9} {:>9.2} {:>12.0}",
            format!("{mode:?}").to_lowercase(),
            page_size,
            m.containers,
            m.requests,
            m.seconds,
            m.containers as f64 / m.seconds.max(f64::EPSILON)
        );
        println!(
            "       distinct shas in the check set: {}; peak RSS so far: {}",
            m.distinct,
            show_rss(peak_rss_kib())
        );
        if m.containers != args.containers as u64 || m.distinct != args.containers {
            failures.push(format!(
                "{mode:?}: {} containers returned, {} distinct, {} in the account",
                m.containers, m.distinct, args.containers
            ));
        }
    }
    let rss_after = peak_rss_kib();
    println!("peak RSS after listing:            {}", show_rss(rss_after));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "peak RSS growth while listing:     {:.1} MiB",
            after.saturating_sub(before) as f64 / 1024.0
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not every container was listed exactly once: {}",
            failures.join("; ")
        ))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("client-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
