//! One Redis server, without persistence or with AOF `appendfsync always`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use distlock_testkit::redis::{Persistence, RedisServer};

use super::{BackendSpec, TortureBackend};
use crate::faults::Fault;

/// Query options: response timeouts well under a third of the harness's TTLs.
pub(crate) const OPTIONS: &str = "?response_timeout=300ms&connect_timeout=500ms";

/// Redis without persistence.
pub const SPEC: BackendSpec = BackendSpec {
    label: "redis",
    about: "one redis-server, no persistence",
    faults: &[
        Fault::None,
        Fault::Sigstop,
        Fault::Sigkill,
        Fault::Partition,
        Fault::Restart,
    ],
    monotonic_tokens: true,
    no_double_grants: false,
    server_expiry: true,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "sigstop is the unfenced positive control: the holder is stopped between its read and \
         its write of the resource, for TTL + 2–2.5 s, so the key expires, another client \
         writes, and the stopped holder's write is a lost update in the unfenced counter, which \
         the fenced register rejects. restart = SIGKILL and a start without persistence: the \
         holder's key is forgotten; the holder reports Lost when its connection comes back \
         (`the lock was gone when the connection came back`), and a waiter granted just before \
         that overlaps it (the restart row's overlaps; the double-grant check needs the \
         believer to outlast an observer read by 100 ms, which it does not). Double grants are \
         not gated here: without persistence they are the documented behaviour.",
    ),
    start: start_plain,
};

/// Redis with AOF `appendfsync always`.
pub const SPEC_AOF: BackendSpec = BackendSpec {
    label: "redis-aof",
    about: "one redis-server, AOF appendfsync always",
    faults: &[Fault::Restart],
    monotonic_tokens: true,
    no_double_grants: false,
    server_expiry: true,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "restart = SIGKILL and a start on the same directory: with every write fsynced to the \
         AOF, the holder's key and the token counter come back, so a restart costs \
         availability only.",
    ),
    start: start_aof,
};

struct Redis {
    server: Vec<RedisServer>,
}

fn start_plain(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(Redis {
        server: vec![RedisServer::start_with(Persistence::None, &[])],
    })
}

fn start_aof(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(Redis {
        server: vec![RedisServer::start_with(Persistence::AofAlways, &[])],
    })
}

impl TortureBackend for Redis {
    fn upstreams(&self) -> Vec<SocketAddr> {
        vec![SocketAddr::from(([127, 0, 0, 1], self.server[0].port()))]
    }

    fn url_via(&self, ports: &[u16]) -> String {
        format!("redis://127.0.0.1:{}/{OPTIONS}", ports[0])
    }

    fn restart(&mut self, _node: usize, down_for: Duration) {
        self.server[0].kill();
        std::thread::sleep(down_for);
        self.server[0].restart();
    }

    fn redis_nodes(&mut self) -> &mut [RedisServer] {
        &mut self.server
    }
}
