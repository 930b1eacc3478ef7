//! distlock's benchmark suite: measures each backend's floor, distlock and peers in one run and
//! reports ratios to the floor, as Markdown and JSON.
//!
//! Usually run through `scripts/bench`, which builds the release binaries and installs the
//! Python peers first. See `distlock-bench --help`.

mod contention;
mod floors;
mod measure;
mod peers;
mod placement;
mod report;
mod rust_peers;
mod scenarios;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};

use contention::ContentionPlan;
use measure::Plan;
use report::Report;
use scenarios::Context;

/// The error type of the bench: any error, with a message good enough to print.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Benchmarks distlock against floors and peers; every figure comes from this run.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// How long to measure: `quick` (under a minute) checks a change; `full` is the report.
    #[arg(long, value_enum, default_value_t = ProfileName::Full)]
    profile: ProfileName,
    /// Timed lock cycles per subject (overrides the profile).
    #[arg(long)]
    cycles: Option<usize>,
    /// Timed spawns per command (overrides the profile).
    #[arg(long)]
    spawns: Option<usize>,
    /// Scenarios to run, comma-separated (see the report's section ids).
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Backends for the scenarios that cover several (many_keys, takeover), comma-separated
    /// [default: all].
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<String>>,
    /// The `distlock` binary to measure [default: `distlock` beside this binary].
    #[arg(long)]
    distlock_bin: Option<PathBuf>,
    /// util-linux `flock(1)` [default: `flock` on PATH].
    #[arg(long)]
    flock_bin: Option<PathBuf>,
    /// A Python with the peers of python/requirements*.txt; without it the Python peers are
    /// skipped.
    #[arg(long)]
    python: Option<PathBuf>,
    /// N for the contention runs, comma-separated (overrides the profile).
    #[arg(long, value_delimiter = ',')]
    contention_workers: Option<Vec<usize>>,
    /// Hold times in µs for the contention runs, comma-separated (overrides the profile).
    #[arg(long, value_delimiter = ',')]
    contention_holds_us: Option<Vec<u64>>,
    /// Seconds per contention run (overrides the profile).
    #[arg(long)]
    contention_seconds: Option<f64>,
    /// Waiting tasks in the waiters scenario (overrides the profile).
    #[arg(long)]
    waiters: Option<usize>,
    /// Where to create lock directories [default: the system's temporary directory].
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Write the Markdown report here (else to standard output).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the JSON results here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The command the user ran, recorded in the report (scripts/bench passes its own).
    #[arg(long)]
    invocation: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum ProfileName {
    Quick,
    Full,
}

impl ProfileName {
    fn plans(self) -> (Plan, Plan) {
        match self {
            ProfileName::Quick => (
                Plan {
                    warmup: 1_000,
                    iterations: 10_000,
                    batch: 500,
                },
                Plan {
                    warmup: 5,
                    iterations: 100,
                    batch: 1,
                },
            ),
            ProfileName::Full => (
                Plan {
                    warmup: 5_000,
                    iterations: 100_000,
                    batch: 1_000,
                },
                Plan {
                    warmup: 20,
                    iterations: 2_000,
                    batch: 1,
                },
            ),
        }
    }
}

