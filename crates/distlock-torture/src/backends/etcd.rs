//! One etcd member: keys attached to a session lease of TTL (whole seconds), token = the key's
//! create revision. A restart is a SIGKILL followed by a start on the same data directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use distlock_testkit::etcd::Etcd;

use super::{BackendSpec, TortureBackend, hosts};
use crate::faults::Fault;

/// Request timeouts well under a third of the harness's TTLs.
const OPTIONS: &str = "?timeout=500ms&connect_timeout=500ms";

/// etcd.
pub const SPEC: BackendSpec = BackendSpec {
    label: "etcd",
    about: "one etcd member, session lease = TTL, kill + restart",
    faults: &[
        Fault::None,
        Fault::Sigstop,
        Fault::Sigkill,
        Fault::Partition,
        Fault::Restart,
    ],
    // Revisions only grow, across restarts (they are in the WAL).
    monotonic_tokens: true,
    no_double_grants: true,
    server_expiry: true,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "The session lease has the TTL in whole seconds (2 s). The observer lists the keys under \
         the lock's prefix through `inspect()` (the lowest create revision holds, the others \
         wait) with their owners: **double** counts a client that believes it holds while the \
         server ranks another key first (its own key waiting, or gone while it ran). Restart = \
         SIGKILL of the member, then a start on the same \
         data directory; partition = the holder's gRPC connection blackholed by the userspace \
         proxy. **acq. err.**: acquisitions that failed \
         while the member was down or the client cut off (`no answer within 500ms`, a watch \
         broken by the kill); a client whose session lease expired (partition past the TTL) \
         gets a new lease on its next `acquire()`, so no error outlasts the fault.",
    ),
    start,
};

/// A 3-member etcd cluster.
pub const SPEC_CLUSTER: BackendSpec = BackendSpec {
    label: "etcd-cluster",
    about: "a 3-member etcd cluster, session lease = TTL, follower and leader kill",
    faults: &[Fault::None, Fault::NodeKill, Fault::LeaderKill],
    monotonic_tokens: true,
    no_double_grants: true,
    server_expiry: true,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: Some(
        "Clients and the observer know all three members (heartbeat 50 ms, election timeout \
         500 ms). node-kill = SIGKILL of a follower, leader-kill = SIGKILL of the member whose \
         `/metrics` say `etcd_server_is_leader 1`; either comes back after TTL + 1–1.5 s on the \
         same data directory. A new leader extends every lease by its TTL, so a leader kill \
         delays expiry rather than advancing it.",
    ),
    start: start_cluster,
};

struct EtcdBackend {
    server: Etcd,
}

fn start(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(EtcdBackend {
        server: Etcd::start(),
    })
}

fn start_cluster(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(EtcdBackend {
        server: Etcd::start_cluster(),
    })
}

impl TortureBackend for EtcdBackend {
    fn leader(&self) -> Option<usize> {
        if self.server.members().len() < 2 {
            return None;
        }
        // After a kill the others may still be electing: wait for one to say it leads.
        let mut leader = None;
        distlock_testkit::wait_until(Duration::from_secs(15), || {
            leader = self.server.members().iter().position(|m| m.is_leader());
            leader.is_some()
        });
        leader
    }

    fn direct_url(&self) -> String {
        format!("etcd://{}/{OPTIONS}", self.server.hosts())
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        self.server
            .members()
            .iter()
            .map(|m| m.endpoint().parse().expect("127.0.0.1:port"))
            .collect()
    }

    fn url_via(&self, ports: &[u16]) -> String {
        format!("etcd://{}/{OPTIONS}", hosts(ports))
    }

    fn restart(&mut self, node: usize, down_for: Duration) {
        self.server.kill(node);
        std::thread::sleep(down_for);
        self.server.restart(node);
    }
}
