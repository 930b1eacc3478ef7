//! Metrics are recorded through the `metrics` facade when the application installs a recorder.

use std::time::Duration;

use distlock_core::telemetry::names;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn acquisitions_failures_and_hold_times_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let locks = distlock::connect(&url).await.unwrap();
            let lease = locks.mutex("m").acquire().await.unwrap();
            let err = locks.mutex("m").no_wait().acquire().await.unwrap_err();
            assert!(err.is_would_block());
            let err = locks
                .mutex("m")
                .wait(Duration::from_millis(20))
                .acquire()
                .await
                .unwrap_err();
            assert!(err.is_timeout());
            lease.release().await.unwrap();
        });
    });
    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let shown = match value {
            DebugValue::Counter(n) => n.to_string(),
            DebugValue::Histogram(values) => format!("{} samples", values.len()),
            DebugValue::Gauge(g) => g.to_string(),
        };
        seen.insert(
            format!("{}{{{}}}", key.key().name(), labels.join(",")),
            shown,
        );
    }
    let expect = [
        (
            format!("{}{{backend=file,mode=exclusive}}", names::ACQUISITIONS),
            "1",
        ),
        (
            format!(
                "{}{{backend=file,kind=would_block}}",
                names::ACQUIRE_FAILURES
            ),
            "1",
        ),
        (
            format!("{}{{backend=file,kind=timeout}}", names::ACQUIRE_FAILURES),
            "1",
        ),
        (
            format!("{}{{backend=file}}", names::WAIT_SECONDS),
            "1 samples",
        ),
        (
            format!("{}{{backend=file}}", names::HOLD_SECONDS),
            "1 samples",
        ),
    ];
    for (key, value) in expect {
        assert_eq!(
            seen.get(&key).map(String::as_str),
            Some(value),
            "{key} in {seen:?}"
        );
    }
}
