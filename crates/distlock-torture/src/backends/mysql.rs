//! One MariaDB server: `GET_LOCK` user locks, tokens from a counter table, the holder's
//! connection cut off by `wait_timeout` = ceil(TTL). A restart is a crash (SIGKILL) followed by
//! InnoDB recovery on the same port and data directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use distlock_testkit::mysql::{DATABASE, MariaDbServer, SUPERUSER};

use super::{BackendSpec, TortureBackend};
use crate::faults::Fault;

/// MySQL/MariaDB.
pub const SPEC: BackendSpec = BackendSpec {
    label: "mysql",
    about: "one MariaDB server, GET_LOCK user locks, crash restart",
    faults: &[
        Fault::None,
        Fault::Sigstop,
        Fault::Sigkill,
        Fault::Partition,
        Fault::Restart,
    ],
    // An InnoDB counter row, advanced in the granting transaction (the log reaches the OS at
    // commit, so a process crash keeps it).
    monotonic_tokens: true,
    no_double_grants: true,
    server_expiry: true,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "TTL enforced by the server: the holder's connection gets `wait_timeout` = ceil(TTL) (one \
         second granularity). Restart = SIGKILL of mariadbd, then InnoDB crash recovery on the \
         same data directory; partition = the holder's connections blackholed by the userspace \
         proxy.",
    ),
    start,
};

struct MySql {
    server: MariaDbServer,
}

fn start(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(MySql {
        server: MariaDbServer::start(),
    })
}

impl TortureBackend for MySql {
    fn upstreams(&self) -> Vec<SocketAddr> {
        vec![SocketAddr::from(([127, 0, 0, 1], self.server.port()))]
    }

    fn url_via(&self, ports: &[u16]) -> String {
        // mysql_async switches a localhost TCP connection to the server's Unix socket unless
        // told not to, which would bypass the partition proxy.
        format!(
            "mysql://{SUPERUSER}@127.0.0.1:{}/{DATABASE}?prefer_socket=false",
            ports[0]
        )
    }

    fn restart(&mut self, _node: usize, down_for: Duration) {
        self.server.kill();
        std::thread::sleep(down_for);
        self.server.start_again();
    }
}
