//! `distlock-torture`: distlock's fault-injection harness (DESIGN.md §8).
//!
//! One binary, several roles, each run as its own OS process:
//!
//! - `suite` / `scenario`: the **controller** — starts servers through the testkit, the oracle,
//!   the observer and N clients, applies seeded faults, runs the checkers, reports and gates;
//! - `client`: acquire → read the oracle → work → write with the token → release, logged;
//! - `oracle`: the protected resource (unfenced counter, fenced register, CAS register);
//! - `observe`: polls `inspect()` for server-side double grants and releases.

mod backends;
mod checkers;
mod client;
mod clock;
mod controller;
mod events;
mod faults;
mod observer;
mod oracle;
mod proxy;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::controller::{Scenario, ScenarioResult};
use crate::faults::Fault;

#[derive(Parser)]
#[command(
    name = "distlock-torture",
    about = "distlock's fault-injection harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    /// Short runs of every backend × fault (under 10 minutes in all: CI's gate).
    Smoke,
    /// The same matrix, sharing `--duration` between the runs.
    Soak,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every backend × fault of a profile, gates, and regenerates the docs section.
    Suite {
        /// smoke or soak.
        #[arg(long, value_enum, default_value = "smoke")]
        profile: Profile,
        /// Soak: total time shared by the runs (e.g. 30m). Smoke: time per run (default 6s
        /// without faults, 15s for the Redlock clock jump, 9s for the others).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Seed of the first run; each run adds its index.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Logs and results.
        #[arg(long, default_value = "target/torture")]
        out: PathBuf,
        /// The Markdown file whose generated section is rewritten (skipped when absent).
        #[arg(long)]
        docs: Option<PathBuf>,
        /// Only these backends (comma-separated labels).
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
    },
    /// Runs one backend × fault and prints its result as JSON; exits 1 when a gate fails.
    Scenario {
        /// Backend label: file, redis, redis-aof, redlock, postgres, mysql, zookeeper, etcd.
        #[arg(long)]
        backend: String,
        /// The fault.
        #[arg(long, value_enum)]
        fault: Fault,
        /// Client duration.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
        duration: Duration,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 3)]
        clients: usize,
        /// Logs and results.
        #[arg(long, default_value = "target/torture")]
        out: PathBuf,
    },
    /// A client process (spawned by the controller).
    Client(client::ClientArgs),
    /// The oracle process (spawned by the controller).
    Oracle {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Exit after this long, ms.
        #[arg(long, default_value_t = 600_000)]
        lifetime_ms: u64,
    },
    /// The observer process (spawned by the controller).
    Observe(observer::ObserveArgs),
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Client(args) => exit(runtime(1).block_on(client::run(args))),
        Cmd::Observe(args) => exit(runtime(1).block_on(observer::run(args))),
        Cmd::Oracle {
            listen,
            lifetime_ms,
        } => exit(
            runtime(1)
                .block_on(oracle::run(&listen, Duration::from_millis(lifetime_ms)))
                .map_err(|e| e.to_string()),
        ),
        Cmd::Scenario {
            backend,
            fault,
            duration,
            seed,
            clients,
            out,
        } => {
            let Some(spec) = backends::spec(&backend) else {
                eprintln!("unknown backend {backend:?}");
                return ExitCode::from(64);
            };
            let mut scenario = Scenario::new(spec, fault, duration, seed);
            scenario.clients = clients;
            let result = controller::run(scenario, &out);
            println!("{}", serde_json::to_string_pretty(&result).expect("json"));
            gate_exit(&[result])
        }
        Cmd::Suite {
            profile,
            duration,
            seed,
            out,
            docs,
            backends: only,
        } => suite(profile, duration, seed, &out, docs, &only),
    }
}

fn exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distlock-torture: {e}");
            ExitCode::FAILURE
        }
    }
}

fn gate_exit(results: &[ScenarioResult]) -> ExitCode {
    let gates = report::gates(results);
    let mut ok = true;
    for g in &gates {
        if !g.passed {
            ok = false;
            eprintln!("GATE FAILED {}: {}", g.run, g.rule);
        }
    }
    eprintln!(
        "{} gates, {} failed",
        gates.len(),
        gates.iter().filter(|g| !g.passed).count()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn suite(
    profile: Profile,
    duration: Option<Duration>,
    seed: u64,
    out: &std::path::Path,
    docs: Option<PathBuf>,
    only: &[String],
) -> ExitCode {
    let matrix: Vec<(&'static backends::BackendSpec, Fault)> = backends::ALL
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.label))
        .flat_map(|s| s.faults.iter().map(move |f| (s, *f)))
        .collect();
    let per_run = |spec: &backends::BackendSpec, fault: Fault| match profile {
        Profile::Smoke => duration.unwrap_or_else(|| backends::smoke_duration(spec, fault)),
        Profile::Soak => {
            let total = duration.unwrap_or(Duration::from_secs(30 * 60));
            (total / matrix.len().max(1) as u32).max(Duration::from_secs(15))
        }
    };
    let _ = std::fs::create_dir_all(out);
    let suite_started = std::time::Instant::now();
    let mut results = Vec::new();
    for (i, (spec, fault)) in matrix.iter().enumerate() {
        let run_seed = seed + i as u64;
        let per_run = per_run(spec, *fault);
        eprintln!(
            "[{}/{}] {} × {} for {:?} (seed {run_seed})",
            i + 1,
            matrix.len(),
            spec.label,
            fault.label(),
            per_run
        );
        let run_started = std::time::Instant::now();
        let result = controller::run(Scenario::new(spec, *fault, per_run, run_seed), out);
        eprintln!(
            "    {:.1?} (suite {:.0?}): faults {} ops {} acq-err {} lost {} fenced-rej {} stale {} overlaps {} double {} unavail {:?} lost-latency {:?}{}",
            run_started.elapsed(),
            suite_started.elapsed(),
            result.faults_applied,
            result.checks.operations,
            result.checks.acquire_errors,
            result.oracle.lost_updates,
            result.oracle.fenced_writes_rejected,
            result.oracle.fenced_accepted_stale,
            result.checks.overlaps,
            result.checks.double_grants,
            result.checks.max_unavailability_ms,
            result.checks.max_lost_latency_ms,
            if result.harness_errors.is_empty() {
                String::new()
            } else {
                format!(" HARNESS ERRORS {:?}", result.harness_errors)
            },
        );
        results.push(result);
    }
    let _ = std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results).expect("json"),
    );
    let gates = report::gates(&results);
    if let Some(docs) = docs {
        let how = match profile {
            Profile::Smoke => "scripts/torture".to_owned(),
            Profile::Soak => format!(
                "scripts/torture soak {}",
                humantime::format_duration(duration.unwrap_or_default())
            ),
        };
        let section = report::markdown(&results, &gates, &how);
        if let Err(e) = report::update_docs(&docs, &section) {
            eprintln!("could not update {}: {e}", docs.display());
            return ExitCode::FAILURE;
        }
    }
    gate_exit(&results)
}
