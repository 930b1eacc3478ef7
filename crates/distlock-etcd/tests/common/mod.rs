//! Conformance fixture shared by the conformance test binaries of this crate.

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_testkit::etcd::Etcd;

/// A fixture over a started etcd (one server or a cluster).
pub struct EtcdFixture {
    url: String,
    // `Process` is not `Sync`; the fixture only keeps the server alive.
    _server: std::sync::Mutex<Etcd>,
}

impl Fixture for EtcdFixture {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Locks> {
        Box::pin(connect(self.url.clone()))
    }

    /// Deletes the holder's key behind its back, as an operator (or lease expiry) would.
    /// Waiters share the client's session and one watch stream.
    fn waiters_in_one_process(&self) -> usize {
        1000
    }

    fn break_lease<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let locks = self.connect().await;
            assert_eq!(locks.force_release(lease.name()).await.unwrap(), 1);
        })
    }
}

/// Starts etcd with `start` (`Etcd::start` or `Etcd::start_cluster`) for one case.
pub async fn fixture(start: fn() -> Etcd) -> EtcdFixture {
    let server = tokio::task::block_in_place(start);
    EtcdFixture {
        url: server.url(),
        _server: std::sync::Mutex::new(server),
    }
}

pub async fn connect(url: String) -> Locks {
    if std::env::var_os("DISTLOCK_CONFORMANCE_URL").is_some() {
        // In the child holder, libtest has printed "test conformance::child_holder ... "
        // without a newline; end that line so the parent sees the HELD line at its start.
        println!();
    }
    Locks::new(distlock_etcd::connect(&url).await.expect("connect to etcd"))
}
