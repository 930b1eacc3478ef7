//! One PostgreSQL server: session advisory locks, tokens from a sequence, the holder's session
//! cut off by `idle_session_timeout` = TTL. A restart is a crash (SIGKILL of the postmaster and
//! every backend) followed by crash recovery on the same port and data directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use distlock_testkit::postgres::{DATABASE, PostgresServer, SUPERUSER};

use super::{BackendSpec, TortureBackend};
use crate::faults::Fault;

/// PostgreSQL.
pub const SPEC: BackendSpec = BackendSpec {
    label: "postgres",
    about: "one PostgreSQL server, session advisory locks, crash restart",
    faults: &[
        Fault::None,
        Fault::Sigstop,
        Fault::Sigkill,
        Fault::Partition,
        Fault::Restart,
    ],
    // A sequence, advanced in the granting transaction: survives restarts and crashes.
    monotonic_tokens: true,
    no_double_grants: true,
    server_expiry: true,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "TTL enforced by the server: the holder's session gets `idle_session_timeout` = TTL. \
         Restart = SIGKILL of the postmaster and every backend, then crash recovery on the same \
         data directory; partition = the holder's connections blackholed by the userspace proxy.",
    ),
    start,
};

struct Postgres {
    server: PostgresServer,
}

fn start(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(Postgres {
        server: PostgresServer::start(),
    })
}

impl TortureBackend for Postgres {
    fn upstreams(&self) -> Vec<SocketAddr> {
        vec![SocketAddr::from(([127, 0, 0, 1], self.server.port()))]
    }

    fn url_via(&self, ports: &[u16]) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}?connect_timeout=2",
            ports[0]
        )
    }

    fn restart(&mut self, _node: usize, down_for: Duration) {
        self.server.kill();
        std::thread::sleep(down_for);
        self.server.start_again();
    }
}
