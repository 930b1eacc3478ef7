//! Python peers (`filelock`, `portalocker`) doing the file lock cycle, timed inside Python.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::Result;
use crate::report::{Baseline, Kind, Row, Section, Unit};

use super::{Context, Scenario, file_cycle, temp_dir};

/// The script, shipped inside the binary.
const SCRIPT: &str = include_str!("../../python/peers.py");

const PY_FLOOR: &str = "Python raw OFD cycle (os.open + fcntl)";

/// See the module docs.
#[derive(Debug)]
pub struct PythonPeers;

#[derive(Deserialize)]
struct Output {
    python: String,
    versions: HashMap<String, String>,
    samples: HashMap<String, Vec<u64>>,
}

impl Scenario for PythonPeers {
    fn id(&self) -> &'static str {
        "python_peers"
    }

    fn run(&self, ctx: &Context, earlier: &[Section]) -> Result<Section> {
        let python = ctx
            .python
            .as_deref()
            .ok_or("no --python given: the Python peers need one with filelock and portalocker")?;
        let dir = temp_dir(ctx, "distlock-bench-python-")?;
        let output = run_script(python, dir.path(), ctx)?;

        let samples = |key: &str| {
            output
                .samples
                .get(key)
                .map(Vec::as_slice)
                .ok_or_else(|| format!("the Python script returned no samples for {key}"))
        };
        let version = |key: &str| output.versions.get(key).map_or("?", String::as_str);
        let py_floor = Row::measured(PY_FLOOR, Kind::Floor, samples("raw_ofd")?)?;
        let mut rows = vec![
            Row::measured(
                format!(
                    "filelock {} (`FileLock.acquire(timeout=0)` + `release()`)",
                    version("filelock")
                ),
                Kind::Peer,
                samples("filelock")?,
            )?,
            Row::measured(
                format!(
                    "portalocker {} (`Lock.acquire()` + `release()`)",
                    version("portalocker")
                ),
                Kind::Peer,
                samples("portalocker")?,
            )?,
        ];
        let mut baselines = Vec::new();
        let rust = earlier.iter().find(|s| s.id == "file_cycle");
        if let Some(rust) = rust {
            if let Some(floor) = rust.row(file_cycle::FLOOR) {
                baselines.push(Baseline::of(floor, "Rust floor"));
            }
            if let Some(distlock) = rust.row(file_cycle::ASYNC) {
                let mut copied = distlock.clone();
                copied.label = format!("{} (from §1, Rust)", distlock.label);
                copied.target = None;
                rows.push(copied);
            }
        }
        baselines.push(Baseline::of(&py_floor, "Python floor"));
        rows.insert(0, py_floor);
        let mut section = Section::new(
            self.id(),
            "File lock cycle: Python peers",
            method(ctx, &output.python, rust.is_some()),
            Unit::Micros,
        );
        section.baselines = baselines;
        section.rows = rows;
        Ok(section.finish())
    }
}

/// Writes the file-lock peers' script into `dir` and returns its path.
fn script(dir: &Path) -> Result<PathBuf> {
    let script = dir.join("peers.py");
    std::fs::write(&script, SCRIPT)?;
    Ok(script)
}

fn run_script(python: &Path, dir: &Path, ctx: &Context) -> Result<Output> {
    let script = script(dir)?;
    let p = ctx.cycles;
    let output = Command::new(python)
        .arg(&script)
        .arg("--dir")
        .arg(dir)
        .args(["--warmup", &p.warmup.to_string()])
        .args(["--iterations", &p.iterations.to_string()])
        .args(["--batch", &p.batch.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "the Python peers script failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn method(ctx: &Context, python: &str, with_rust: bool) -> String {
    let p = ctx.cycles;
    let rust = if with_rust {
        " The Rust floor and the distlock row are copied from §1 (same machine and run, but \
         another process and another moment), so the ratios to the Rust floor show what the \
         same cycle costs from Python, interpreter included."
    } else {
        ""
    };
    format!(
        "The same uncontended acquire + release, by Python libraries in one {python} process, \
         timed inside Python with `time.perf_counter_ns()` around each iteration. Both \
         libraries take `flock(LOCK_EX|LOCK_NB)` on a descriptor opened at acquire and \
         closed at release, plus checks of their own. \
         **Python floor**: the Rust floor's cycle written in Python (`os.open` + \
         `fcntl.fcntl(F_OFD_SETLK)` twice + `os.close`). {} warm-up then {} timed iterations \
         per subject in interleaved batches of {}.{rust}",
        p.warmup, p.iterations, p.batch
    )
}
