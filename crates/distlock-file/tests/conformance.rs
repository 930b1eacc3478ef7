//! The shared conformance suite, run against real lock files in a temporary directory.

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_file::FileBackend;

struct FileFixture {
    dir: tempfile::TempDir,
}

impl Fixture for FileFixture {
    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    fn connect(&self) -> BoxFuture<'_, Locks> {
        Box::pin(async move { Locks::new(FileBackend::open(self.dir.path()).unwrap()) })
    }

    /// A file lock has no server to drop it; an operator's forced release revokes it, and the
    /// holder must then see `Lost`.
    fn break_lease<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let locks = self.connect().await;
            let revoked = locks.force_release(lease.name()).await.unwrap();
            assert_eq!(revoked, 1);
        })
    }
}

async fn fixture() -> FileFixture {
    FileFixture {
        dir: tempfile::tempdir().unwrap(),
    }
}

async fn connect(url: String) -> Locks {
    let dir = url.strip_prefix("file://").expect("file URL");
    Locks::new(FileBackend::open(dir).unwrap())
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
