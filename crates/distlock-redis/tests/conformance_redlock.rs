//! The shared conformance suite against Redlock over 3 independent real redis-servers.

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_testkit::redis::RedisMasters;

struct RedlockFixture {
    url: String,
    // `Process` is not `Sync`; the fixture only keeps the server alive.
    _masters: std::sync::Mutex<RedisMasters>,
}

impl Fixture for RedlockFixture {
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

    /// Redlock has no queue across independent masters: waiters retry and are not listed.
    fn reports_waiters(&self) -> bool {
        false
    }
}

async fn fixture() -> RedlockFixture {
    let masters = RedisMasters::start(3);
    RedlockFixture {
        url: format!("redlock://{}/", masters.hosts()),
        _masters: std::sync::Mutex::new(masters),
    }
}

async fn connect(url: String) -> Locks {
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

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
