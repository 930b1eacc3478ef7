//! The shared conformance suite against Redlock over 3 independent real redis-servers.

mod common;

use distlock_core::Locks;
use distlock_testkit::redis::RedisMasters;

async fn fixture() -> common::ServerFixture<RedisMasters> {
    let masters = RedisMasters::start(3);
    // Redlock has no queue across independent masters: waiters retry and are not listed.
    common::ServerFixture::new(format!("redlock://{}/", masters.hosts()), masters, false)
}

async fn connect(url: String) -> Locks {
    common::connect(url).await
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
