//! Conformance fixture shared by the conformance test binaries of this crate.

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};

/// A fixture over a started server (single, cluster or Redlock masters) at `url`.
pub struct ServerFixture<S> {
    url: String,
    // `Process` is not `Sync`; the fixture only keeps the server alive.
    _server: std::sync::Mutex<S>,
    reports_waiters: bool,
}

impl<S: Send + 'static> ServerFixture<S> {
    /// Keeps `server` alive for the fixture's life; `reports_waiters` is whether the
    /// deployment lists waiters on inspection.
    pub fn new(url: String, server: S, reports_waiters: bool) -> Self {
        ServerFixture {
            url,
            _server: std::sync::Mutex::new(server),
            reports_waiters,
        }
    }
}

impl<S: Send + 'static> Fixture for ServerFixture<S> {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Locks> {
        Box::pin(connect(self.url.clone()))
    }

    /// Deletes the holder's entry behind its back, as an expiry or an operator would.
    fn break_lease<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let locks = self.connect().await;
            assert_eq!(locks.force_release(lease.name()).await.unwrap(), 1);
        })
    }

    fn reports_waiters(&self) -> bool {
        self.reports_waiters
    }

    /// Waiters share the client's connection. Redlock has no queue: every release wakes
    /// every waiter, so its drain is quadratic in their number (docs/redis.md).
    fn waiters_in_one_process(&self) -> usize {
        if self.reports_waiters { 1000 } else { 100 }
    }
}

pub async fn connect(url: String) -> Locks {
    if std::env::var_os("DISTLOCK_CONFORMANCE_URL").is_some() {
        // In the child holder, libtest has printed "test conformance::child_holder ... "
        // without a newline; end that line so the parent sees the HELD line at its start.
        println!();
    }
    Locks::new(
        distlock_redis::connect(&url)
            .await
            .expect("connect to redis"),
    )
}
