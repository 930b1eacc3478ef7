//! The shared conformance suite against a real standalone ZooKeeper server.

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_testkit::zookeeper::ZooKeeper;

struct SingleFixture {
    url: String,
    // `Process` is not `Sync`; the fixture only keeps the server alive.
    _server: std::sync::Mutex<ZooKeeper>,
}

impl Fixture for SingleFixture {
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

async fn fixture() -> SingleFixture {
    let server = tokio::task::block_in_place(ZooKeeper::start);
    SingleFixture {
        // Short sessions: a SIGKILLed holder's nodes go within the suite's bound.
        url: format!("{}?session_timeout=2s", server.url()),
        _server: std::sync::Mutex::new(server),
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
