//! Metrics, through the `metrics` facade: no-ops until the application installs a recorder.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `distlock_acquisitions_total` | counter | `backend`, `mode` |
//! | `distlock_acquire_failures_total` | counter | `backend`, `kind` (`timeout`, `would_block`, ...) |
//! | `distlock_wait_seconds` | histogram | `backend` |
//! | `distlock_hold_seconds` | histogram | `backend` |
//! | `distlock_leases_lost_total` | counter | `backend` |

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata};

use crate::error::ErrorKind;
use crate::options::LockMode;

/// Names of the metrics distlock records.
pub mod names {
    /// Successful acquisitions.
    pub const ACQUISITIONS: &str = "distlock_acquisitions_total";
    /// Failed acquisitions, labelled by error kind (timeouts are `kind="timeout"`).
    pub const ACQUIRE_FAILURES: &str = "distlock_acquire_failures_total";
    /// Time from the start of `acquire()` to the grant.
    pub const WAIT_SECONDS: &str = "distlock_wait_seconds";
    /// Time from the grant to the release.
    pub const HOLD_SECONDS: &str = "distlock_hold_seconds";
    /// Leases that reached `Lost`.
    pub const LEASES_LOST: &str = "distlock_leases_lost_total";
}

/// The keys of one backend's metrics, built once per backend name and kept for the process's
/// life. The `metrics` macros build a key from labels with runtime values at every call, which
/// allocates and hashes on every acquisition and release even with no recorder installed;
/// these are built once per backend name, looked up once per client ([`keys`]), and kept by
/// the client and its leases, so recording one is a call to the recorder.
pub(crate) struct BackendKeys {
    /// The backend's name.
    pub(crate) backend: &'static str,
    /// [`names::ACQUISITIONS`] by mode, in [`mode_index`] order.
    acquisitions: [Key; 3],
    wait_seconds: Key,
    hold_seconds: Key,
    leases_lost: Key,
}

/// The `mode` label of each lock mode.
const MODE_LABELS: [&str; 3] = ["exclusive", "shared", "permits"];

fn mode_index(mode: LockMode) -> usize {
    match mode {
        LockMode::Exclusive => 0,
        LockMode::Shared => 1,
        LockMode::Permits { .. } => 2,
    }
}

/// The keys of `backend`. The few backend names a process uses are each leaked once.
pub(crate) fn keys(backend: &'static str) -> &'static BackendKeys {
    static ALL: StdMutex<Vec<&'static BackendKeys>> = StdMutex::new(Vec::new());
    let mut all = ALL.lock().unwrap();
    if let Some(found) = all.iter().find(|keys| keys.backend == backend) {
        return found;
    }
    let by_backend: &'static [Label] =
        Box::leak(Box::new([Label::from_static_parts("backend", backend)]));
    let with_mode = |mode: &'static str| -> Key {
        let labels: &'static [Label] = Box::leak(Box::new([
            Label::from_static_parts("backend", backend),
            Label::from_static_parts("mode", mode),
        ]));
        Key::from_static_parts(names::ACQUISITIONS, labels)
    };
    let keys = Box::leak(Box::new(BackendKeys {
        backend,
        acquisitions: MODE_LABELS.map(with_mode),
        wait_seconds: Key::from_static_parts(names::WAIT_SECONDS, by_backend),
        hold_seconds: Key::from_static_parts(names::HOLD_SECONDS, by_backend),
        leases_lost: Key::from_static_parts(names::LEASES_LOST, by_backend),
    }));
    all.push(keys);
    keys
}

/// What the macros would record as the call site of every distlock metric.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn counter(key: &Key) -> metrics::Counter {
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
}

fn histogram(key: &Key) -> metrics::Histogram {
    metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
}

pub(crate) fn acquired(keys: &BackendKeys, mode: LockMode, waited: Duration) {
    counter(&keys.acquisitions[mode_index(mode)]).increment(1);
    histogram(&keys.wait_seconds).record(waited.as_secs_f64());
}

pub(crate) fn acquire_failed(backend: &'static str, kind: ErrorKind) {
    metrics::counter!(names::ACQUIRE_FAILURES, "backend" => backend, "kind" => kind.as_str())
        .increment(1);
}

pub(crate) fn hold_time(keys: &BackendKeys, held: Duration) {
    histogram(&keys.hold_seconds).record(held.as_secs_f64());
}

pub(crate) fn lease_lost(backend: &'static str) {
    counter(&keys(backend).leases_lost).increment(1);
}
