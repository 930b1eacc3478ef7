//! The shared conformance suite against a real 3-master Redis Cluster.

mod common;

use distlock_core::Locks;
use distlock_testkit::redis::RedisCluster;

async fn fixture() -> common::ServerFixture<RedisCluster> {
    let cluster = RedisCluster::start();
    common::ServerFixture::new(
        format!("redis+cluster://{}/", cluster.hosts()),
        cluster,
        true,
    )
}

async fn connect(url: String) -> Locks {
    common::connect(url).await
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
