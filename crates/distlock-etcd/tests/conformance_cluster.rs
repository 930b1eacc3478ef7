//! The shared conformance suite against a real 3-member etcd cluster.

mod common;

use distlock_core::Locks;
use distlock_testkit::etcd::Etcd;

async fn fixture() -> common::EtcdFixture {
    common::fixture(Etcd::start_cluster).await
}

async fn connect(url: String) -> Locks {
    common::connect(url).await
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
