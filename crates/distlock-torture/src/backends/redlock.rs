//! Redlock over three independent Redis masters without persistence.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use distlock_testkit::redis::{RedisMasters, RedisServer};

use super::{BackendSpec, TortureBackend, hosts};
use crate::faults::Fault;

/// Redlock over 3 masters.
pub const SPEC: BackendSpec = BackendSpec {
    label: "redlock",
    about: "Redlock over 3 independent redis-server masters, no persistence",
    faults: &[
        Fault::None,
        Fault::RestartImmediate,
        Fault::RestartDelayed,
        Fault::ClockJump,
    ],
    // Documented as best-effort: a master that lost its counter restarts it from its clock.
    monotonic_tokens: false,
    no_double_grants: false,
    server_expiry: true,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "restart-immediate / restart-delayed = SIGKILL of one master and a start without \
         persistence at once / after TTL + 1–1.5 s. clock-jump is the Redlock positive control \
         (TTL 9 s, work 3–4.5 s): master 3 is killed, a client wins masters 1 and 2, master 3 \
         restarts empty, then master 1's lock keys are deleted — what a forward clock jump does \
         to their expiry. Masters 1 and 3 then grant a second client while the first still \
         believes, until its next renewal (ttl/3) finds only master 2: overlaps, double grants \
         seen by the observer (the majority's holder is not the believer), and the old \
         holder's write is a lost update that the fenced register rejects. Tokens are not \
         gated: a master that lost its counter restarts it from its clock (best effort).",
    ),
    start,
};

struct Redlock {
    masters: RedisMasters,
}

fn start(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(Redlock {
        masters: RedisMasters::start(3),
    })
}

impl TortureBackend for Redlock {
    fn upstreams(&self) -> Vec<SocketAddr> {
        self.masters
            .servers
            .iter()
            .map(|s| SocketAddr::from(([127, 0, 0, 1], s.port())))
            .collect()
    }

    fn url_via(&self, ports: &[u16]) -> String {
        format!("redlock://{}/{}", hosts(ports), super::redis::OPTIONS)
    }

    fn restart(&mut self, node: usize, down_for: Duration) {
        let server = &mut self.masters.servers[node];
        server.kill();
        std::thread::sleep(down_for);
        server.restart();
    }

    fn redis_nodes(&mut self) -> &mut [RedisServer] {
        &mut self.masters.servers
    }
}
