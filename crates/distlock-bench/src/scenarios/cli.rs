//! The cost of one `distlock run` invocation against util-linux `flock(1)` on files, and
//! against `etcdctl lock` on etcd.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::Result;
use crate::measure::{Subject, interleaved};
use crate::report::{Baseline, Kind, Row, Section, Unit, markdown::time};

use super::{Context, Scenario, file_url, temp_dir, which};

/// The largest acceptable ratio of `distlock run`'s median to `flock`'s.
pub const TARGET: f64 = 1.2;

const TRUE: &str = "`true` (process spawn only)";
const FLOCK: &str = "`flock DIR/flock.lock true`";
const DISTLOCK: &str = "`distlock --url file://DIR run bench -- true`";
const VERSION: &str = "`distlock --version` (start-up, no lock, no child)";

/// See the module docs.
#[derive(Debug)]
pub struct CliInvocation;

struct Invocation {
    label: &'static str,
    kind: Kind,
    argv: Vec<OsString>,
}

impl Scenario for CliInvocation {
    fn id(&self) -> &'static str {
        "cli"
    }

    fn run(&self, ctx: &Context, _earlier: &[Section]) -> Result<Section> {
        let dir = temp_dir(ctx, "distlock-bench-cli-")?;
        let url = file_url(dir.path())?;
        let true_bin = which("true").ok_or("`true` is not on PATH")?;
        let distlock = ctx.distlock_bin.as_os_str();
        let invocations = [
            Invocation {
                label: TRUE,
                kind: Kind::Reference,
                argv: vec![true_bin.into()],
            },
            Invocation {
                label: FLOCK,
                kind: Kind::Floor,
                argv: vec![
                    ctx.flock_bin.clone().into(),
                    dir.path().join("flock.lock").into(),
                    "true".into(),
                ],
            },
            Invocation {
                label: DISTLOCK,
                kind: Kind::Distlock,
                argv: vec![
                    distlock.into(),
                    "--url".into(),
                    url.into(),
                    "run".into(),
                    "bench".into(),
                    "--".into(),
                    "true".into(),
                ],
            },
            Invocation {
                label: VERSION,
                kind: Kind::Reference,
                argv: vec![distlock.into(), "--version".into()],
            },
        ];
        let rows = measure(ctx.spawns, &invocations)?;
        let floor = rows.iter().find(|r| r.kind == Kind::Floor).expect("listed");
        let baselines = vec![Baseline::of(floor, "flock")];
        let mut section = Section::new(self.id(), "CLI invocation", method(ctx), Unit::Millis);
        section.baselines = baselines;
        section.rows = rows;
        let mut section = section.finish();
        section.notes = notes(&section);
        Ok(section)
    }
}

/// Checks that each invocation succeeds once, then times them all interleaved; distlock's row
/// gets the [`TARGET`].
fn measure(plan: crate::measure::Plan, invocations: &[Invocation]) -> Result<Vec<Row>> {
    for invocation in invocations {
        check(&invocation.argv).map_err(|e| format!("{}: {e}", invocation.label))?;
    }
    let mut subjects: Vec<Subject<'_>> = invocations
        .iter()
        .map(|inv| Subject::per_call(inv.label, || spawn_and_wait(&inv.argv)))
        .collect();
    let samples = interleaved(plan, &mut subjects)?;
    drop(subjects);
    invocations
        .iter()
        .zip(&samples)
        .map(|(inv, samples)| {
            let row = Row::measured(inv.label, inv.kind, samples)?;
            Ok(if inv.kind == Kind::Distlock {
                row.with_target(TARGET)
            } else {
                row
            })
        })
        .collect()
}

/// `distlock run` against `etcdctl lock` (etcd's own CLI, the `concurrency` recipe distlock's
/// etcd layout follows), each taking a lock on a private etcd and running `true`.
#[derive(Debug)]
pub struct EtcdCliInvocation;

const ETCDCTL: &str = "`etcdctl --endpoints HOSTS lock bench true`";
const DISTLOCK_ETCD: &str = "`distlock --url etcd://HOSTS/ run bench -- true`";

