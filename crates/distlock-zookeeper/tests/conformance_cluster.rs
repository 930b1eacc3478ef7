//! The shared conformance suite against a real 3-node ZooKeeper ensemble, one for all cases.

mod common;

use distlock_core::Locks;
use distlock_testkit::zookeeper::ZooKeeper;

async fn fixture() -> common::ZooKeeperFixture {
    common::fixture(ZooKeeper::start_ensemble).await
}

async fn connect(url: String) -> Locks {
    common::connect(url).await
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
