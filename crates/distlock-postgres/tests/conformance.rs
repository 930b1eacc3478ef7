//! The shared conformance suite against a private PostgreSQL cluster from the testkit.

use distlock_core::conformance::Fixture;
use distlock_core::{BoxFuture, Lease, Locks};
use distlock_testkit::postgres::PostgresServer;

struct PgFixture {
    url: String,
    _server: std::sync::Mutex<PostgresServer>,
}

impl Fixture for PgFixture {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Locks> {
        Box::pin(connect(self.url.clone()))
    }

    /// Terminates the holder's session, as an operator's `pg_terminate_backend` would. The
    /// session is found by its `application_name`, which names the holder from the grant on.
    fn break_lease<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let owner = lease.owner().to_string();
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
                     FROM pg_stat_activity \
                     WHERE application_name LIKE 'distlock %' \
                     AND split_part(application_name, ' ', 4) = $1",
                    &[&owner],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, i64>(0), 1, "one session terminated");
        })
    }
}

async fn fixture() -> PgFixture {
    let server = tokio::task::block_in_place(PostgresServer::start);
    PgFixture {
        url: server.url(),
        _server: std::sync::Mutex::new(server),
    }
}

async fn connect(url: String) -> Locks {
    distlock_postgres::connect(&url).await.unwrap()
}

distlock_core::conformance_suite!(fixture = fixture, connect = connect);
