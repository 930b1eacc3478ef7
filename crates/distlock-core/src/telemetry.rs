//! Metrics, through the `metrics` facade: no-ops until the application installs a recorder.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `distlock_acquisitions_total` | counter | `backend`, `mode` |
//! | `distlock_acquire_failures_total` | counter | `backend`, `kind` (`timeout`, `would_block`, ...) |
//! | `distlock_wait_seconds` | histogram | `backend` |
//! | `distlock_hold_seconds` | histogram | `backend` |
//! | `distlock_leases_lost_total` | counter | `backend` |

use std::time::Duration;

use crate::error::ErrorKind;

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

pub(crate) fn acquired(backend: &'static str, mode: &'static str, waited: Duration) {
    metrics::counter!(names::ACQUISITIONS, "backend" => backend, "mode" => mode).increment(1);
    metrics::histogram!(names::WAIT_SECONDS, "backend" => backend).record(waited.as_secs_f64());
}

pub(crate) fn acquire_failed(backend: &'static str, kind: ErrorKind) {
    metrics::counter!(names::ACQUIRE_FAILURES, "backend" => backend, "kind" => kind.as_str())
        .increment(1);
}

pub(crate) fn hold_time(backend: &'static str, held: Duration) {
    metrics::histogram!(names::HOLD_SECONDS, "backend" => backend).record(held.as_secs_f64());
}

pub(crate) fn lease_lost(backend: &'static str) {
    metrics::counter!(names::LEASES_LOST, "backend" => backend).increment(1);
}
