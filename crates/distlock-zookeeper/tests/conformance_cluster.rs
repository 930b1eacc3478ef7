//! The shared conformance suite against a real 3-node ZooKeeper ensemble.
//!
//! One ensemble serves every case of this binary (starting three JVMs per case would dominate
//! the run); the suite's cases use unique lock names, so they do not disturb each other. A
//! `static` is never dropped, so an exit hook kills the ensemble when the test binary ends.

use std::sync::{Mutex, OnceLock};

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_testkit::zookeeper::ZooKeeper;

static ENSEMBLE: OnceLock<(String, Mutex<ZooKeeper>)> = OnceLock::new();

extern "C" fn stop_ensemble() {
    if let Some((_, ensemble)) = ENSEMBLE.get() {
        let mut ensemble = ensemble.lock().unwrap_or_else(|e| e.into_inner());
        ensemble.shutdown();
    }
}

fn ensemble_url() -> String {
    ENSEMBLE
        .get_or_init(|| {
            let ensemble = ZooKeeper::start_ensemble();
            // SAFETY: registers a plain function with no arguments; atexit has no other
            // preconditions.
            let rc = unsafe { libc::atexit(stop_ensemble) };
            assert_eq!(rc, 0, "atexit");
            // Short sessions: a SIGKILLed holder's nodes go within the suite's bound.
            (
                format!("{}?session_timeout=2s", ensemble.url()),
                Mutex::new(ensemble),
            )
        })
        .0
        .clone()
}

struct ClusterFixture {
    url: String,
}

impl Fixture for ClusterFixture {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Locks> {
        Box::pin(connect(self.url.clone()))
    }

    /// Deletes the holder's node behind its back, as an operator would.
    fn break_lease<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let locks = self.connect().await;
            assert_eq!(locks.force_release(lease.name()).await.unwrap(), 1);
        })
    }
}

async fn fixture() -> ClusterFixture {
    ClusterFixture {
        url: tokio::task::block_in_place(ensemble_url),
    }
}

async fn connect(url: String) -> Locks {
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

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
