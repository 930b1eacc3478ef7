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
    note: None,
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
