//! The shared conformance suite against one real redis-server.

mod common;

use distlock_core::Locks;
use distlock_testkit::redis::RedisServer;

async fn fixture() -> common::ServerFixture<RedisServer> {
    let server = RedisServer::start();
    common::ServerFixture::new(server.url(), server, true)
}

async fn connect(url: String) -> Locks {
    common::connect(url).await
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
