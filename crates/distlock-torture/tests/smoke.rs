//! CI's torture gate: the whole smoke profile — every backend × fault, positive controls
//! included — with every gate of docs/guarantees.md, on the binary `cargo test` has just built
//! (no release build: that would cost CI more than the runs themselves). Under 10 minutes on
//! a 2-core machine.
//!
//! Progress goes straight to stderr; the logs of every run stay under
//! `target/tmp/torture-smoke/<backend>-<fault>/` for a failure's post-mortem. The docs are left
//! alone: `scripts/torture` regenerates them.

use std::process::Command;
use std::time::Instant;

#[test]
fn smoke_profile_passes_every_gate() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("torture-smoke");
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_distlock-torture"))
        .args(["suite", "--profile", "smoke", "--seed", "1"])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("distlock-torture runs");
    eprintln!("torture smoke profile: {:.0?}", started.elapsed());
    assert!(
        status.success(),
        "torture gates failed (see GATE FAILED above; logs in {})",
        out.display()
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let runs = results.as_array().unwrap();
    // Every positive control ran and was gated (the suite fails when one sees nothing).
    for control in [("redis", "sigstop"), ("redlock", "clock-jump")] {
        assert!(
            runs.iter()
                .any(|r| (r["backend"].as_str(), r["fault"].as_str())
                    == (Some(control.0), Some(control.1))),
            "{control:?} missing from the smoke profile"
        );
    }
}
