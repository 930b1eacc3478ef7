//! The shared conformance suite against a private MariaDB server from the testkit.

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_testkit::mysql::MariaDbServer;
use mysql_async::prelude::Queryable;

struct MyFixture {
    url: String,
    _server: std::sync::Mutex<MariaDbServer>,
}

impl Fixture for MyFixture {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Locks> {
        Box::pin(connect(self.url.clone()))
    }

    /// `KILL <connection id>` of the holder's connection, as an operator would.
    fn break_lease<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = mysql_async::Conn::from_url(&self.url).await.unwrap();
            let owner = lease.owner().to_string();
            // The holder row is written a moment after the grant, by another connection.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let ids = loop {
                let ids: Vec<u64> = conn
                    .exec(
                        "SELECT conn_id FROM distlock_holders WHERE owner = ?",
                        (owner.as_str(),),
                    )
                    .await
                    .unwrap();
                if !ids.is_empty() || std::time::Instant::now() > deadline {
                    break ids;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            };
            assert_eq!(ids.len(), 1, "one holder connection");
            conn.query_drop(format!("KILL {}", ids[0])).await.unwrap();
            conn.disconnect().await.unwrap();
        })
    }
}

async fn fixture() -> MyFixture {
    let server = tokio::task::block_in_place(MariaDbServer::start);
    MyFixture {
        url: server.url(),
        _server: std::sync::Mutex::new(server),
    }
}

async fn connect(url: String) -> Locks {
    distlock_mysql::connect(&url).await.unwrap()
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
