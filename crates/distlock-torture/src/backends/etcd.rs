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
    smoke_run: super::NEW_SMOKE_RUN,
    note: Some(
        "The session lease has the TTL in whole seconds (2 s). The observer's `inspect()` ranks \
         the keys by create revision as the lock does (the oldest holds), so **double** can only \
         count keys that are both oldest; the overlaps and the fenced register are the checks \
         that see a second believer. Restart = SIGKILL of the member, then a start on the same \
         data directory; partition = the holder's gRPC connection blackholed by the userspace \
         proxy. **Finding (availability, not safety)**: after a partition longer than the TTL \
         the client's session lease has expired on the server, and every later `acquire()` \
         through the same `connect()` handle fails with `etcdserver: requested lease not \
         found`, until the process connects again: the backend does not grant itself a new \
         session lease (the **acq. err.** of the partition row; reproduce with \
         `distlock-torture scenario --backend etcd --fault partition --duration 10s --seed \
         <the row's seed>` and look for `acquire_error` in \
         `target/torture/etcd-partition/c*.jsonl`).",
    ),
    start,
};

struct EtcdBackend {
    server: Etcd,
}

fn start(_dir: &Path) -> Box<dyn TortureBackend> {
    Box::new(EtcdBackend {
        server: Etcd::start(),
    })
}

impl TortureBackend for EtcdBackend {
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
