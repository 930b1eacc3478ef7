//! The PostgreSQL and MariaDB launchers start real servers that answer, and restart them.

use distlock_testkit::mysql::MariaDbServer;
use distlock_testkit::postgres::PostgresServer;

#[test]
fn postgres_starts_pauses_and_restarts() {
    let mut server = PostgresServer::start();
    assert_eq!(server.psql_db("distlock", "SELECT 40 + 2"), "42");
    server.pause();
    server.resume();
    server.restart();
    assert_eq!(server.psql("SELECT 1"), "1");
    server.kill();
    server.start_again();
    assert_eq!(server.psql("SELECT 1"), "1");
    assert!(server.url().starts_with("postgres://distlock@127.0.0.1:"));
}

#[test]
fn mariadb_starts_and_restarts() {
    let mut server = MariaDbServer::start();
    assert_eq!(server.sql("SELECT 40 + 2"), "42");
    server.restart();
    assert_eq!(server.sql("SELECT 1"), "1");
    server.kill();
    server.start_again();
    assert_eq!(server.sql("SELECT 1"), "1");
}
