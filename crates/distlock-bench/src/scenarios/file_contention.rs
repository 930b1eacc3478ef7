//! N-way contention on one lock file: distlock's file backend against the raw `F_OFD_SETLKW`
//! hand-off and the file-lock peers, each worker its own process.

use crate::Result;
use crate::contention::{self, Subject};
use crate::peers::PeerCommand;
use crate::report::{Kind, Section, Unit};
use crate::rust_peers;

use super::{Context, Scenario, file_url, network, temp_dir};

const FLOOR: &str = "raw F_OFD_SETLKW (libc)";

/// See the module docs.
#[derive(Debug)]
pub struct FileContention;

impl Scenario for FileContention {
    fn id(&self) -> &'static str {
        "file_contention"
    }

    fn run(&self, ctx: &Context, _earlier: &[Section]) -> Result<Section> {
        let dir = temp_dir(ctx, "distlock-bench-contention-")?;
        let url = file_url(dir.path())?;
        let mut subjects = vec![
            Subject {
                label: FLOOR.to_owned(),
                kind: Kind::Floor,
                command: PeerCommand::rust("raw-ofd", &url)?,
            },
            Subject {
                label: "distlock".to_owned(),
                kind: Kind::Distlock,
                command: PeerCommand::rust("distlock", &url)?,
            },
        ];
        if rust_peers::all().iter().any(|p| p.lib == "fd-lock") {
            subjects.push(Subject {
                label: "fd-lock (`RwLock::write`, flock)".to_owned(),
                kind: Kind::Peer,
                command: PeerCommand::rust("fd-lock", &url)?,
            });
        }
        let mut notes = Vec::new();
        match &ctx.python {
            Some(python) => {
                let script = network::python_peers_script(dir.path())?;
                for lib in ["filelock", "portalocker"] {
                    subjects.push(Subject {
                        label: format!("{lib} (Python)"),
                        kind: Kind::Peer,
                        command: PeerCommand::new(python)
                            .arg(script.display().to_string())
                            .arg("--lib")
                            .arg(lib)
                            .arg("--url")
                            .arg(url.clone()),
                    });
                }
            }
            None => notes.push("The Python peers were not run (no `--python`).".to_owned()),
        }

        let mut section =
            Section::new(self.id(), "File lock contention", method(ctx), Unit::Micros);
        section.contention = contention::measure(
            &ctx.contention,
            "contend",
            None,
            &subjects,
            &mut section.notes,
        )?;
        // No round trip on a local file: the floor is the raw kernel hand-off at the same N and
        // hold time.
        let floors: Vec<_> = section
            .contention
            .iter()
            .filter(|r| r.kind == Kind::Floor)
            .map(|r| (r.workers, r.hold_us, r.handoff.map(|h| h.p50_ns)))
            .collect();
        for row in &mut section.contention {
            let floor = floors
                .iter()
                .find(|(n, hold, _)| *n == row.workers && *hold == row.hold_us)
                .and_then(|(_, _, p50)| *p50);
            row.handoff_p50_ratio = floor
                .zip(row.handoff)
                .and_then(|(f, h)| crate::stats::ratio(h.p50_ns as f64, f as f64));
        }
        let ratios: Vec<f64> = section
            .contention
            .iter()
            .filter(|r| r.kind == Kind::Distlock)
            .filter_map(|r| r.handoff_p50_ratio)
            .collect();
        if !ratios.is_empty() {
            let lo = ratios.iter().copied().fold(f64::MAX, f64::min);
            let hi = ratios.iter().copied().fold(f64::MIN, f64::max);
            notes.push(format!(
                "distlock's hand-off gap is {lo:.1}× to {hi:.1}× the kernel's. Where the raw \
                 waiter is one thread woken by the unlock, a distlock waiter is a thread blocked \
                 in `F_OFD_SETLKW` that, once woken, writes the fencing counter and holder record \
                 and then wakes the async task that asked (a second wake-up, through the \
                 runtime's event fd); the releasing side also stops the lease's renewal task \
                 before it unlocks. The floor's gap is what one cross-process wake-up costs on \
                 this machine, so distlock's gap is mostly its second wake-up and the \
                 scheduling of the extra threads on the machine's CPUs, not work."
            ));
        }
        section.notes = notes;
        Ok(section.finish())
    }
}

fn method(ctx: &Context) -> String {
    let c = &ctx.contention;
    format!(
        "N processes loop acquire → hold → release on one lock file, waiting without bound, for \
         {:.1} s per run (N = {:?}, hold = {:?} µs), each speaking the bench's peer protocol \
         (`crates/distlock-bench/src/peers.rs`) and stamping every step with `CLOCK_MONOTONIC`. \
         **Floor**: open + `fcntl(F_OFD_SETLKW)` + unlock + close with libc, the kernel's own \
         hand-off; the ratio column divides by its hand-off gap at the same N and hold. \
         **distlock**: `locks.mutex(name).wait_forever()` on `file:///dir` (a waiter thread \
         blocks in `F_OFD_SETLKW`). **fd-lock**: `RwLock::write()` (flock). **filelock** \
         polls `flock(LOCK_NB)` every 50 ms (its default); **portalocker** blocks in \
         `flock(LOCK_EX)`.",
        c.duration.as_secs_f64(),
        c.workers,
        c.holds_us
    )
}
