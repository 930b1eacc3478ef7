//! Uncontended acquire + release on the file backend, against the raw fcntl OFD cycle.

use crate::floors::file::{OfdCycle, OfdTokenCycle};
use crate::measure::{Subject, interleaved};
use crate::report::{Baseline, Kind, Row, Section, Unit};
use crate::{Result, report};

use super::{Context, Scenario, file_url, temp_dir};

/// The largest acceptable ratio of distlock's p50 to the floor's.
pub const TARGET: f64 = 1.5;

/// Label of the floor row.
pub const FLOOR: &str = "raw OFD cycle (libc)";
/// Label of the async distlock row.
pub const ASYNC: &str = "distlock async (current_thread runtime)";
const TOKEN_FLOOR: &str = "raw OFD cycle + pread/pwrite of a counter (libc)";
const BLOCKING: &str = "distlock::blocking";

/// See the module docs.
#[derive(Debug)]
pub struct FileCycle;

impl Scenario for FileCycle {
    fn id(&self) -> &'static str {
        "file_cycle"
    }

    fn run(&self, ctx: &Context, _earlier: &[Section]) -> Result<Section> {
        let dir = temp_dir(ctx, "distlock-bench-cycle-")?;
        let url = file_url(dir.path())?;
        let mut floor = OfdCycle::new(&dir.path().join("floor.lock"))?;
        let mut token_floor = OfdTokenCycle::new(&dir.path().join("token-floor.lock"))?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let locks = runtime.block_on(distlock::connect(&url))?;
        let blocking = distlock::blocking::connect(&url)?;

        let mut subjects = vec![
            Subject::per_call(FLOOR, || floor.cycle()),
            Subject::per_call(TOKEN_FLOOR, || token_floor.cycle()),
            Subject::new(ASYNC, |n, out| {
                runtime.block_on(super::lock_cycles(&locks, "bench-async", n, out))
            }),
            Subject::per_call(BLOCKING, || {
                let lease = blocking.mutex("bench-blocking").no_wait().acquire()?;
                lease.release()?;
                Ok(())
            }),
        ];
        let labels: Vec<String> = subjects.iter().map(|s| s.label.clone()).collect();
        let samples = interleaved(ctx.cycles, &mut subjects)?;
        drop(subjects);

        let kinds = [Kind::Floor, Kind::Reference, Kind::Distlock, Kind::Distlock];
        let rows: Vec<Row> = labels
            .into_iter()
            .zip(kinds)
            .zip(&samples)
            .map(|((label, kind), samples)| {
                let row = Row::measured(label, kind, samples)?;
                Ok(if kind == Kind::Distlock {
                    row.with_target(TARGET)
                } else {
                    row
                })
            })
            .collect::<Result<_>>()?;
        let mut section = Section {
            id: self.id().to_owned(),
            title: "File lock cycle".to_owned(),
            method: method(ctx),
            unit: Unit::Micros,
            baselines: vec![Baseline::of(&rows[0], "floor")],
            rows,
            notes: Vec::new(),
            contention: Vec::new(),
            many_keys: Vec::new(),
            charts: Vec::new(),
        }
        .finish();
        section.notes = notes(&section);
        Ok(section)
    }
}

fn method(ctx: &Context) -> String {
    let p = ctx.cycles;
    format!(
        "One uncontended exclusive acquire + release per iteration, in a fresh temporary \
         directory. **Floor**: `open(O_RDWR|O_CREAT|O_CLOEXEC)` + `fcntl(F_OFD_SETLK, F_WRLCK)` \
         + unlock + `close`, with libc directly. **Reference**: the same plus `pread` and \
         `pwrite` of an 8-byte counter under the lock — the least a fencing token persisted \
         in the lock file costs. **distlock async**: `locks.mutex(name).no_wait().acquire()` \
         + `lease.release()` through `distlock::connect(\"file:///dir\")`, awaited on a Tokio \
         current-thread runtime. **distlock::blocking**: the same through \
         `distlock::blocking::connect` (its own one-worker runtime). Each subject: {} \
         untimed warm-up iterations, then {} timed ones in batches of {}, the subjects \
         interleaved batch by batch in rotating order; every iteration is timed on its own \
         with `Instant::now()`.",
        p.warmup, p.iterations, p.batch
    )
}

fn notes(section: &Section) -> Vec<String> {
    let p50 = |label: &str| section.row(label).map(|r| r.summary.p50_ns as f64);
    let (Some(floor), Some(token), Some(async_)) = (p50(FLOOR), p50(TOKEN_FLOOR), p50(ASYNC))
    else {
        return Vec::new();
    };
    let u = section.unit;
    let mut notes = vec![format!(
        "At p50, distlock async spends {} per cycle above the floor; persisting a counter under \
         the lock (the reference row) accounts for {} of that.",
        report::markdown::time(u, async_ - floor),
        report::markdown::time(u, token - floor),
    )];
    if let Some(blocking) = p50(BLOCKING) {
        notes.push(format!(
            "The blocking API adds {} per cycle (p50) to the async one: each call is a \
             `block_on` on a runtime whose worker thread runs the lease's renewal task.",
            report::markdown::time(u, blocking - async_),
        ));
    }
    notes
}
