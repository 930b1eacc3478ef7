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
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "Clients ask for a session timeout equal to the TTL (2 s; tickTime 250 ms), so the lock \
         node of a dead, stopped or cut-off holder goes when the server expires its session, \
         checked once per tick: the unavailability gate is ttl + 1 s + 2 ticks. The observer lists \
         the lock nodes through `inspect()` (the lowest sequence number holds, the others wait) \
         with their owners: **double** counts a client that believes it holds while the server \
         ranks another node first (its own node waiting, or gone while it ran). Restart = SIGKILL of the \
         standalone server and a new JVM on the same data directory (sessions are in its log). \
         **acq. err.**: acquisitions that failed while the server was down or the client cut \
         off (`could not reach zookeeper ...: no available hosts`); a client whose session \
         expired (SIGSTOP or partition past the session timeout) gets a new session on its next \
         `acquire()`, so no error outlasts the fault. A client whose `release()` or `acquire()` \
         meets the server's kill gets a connection error; its session survives the restart (it \
         is in the log) and reconnects, and the node it was deleting, or may have created, is \
         deleted on it in the background, so the lock passes on (docs/zookeeper.md, \"Token, \
         session, loss\").",
    ),
    start,
};

/// A ZooKeeper 3-node ensemble.
pub const SPEC_ENSEMBLE: BackendSpec = BackendSpec {
    label: "zookeeper-ensemble",
    about: "a 3-node ZooKeeper ensemble, session timeout = TTL, follower and leader kill",
    faults: &[Fault::None, Fault::NodeKill, Fault::LeaderKill],
    monotonic_tokens: true,
    no_double_grants: true,
    server_expiry: true,
    crash_slack: Duration::from_millis(2 * TICK.as_millis() as u64),
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "Clients and the observer know all three nodes. node-kill = SIGKILL of a follower, \
         leader-kill = SIGKILL of the node whose `srvr` says `leader`; either comes back after \
         TTL + 1–1.5 s on the same data directory. Clients connected to the killed node move to \
         another within the session timeout or lose their session. A client whose `release()` or \
         `acquire()` meets the kill of its node gets a connection error; its session moves to \
         another node, and the node it was deleting, or may have created, is deleted on it in \
         the background, so the lock passes on.",
    ),
    start: start_ensemble,
};

struct Zk {
    server: ZooKeeper,
}

fn start(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(Zk {
        server: ZooKeeper::start(),
    })
}

fn start_ensemble(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(Zk {
        server: ZooKeeper::start_ensemble(),
    })
}

impl TortureBackend for Zk {
    fn leader(&self) -> Option<usize> {
        if self.server.nodes().len() < 2 {
            return None;
        }
        // After a kill the others may still be electing: wait for one to say it leads.
        let mut leader = None;
        distlock_testkit::wait_until(Duration::from_secs(15), || {
            leader = self
                .server
                .nodes()
                .iter()
                .position(|n| n.mode().as_deref() == Some("leader"));
            leader.is_some()
        });
        leader
    }

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
