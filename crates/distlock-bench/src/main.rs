//! distlock's benchmark suite: measures each backend's floor, distlock and peers in one run and
//! reports ratios to the floor, as Markdown and JSON.
//!
//! Usually run through `scripts/bench`, which builds the release binaries and installs the
//! Python peers first. See `distlock-bench --help`.

mod floors;
mod measure;
mod report;
mod scenarios;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use clap::{Parser, ValueEnum};

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
    /// Scenarios to run, comma-separated: file_cycle, python_peers, cli.
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// The `distlock` binary to measure [default: `distlock` beside this binary].
    #[arg(long)]
    distlock_bin: Option<PathBuf>,
    /// util-linux `flock(1)` [default: `flock` on PATH].
    #[arg(long)]
    flock_bin: Option<PathBuf>,
    /// A Python with `filelock` and `portalocker`; without it the Python peers are skipped.
    #[arg(long)]
    python: Option<PathBuf>,
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
    if let Err(error) = run(Args::parse()) {
        eprintln!("distlock-bench: error: {error}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    if cfg!(debug_assertions) {
        eprintln!("distlock-bench: warning: a debug build; run with --release for real figures");
    }
    let (mut cycles, mut spawns) = args.profile.plans();
    if let Some(n) = args.cycles {
        cycles.iterations = n;
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
        let section = scenario
            .run(&ctx, &sections)
            .map_err(|e| format!("{id}: {e}"))?;
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
        }),
        profile_summary: profile_summary(args.profile, &ctx),
        revision: revision(),
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

fn profile_summary(name: ProfileName, ctx: &Context) -> String {
    let name = match name {
        ProfileName::Quick => "quick",
        ProfileName::Full => "full",
    };
    format!(
        "{name}: lock cycles {} timed (+{} warm-up) per subject in batches of {}; \
         CLI {} timed runs (+{} warm-up) per command",
        ctx.cycles.iterations,
        ctx.cycles.warmup,
        ctx.cycles.batch,
        ctx.spawns.iterations,
        ctx.spawns.warmup
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