impl Scenario for EtcdCliInvocation {
    fn id(&self) -> &'static str {
        "cli_etcd"
    }

    fn run(&self, ctx: &Context, _earlier: &[Section]) -> Result<Section> {
        let dir = temp_dir(ctx, "distlock-bench-cli-etcd-")?;
        let server = super::start_server("etcd", dir.path())?;
        let etcdctl = which("etcdctl").ok_or("etcdctl is not on PATH (etcd-client)")?;
        let invocations = [
            Invocation {
                label: ETCDCTL,
                kind: Kind::Floor,
                argv: vec![
                    etcdctl.into(),
                    format!("--endpoints=http://{}", server.hosts).into(),
                    "lock".into(),
                    "bench-etcdctl".into(),
                    "true".into(),
                ],
            },
            Invocation {
                label: DISTLOCK_ETCD,
                kind: Kind::Distlock,
                argv: vec![
                    ctx.distlock_bin.as_os_str().into(),
                    "--url".into(),
                    server.url.clone().into(),
                    "run".into(),
                    "bench".into(),
                    "--".into(),
                    "true".into(),
                ],
            },
        ];
        // Each invocation connects, takes a lease and a key: a quarter of the file runs.
        let plan = crate::measure::Plan {
            warmup: (ctx.spawns.warmup / 4).max(1),
            iterations: (ctx.spawns.iterations / 4).max(10),
            batch: 1,
        };
        let rows = measure(plan, &invocations)?;
        let floor = rows.iter().find(|r| r.kind == Kind::Floor).expect("listed");
        let baselines = vec![Baseline::of(floor, "etcdctl lock")];
        let mut section = Section::new(
            self.id(),
            "CLI invocation on etcd",
            format!(
                "Wall time from spawn to exit of one whole command against a private etcd from \
                 the testkit on 127.0.0.1, standard input and output on /dev/null. **Floor**: \
                 etcd's own `etcdctl lock` (Debian's etcd-client) taking a lock and running \
                 `true`: it connects, grants a session lease, creates its key, runs the \
                 command, deletes the key and revokes the lease. **distlock**: `{}` doing the \
                 same. {} untimed warm-up runs, then {} timed runs of each, interleaved one run \
                 at a time in rotating order.",
                ctx.distlock_bin.display(),
                plan.warmup,
                plan.iterations
            ),
            Unit::Millis,
        );
        section.baselines = baselines;
        section.rows = rows;
        Ok(section.finish())
    }
}

fn method(ctx: &Context) -> String {
    let p = ctx.spawns;
    format!(
        "Wall time from spawn to exit of one whole command, run by the bench with standard \
         input and output on /dev/null, in a fresh lock directory DIR. **Floor**: util-linux \
         `flock(1)` taking a lock and running `true`. **distlock**: the release build \
         `{}` doing the same on the file backend. For information: `true` alone (the cost \
         of spawning any process) and `distlock --version` (the binary's start-up, without a \
         lock or a child). Each command: {} untimed warm-up runs, then {} timed runs, the commands \
         interleaved one run at a time in rotating order.",
        ctx.distlock_bin.display(),
        p.warmup,
        p.iterations
    )
}

fn notes(section: &Section) -> Vec<String> {
    let p50 = |label: &str| section.row(label).map(|r| r.summary.p50_ns as f64);
    let (Some(spawn), Some(flock), Some(distlock), Some(version)) =
        (p50(TRUE), p50(FLOCK), p50(DISTLOCK), p50(VERSION))
    else {
        return Vec::new();
    };
    let u = section.unit;
    let above = |v: f64| time(u, v - spawn);
    vec![format!(
        "Above the spawn floor (`true`, p50 {}): flock adds {}, `distlock run` adds {}, and \
         `distlock --version` (the binary's start-up and argument parsing alone) adds {}.",
        time(u, spawn),
        above(flock),
        above(distlock),
        above(version),
    )]
}

/// Runs `argv` once with its output captured; fails with its stderr unless it exits 0.
fn check(argv: &[OsString]) -> Result<()> {
    let output = command(argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", argv[0]))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} exited with {}: {}",
            argv,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into())
    }
}

fn spawn_and_wait(argv: &[OsString]) -> Result<()> {
    let status = command(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{argv:?} exited with {status}").into())
    }
}

fn command(argv: &[OsString]) -> Command {
    let mut command = Command::new(Path::new(&argv[0]));
    command.args(&argv[1..]).stdin(Stdio::null());
    command
}
