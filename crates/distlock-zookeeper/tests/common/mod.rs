//! Conformance fixture shared by the conformance test binaries of this crate.
//!
//! One server (or ensemble) serves every case of a test binary (starting JVMs per case would
//! dominate the run); the suite's cases use unique lock names, so they do not disturb each
//! other. A `static` is never dropped, so an exit hook kills it when the test binary ends.

use std::sync::{Mutex, OnceLock};

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_testkit::zookeeper::ZooKeeper;

static SERVER: OnceLock<(String, Mutex<ZooKeeper>)> = OnceLock::new();

extern "C" fn stop_server() {
    if let Some((_, server)) = SERVER.get() {
        let mut server = server.lock().unwrap_or_else(|e| e.into_inner());
        server.shutdown();
    }
}

/// The URL of this binary's one server, started with `start` on first use.
fn server_url(start: fn() -> ZooKeeper) -> String {
    SERVER
        .get_or_init(|| {
            let server = start();
            // SAFETY: registers a plain function with no arguments; atexit has no other
            // preconditions.
            let rc = unsafe { libc::atexit(stop_server) };
            assert_eq!(rc, 0, "atexit");
            // Short sessions: a SIGKILLed holder's nodes go within the suite's bound.
            (
                format!("{}?session_timeout=2s", server.url()),
                Mutex::new(server),
            )
        })
        .0
        .clone()
}

pub struct ZooKeeperFixture {
    url: String,
}

impl Fixture for ZooKeeperFixture {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Locks> {
        Box::pin(connect(self.url.clone()))
    }

    /// Deletes the holder's node behind its back, as an operator would.
    /// Waiters share the client's session.
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

/// A fixture over the binary's shared server, started with `start`
/// (`ZooKeeper::start` or `ZooKeeper::start_ensemble`) on first use.
pub async fn fixture(start: fn() -> ZooKeeper) -> ZooKeeperFixture {
    ZooKeeperFixture {
        url: tokio::task::block_in_place(|| server_url(start)),
    }
}

pub async fn connect(url: String) -> Locks {
    if std::env::var_os("DISTLOCK_CONFORMANCE_URL").is_some() {
        // In the child holder, libtest has printed "test conformance::child_holder ... "
        // without a newline; end that line so the parent sees the HELD line at its start.
        println!();
    }
    Locks::new(
        distlock_zookeeper::connect(&url)
            .await
            .expect("connect to zookeeper"),
    )
}
