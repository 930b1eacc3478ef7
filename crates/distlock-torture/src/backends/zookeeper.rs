//! One standalone ZooKeeper server: ephemeral-sequential nodes, token = the node's czxid. The
//! lock lives as long as the client's session, so the harness asks for a session timeout equal
//! to the TTL (docs/zookeeper.md): a dead or stopped holder's node goes when the server expires
//! its session, which it checks once per tick — hence the 2-tick slack on unavailability.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use distlock_testkit::zookeeper::ZooKeeper;

use super::{BackendSpec, TortureBackend, hosts};
use crate::faults::Fault;

/// The testkit's `tickTime` (distlock-testkit/src/zookeeper.rs).
const TICK: Duration = Duration::from_millis(250);

/// The session timeout clients ask for: the harness's TTL (2 s, inside the testkit's
/// 2–20 tick bounds, so the server grants it as asked).
const SESSION_TIMEOUT: &str = "2s";

/// ZooKeeper.
pub const SPEC: BackendSpec = BackendSpec {
    label: "zookeeper",
    about: "one standalone ZooKeeper server, session timeout = TTL, kill + restart",
    faults: &[
        Fault::None,
        Fault::Sigstop,
        Fault::Sigkill,
        Fault::Partition,
        Fault::Restart,
    ],
    // The czxid: zxids only grow, across restarts (they are in the transaction log).
    monotonic_tokens: true,
    no_double_grants: true,
    server_expiry: true,
    crash_slack: Duration::from_millis(2 * TICK.as_millis() as u64),
    smoke_run: super::NEW_SMOKE_RUN,
    note: Some(
        "Clients ask for a session timeout equal to the TTL (2 s; tickTime 250 ms), so the lock \
         node of a dead, stopped or cut-off holder goes when the server expires its session, \
         checked once per tick: the unavailability gate is ttl + 1 s + 2 ticks. The observer's \
         `inspect()` ranks the lock nodes as the lock does (the lowest sequence number holds), so \
         **double** can only count two nodes neither of which has a predecessor; the overlaps and \
         the fenced register are the checks that see a second believer. Restart = SIGKILL of the \
         standalone server and a new JVM on the same data directory (sessions are in its log). \
         **Finding (availability, not safety)**: once a client's session has expired — it was \
         SIGSTOPped, or cut off by a partition, for longer than the session timeout — every \
         later `acquire()` through the same `connect()` handle fails at once with `creating the \
         lock node: session expired`, until the process connects again: the backend never \
         opens a new session (the **acq. err.** of the sigstop and partition rows; reproduce \
         with `distlock-torture scenario --backend zookeeper --fault sigstop --duration 10s \
         --seed <the row's seed>` and look for `acquire_error` in \
         `target/torture/zookeeper-sigstop/c*.jsonl`).",
    ),
    start,
};

struct Zk {
    server: ZooKeeper,
}

fn start(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(Zk {
        server: ZooKeeper::start(),
    })
}

impl TortureBackend for Zk {
    fn direct_url(&self) -> String {
        format!(
            "zk://{}/?session_timeout={SESSION_TIMEOUT}",
            self.server.hosts()
        )
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        self.server
            .nodes()
            .iter()
            .map(|n| n.address().parse().expect("127.0.0.1:port"))
            .collect()
    }

    fn url_via(&self, ports: &[u16]) -> String {
        format!("zk://{}/?session_timeout={SESSION_TIMEOUT}", hosts(ports))
    }

    fn restart(&mut self, node: usize, down_for: Duration) {
        self.server.kill(node);
        std::thread::sleep(down_for);
        self.server.restart(node);
    }
}
