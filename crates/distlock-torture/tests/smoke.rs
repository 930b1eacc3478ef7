//! A very short end-to-end torture run, so CI exercises the harness: the file backend under
//! SIGKILL must be clean and available again at once; the Redis SIGSTOP positive control must
//! show the lost update that fencing rejects; etcd under SIGKILL must be free again within the
//! TTL and never grant twice.

use std::process::Command;

fn scenario(
    backend: &str,
    fault: &str,
    duration: &str,
    out: &std::path::Path,
) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_distlock-torture"))
        .args(["scenario", "--backend", backend, "--fault", fault])
        .args(["--duration", duration, "--seed", "7"])
        .arg("--out")
        .arg(out)
        .output()
        .expect("distlock-torture runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{backend}/{fault}: gates failed:\n{stderr}"
    );
    serde_json::from_slice(&output.stdout).expect("a JSON result")
}

#[test]
fn file_backend_under_sigkill_is_clean_and_recovers_at_once() {
    let out = tempfile::tempdir().unwrap();
    let r = scenario("file", "sigkill", "8s", out.path());
    let c = &r["checks"];
    assert!(c["operations"].as_u64().unwrap() > 0, "{r}");
    assert!(c["crashes"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(c["double_grants"], 0, "{r}");
    assert_eq!(c["overlaps"], 0, "{r}");
    assert_eq!(r["oracle"]["lost_updates"], 0, "{r}");
    assert!(
        c["max_unavailability_ms"].as_f64().unwrap() <= 3000.0,
        "{r}"
    );
}

#[test]
fn redis_sigstop_positive_control_shows_the_lost_update() {
    let out = tempfile::tempdir().unwrap();
    let r = scenario("redis", "sigstop", "10s", out.path());
    assert!(r["faults_applied"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["oracle"]["lost_updates"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        r["oracle"]["fenced_writes_rejected"].as_u64().unwrap() >= 1,
        "{r}"
    );
    assert_eq!(r["oracle"]["fenced_accepted_stale"], 0, "{r}");
    assert!(r["checks"]["overlaps"].as_u64().unwrap() >= 1, "{r}");
}

#[test]
fn etcd_under_sigkill_recovers_within_ttl_and_never_double_grants() {
    let out = tempfile::tempdir().unwrap();
    let r = scenario("etcd", "sigkill", "8s", out.path());
    let c = &r["checks"];
    assert!(c["operations"].as_u64().unwrap() > 0, "{r}");
    assert!(c["crashes"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(c["double_grants"], 0, "{r}");
    assert_eq!(c["overlaps"], 0, "{r}");
    assert_eq!(r["oracle"]["fenced_accepted_stale"], 0, "{r}");
    assert!(
        c["max_unavailability_ms"].as_f64().unwrap() <= 3000.0,
        "{r}"
    );
}
