//! Local files: fcntl OFD locks in a temp directory. No server, so no partition or restart;
//! no server-side expiry, so a stopped holder keeps the lock (unavailability, not a violation).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{BackendSpec, TortureBackend};
use crate::faults::Fault;

/// The file backend.
pub const SPEC: BackendSpec = BackendSpec {
    label: "file",
    about: "fcntl OFD locks in a temp directory",
    faults: &[Fault::None, Fault::Sigstop, Fault::Sigkill],
    monotonic_tokens: true,
    no_double_grants: true,
    server_expiry: false,
    crash_slack: Duration::ZERO,
    smoke_run: super::SMOKE_RUN,
    note: None,
    start,
};

struct FileBackend {
    dir: PathBuf,
}

fn start(dir: &Path) -> Box<dyn TortureBackend> {
    let dir = dir.join("locks");
    std::fs::create_dir_all(&dir).expect("lock dir");
    Box::new(FileBackend { dir })
}

impl TortureBackend for FileBackend {
    fn direct_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        Vec::new()
    }

    fn url_via(&self, _ports: &[u16]) -> String {
        self.direct_url()
    }

    fn restart(&mut self, _node: usize, _down_for: Duration) {}
}