fn main() {
    // `distlock-bench peer …`: one worker of the peer protocol (see peers.rs), run by the
    // bench itself.
    if std::env::args().nth(1).as_deref() == Some("peer") {
        if let Err(error) =
            rust_peers::run(rust_peers::PeerArgs::parse_from(std::env::args().skip(1)))
        {
            eprintln!("distlock-bench peer: error: {error}");
            std::process::exit(1);
        }
        return;
    }
    // `distlock-bench serve BACKEND`: a test server for `scripts/profile`.
    if std::env::args().nth(1).as_deref() == Some("serve") {
        if let Err(error) = serve(std::env::args().nth(2).unwrap_or_default()) {
            eprintln!("distlock-bench serve: error: {error}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(error) = run(Args::parse()) {
        eprintln!("distlock-bench: error: {error}");
        std::process::exit(1);
    }
}

/// Starts `backend`'s bench server (as the scenarios do), prints `url <distlock URL>`, and
/// stops it when standard input closes.
fn serve(backend: String) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("distlock-bench-serve-")
        .tempdir()?;
    let server = scenarios::start_server(&backend, dir.path())?;
    println!("url {}", server.url);
    std::io::Write::flush(&mut std::io::stdout())?;
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    drop(server);
    Ok(())
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    // Before any scenario writes its charts into the tree, which would read as "-dirty".
    let revision = revision();
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    if cfg!(debug_assertions) {
        eprintln!("distlock-bench: warning: a debug build; run with --release for real figures");
    }
    let (mut cycles, mut spawns) = args.profile.plans();
    let (network_cycles, mut contention) = args.profile.network_plans();
    if let Some(n) = args.cycles {
        cycles.iterations = n;
    }
    if let Some(workers) = &args.contention_workers {
        contention.workers = workers.clone();
    }
    if let Some(holds) = &args.contention_holds_us {
        contention.holds_us = holds.clone();
    }
    if let Some(seconds) = args.contention_seconds {
        contention.duration = Duration::from_secs_f64(seconds);
    }
    if let Some(n) = args.spawns {
        spawns.iterations = n;
    }
    let ctx = Context {
        cycles,
        spawns,
        tmp: args.tmp.clone().unwrap_or_else(std::env::temp_dir),
        distlock_bin: match &args.distlock_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("distlock"),
        },
        flock_bin: match &args.flock_bin {
            Some(path) => path.clone(),
            None => scenarios::which("flock").ok_or("flock(1) is not on PATH (util-linux)")?,
        },
        python: args.python.clone(),
        backends: args.backends.clone(),
        network_cycles,
        contention,
        waiters: args.waiters.unwrap_or(match args.profile {
            ProfileName::Quick => 1_000,
            ProfileName::Full => 10_000,
        }),
    };

    if let Some(list) = &args.scenarios {
        let known: Vec<_> = scenarios::all().iter().map(|s| s.id()).collect();
        if let Some(unknown) = list.iter().find(|s| !known.contains(&s.as_str())) {
            return Err(
                format!("unknown scenario {unknown:?}; known: {}", known.join(", ")).into(),
            );
        }
    }
    // Before the run, so that the load average shows other work, not ours.
    let machine = report::Machine::detect(&ctx.tmp);
    let cpu_before = report::machine::CpuClock::now();
    let mut sections = Vec::new();
    for scenario in scenarios::all() {
        let id = scenario.id();
        let wanted = match &args.scenarios {
            Some(list) => list.iter().any(|s| s == id),
            None => id != "python_peers" || ctx.python.is_some(),
        };
        if !wanted {
            eprintln!("distlock-bench: {id}: skipped");
            continue;
        }
        eprintln!("distlock-bench: {id}: running");
        let mut section = scenario
            .run(&ctx, &sections)
            .map_err(|e| format!("{id}: {e}"))?;
        if let Some(markdown) = &args.markdown {
            // Charts beside the page: docs/benchmarks.md → docs/benchmarks/*.svg.
            let stem = markdown
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("benchmarks");
            let dir = markdown.with_file_name(stem);
            report::charts::draw(&mut section, &dir, &format!("{stem}/"))
                .map_err(|e| format!("{id}: {e}"))?;
        }
        sections.push(section);
    }
    let others_cpu_share = cpu_before
        .zip(report::machine::CpuClock::now())
        .and_then(|(before, after)| before.others_share_since(&after));
    let report = Report {
        date,
        machine,
        invocation: args.invocation.clone(),
        command_line: command_line(),
        profile: serde_json::json!({
            "name": args.profile,
            "cycles": ctx.cycles,
            "spawns": ctx.spawns,
            "network_cycles": ctx.network_cycles,
            "contention": ctx.contention,
            "waiters": ctx.waiters,
        }),
        profile_summary: profile_summary(args.profile, &ctx),
        revision,
        sections,
        duration_s: started.elapsed().as_secs_f64(),
        others_cpu_share,
    };
    let markdown = report::markdown::render(&report);
    match &args.markdown {
        Some(path) => write(path, &markdown)?,
        None => print!("{markdown}"),
    }
    if let Some(path) = &args.json {
        write(path, &(serde_json::to_string_pretty(&report)? + "\n"))?;
    }
    Ok(())
}

impl ProfileName {
    /// Lock cycles against a server, and the contention runs.
    fn network_plans(self) -> (Plan, ContentionPlan) {
        match self {
            ProfileName::Quick => (
                Plan {
                    warmup: 200,
                    iterations: 2_000,
                    batch: 100,
                },
                ContentionPlan {
                    workers: vec![2, 8],
                    holds_us: vec![0],
                    duration: Duration::from_secs(1),
                },
            ),
            ProfileName::Full => (
                Plan {
                    warmup: 1_000,
                    iterations: 20_000,
                    batch: 500,
                },
                ContentionPlan {
                    workers: vec![2, 4, 8, 16],
                    holds_us: vec![0, 1_000],
                    duration: Duration::from_secs(2),
                },
            ),
        }
    }
}

fn profile_summary(name: ProfileName, ctx: &Context) -> String {
    let name = match name {
        ProfileName::Quick => "quick",
        ProfileName::Full => "full",
    };
    format!(
        "{name}: lock cycles {} timed (+{} warm-up) per subject in batches of {}; \
         CLI {} timed runs (+{} warm-up) per command; lock cycles against a server {} timed \
         (+{} warm-up) in batches of {}; contention N = {:?}, hold {:?} µs, {:.1} s per run",
        ctx.cycles.iterations,
        ctx.cycles.warmup,
        ctx.cycles.batch,
        ctx.spawns.iterations,
        ctx.spawns.warmup,
        ctx.network_cycles.iterations,
        ctx.network_cycles.warmup,
        ctx.network_cycles.batch,
        ctx.contention.workers,
        ctx.contention.holds_us,
        ctx.contention.duration.as_secs_f64(),
    )
}

/// This process's command line, shell-quoted where needed.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.,=:+@%".contains(&b))
            {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `git describe --always --dirty` of the workspace this binary was built from.
fn revision() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    report::machine::run(
        "git",
        &["-C", root.to_str()?, "describe", "--always", "--dirty"],
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}
