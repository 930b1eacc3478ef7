//! The backends under test. Adding one is one module here: start its servers through the
//! testkit, say how clients reach it, which faults apply, and what its tokens promise.

mod etcd;
mod file;
mod mysql;
mod postgres;
mod redis;
mod redlock;
mod zookeeper;

use std::net::SocketAddr;
use std::time::Duration;

use distlock_testkit::redis::RedisServer;

use crate::faults::Fault;

/// A running backend: its servers live as long as this value.
pub trait TortureBackend {
    /// The URL the observer and the controller use: straight to the servers.
    fn direct_url(&self) -> String {
        let ports: Vec<u16> = self.upstreams().iter().map(SocketAddr::port).collect();
        self.url_via(&ports)
    }
    /// The server addresses clients connect to, in URL order (empty when there is no server).
    fn upstreams(&self) -> Vec<SocketAddr>;
    /// The client URL when `ports` on 127.0.0.1 stand in for [`upstreams`](Self::upstreams).
    fn url_via(&self, ports: &[u16]) -> String;
    /// Kills server `node` and starts it again on the same port after `down_for`.
    fn restart(&mut self, node: usize, down_for: Duration);
    /// The index of the cluster's current leader (waiting up to a few seconds for one), or
    /// `None` for backends without a leader.
    fn leader(&self) -> Option<usize> {
        None
    }
    /// The Redis servers, for Redis-specific faults; empty elsewhere.
    fn redis_nodes(&mut self) -> &mut [RedisServer] {
        &mut []
    }
}

/// What the harness knows about a backend before starting it.
#[derive(Debug, Clone, Copy)]
pub struct BackendSpec {
    /// The label used on the command line and in the report.
    pub label: &'static str,
    /// A sentence for the report.
    pub about: &'static str,
    /// The faults that apply to it.
    pub faults: &'static [Fault],
    /// Whether the fencing-token source is monotonic under every fault applied here (the
    /// fenced accepted-but-stale gate applies only then).
    pub monotonic_tokens: bool,
    /// Whether server-side double grants must be zero under every fault (the gate).
    pub no_double_grants: bool,
    /// Whether a holder's lease expires on the server by itself (else unavailability after a
    /// pause is expected, and lost-detection latency has no server-side reference).
    pub server_expiry: bool,
    /// Allowance beyond ttl + 1 s for the unavailability after a holder's SIGKILL (ZooKeeper:
    /// the server expires sessions once per tick).
    pub crash_slack: Duration,
    /// The smoke profile's time per fault run (see [`smoke_duration`]).
    pub smoke_run: Duration,
    /// A note printed under the backend's table (conditions of the measurement, known
    /// violations and the conditions under which they happen).
    pub note: Option<&'static str>,
    /// Starts the servers.
    pub start: fn(dir: &std::path::Path) -> Box<dyn TortureBackend>,
}

/// Every backend the harness knows, in report order.
pub const ALL: &[BackendSpec] = &[
    file::SPEC,
    redis::SPEC,
    redis::SPEC_AOF,
    redlock::SPEC,
    postgres::SPEC,
    mysql::SPEC,
    zookeeper::SPEC,
    zookeeper::SPEC_ENSEMBLE,
    etcd::SPEC,
    etcd::SPEC_CLUSTER,
];

/// The smoke profile's time per fault run: the first fault comes within a second, the
/// longest (a SIGSTOP past the TTL, a kill and restart) is over within 7 s, and the consequences
/// land within the quiet tail the controller leaves after the last one.
pub(crate) const SMOKE_RUN: Duration = Duration::from_secs(9);

/// The smoke profile's time per run without faults: long enough for dozens of hand-overs.
const SMOKE_BASELINE: Duration = Duration::from_secs(6);

/// The smoke profile's time for the Redlock clock-jump control, whose TTL is 9 s.
const SMOKE_CLOCK_JUMP: Duration = Duration::from_secs(15);

/// The smoke profile's time for `spec` × `fault`. The whole smoke profile (CI's gate) must
/// stay under 10 minutes on a 2-core machine.
pub fn smoke_duration(spec: &BackendSpec, fault: Fault) -> Duration {
    match fault {
        Fault::None => SMOKE_BASELINE,
        Fault::ClockJump => SMOKE_CLOCK_JUMP,
        _ => spec.smoke_run,
    }
}

/// Looks a backend up by label.
pub fn spec(label: &str) -> Option<&'static BackendSpec> {
    ALL.iter().find(|s| s.label == label)
}

/// Rebuilds a comma-separated host list with the given ports on 127.0.0.1.
pub(crate) fn hosts(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}
