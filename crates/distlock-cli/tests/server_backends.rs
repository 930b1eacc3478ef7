//! End-to-end tests of the `distlock` binary with `postgres://`, `mysql://` and `redis://` URLs,
//! against private servers started by the testkit: turns and fencing tokens, `status`/`list`
//! (for SQL from the servers' own lock views, including holders that do not use distlock),
//! waiters, and the exit codes and messages of a wrong password, a missing database and an
//! unreachable server.
//!
//! Each test starts its own server; processes are killed by guards even when a test fails.
//! Timing is only asserted as generous upper bounds.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distlock_testkit::mysql::MariaDbServer;
use distlock_testkit::postgres::{PgBouncer, PostgresServer};
use distlock_testkit::redis::RedisServer;
use serde_json::Value;

use common::{Output, Proc, cmd, wait_until};

fn output(url: &str, args: &[&str]) -> Output {
    common::output(cmd(url, args))
}

fn json(url: &str, args: &[&str]) -> Value {
    let out = output(url, args);
    assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} is not JSON ({e}): {out:?}"))
}

/// `distlock run NAME --description DESCRIPTION -- sh -c 'echo $$; exec sleep 60'`, returned once
/// the command runs (so the lock is held).
fn hold(url: &str, name: &str, description: &str) -> Proc {
    hold_with(url, name, &["--description", description])
}

/// `distlock run NAME EXTRA... -- sh -c 'echo $$; exec sleep 60'`, once the command runs.
fn hold_with(url: &str, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["run", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", "echo $$; exec sleep 60"]);
    let mut holder = Proc::spawn(cmd(url, &args));
    let pid: i32 = holder
        .stdout_line()
        .trim()
        .parse()
        .expect("the command prints its pid");
    holder.also_kill.push(pid);
    holder
}

/// Three concurrent `run`s of one name never overlap, and their tokens increase in the order
/// they held the lock.
fn runs_take_turns_with_increasing_tokens(url: &str) {
    let script = "echo start $DISTLOCK_TOKEN $(date +%s%N); sleep 0.3; echo end $(date +%s%N)";
    let runs: Vec<Proc> = (0..3)
        .map(|_| Proc::spawn(cmd(url, ["run", "turns", "--", "sh", "-c", script])))
        .collect();
    let mut intervals = Vec::new();
    for run in runs {
        let out = run.finish();
        assert_eq!(out.code, Some(0), "{out:?}");
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        assert_eq!(words.len(), 5, "{out:?}");
        assert_eq!((words[0], words[3]), ("start", "end"), "{out:?}");
        let token: u64 = words[1].parse().unwrap();
        let start: u128 = words[2].parse().unwrap();
        let end: u128 = words[4].parse().unwrap();
        intervals.push((start, end, token));
    }
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlapped: {intervals:?}");
        assert!(pair[0].2 < pair[1].2, "tokens must increase: {intervals:?}");
    }
}

/// `status --json` and `list --json` show a `distlock run` holder with its pid, token and
/// description, and a holder that does not use distlock (`foreign`, already holding, on
/// backends that have such holders) with owner id 0.
fn status_and_list_show_holders(url: &str, backend: &str, foreign: Option<&str>) {
    let free = json(url, &["status", "jobs/report", "--json"]);
    assert_eq!(free["holders"].as_array().unwrap().len(), 0, "{free}");

    // A short TTL: on Redis a killed holder's lock lasts until its lease runs out.
    let holder = hold_with(
        url,
        "jobs/report",
        &["--description", "nightly report", "--ttl", "3s"],
    );
    // The SQL backends write a holder's record (description, host, pid) a moment after the
    // grant; until then `status` shows the holder from the server's own state.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let info = loop {
        let info = json(url, &["status", "jobs/report", "--json"]);
        let written = info["holders"][0]["description"] == "nightly report";
        if written || std::time::Instant::now() > deadline {
            break info;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(info["backend"], backend, "{info}");
    let holders = info["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{info}");
    let h = &holders[0];
    assert_eq!(h["pid"], holder.pid(), "{info}");
    assert_eq!(h["description"], "nightly report", "{info}");
    assert_eq!(h["mode"], "exclusive", "{info}");
    assert!(h["token"].as_u64().unwrap() >= 1, "{info}");
    assert_eq!(h["owner"].as_str().unwrap().len(), 32, "{info}");
    assert_ne!(h["owner"], "0".repeat(32), "{info}");
    assert!(
        h["expires"].as_str().is_some(),
        "an idle holder's lease expires: {info}"
    );

    let out = output(url, &["status", "jobs/report"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("nightly report"), "{out:?}");
    assert!(out.stdout.contains(&holder.pid().to_string()), "{out:?}");

    let all = json(url, &["list", "--json"]);
    let all = all.as_array().unwrap();
    let report = all
        .iter()
        .find(|i| i["name"] == "jobs/report")
        .unwrap_or_else(|| panic!("list shows the holder: {all:?}"));
    assert_eq!(report["holders"][0]["pid"], holder.pid(), "{report}");
    assert_eq!(report["holders"][0]["token"], h["token"], "{report}");
    assert_eq!(
        report["holders"][0]["description"], "nightly report",
        "{report}"
    );
    if let Some(foreign) = foreign {
        let other = all
            .iter()
            .find(|i| i["name"] == foreign)
            .unwrap_or_else(|| panic!("list shows the holder without distlock: {all:?}"));
        assert_eq!(other["holders"][0]["owner"], "0".repeat(32), "{other}");
        assert_eq!(other["holders"][0]["token"], 0, "{other}");
    }

    let jobs = json(url, &["list", "jobs/", "--json"]);
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jobs/report"], "{jobs}");
    let none = json(url, &["list", "nothing/", "--json"]);
    assert_eq!(none, Value::Array(Vec::new()));

    if let Some(foreign) = foreign {
        let theirs = json(url, &["status", foreign, "--json"]);
        assert_eq!(theirs["holders"][0]["owner"], "0".repeat(32), "{theirs}");
        // distlock and the plain session exclude each other.
        let out = output(url, &["run", foreign, "-n", "--", "true"]);
        assert_eq!(out.code, Some(75), "{out:?}");
    }

    drop(holder);
    wait_until("the killed holder's lock is free", || {
        json(url, &["status", "jobs/report", "--json"])["holders"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let out = output(url, &["run", "jobs/report", "-n", "--", "true"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// A wrong password exits 69 without showing it; so do a missing database (with a message
/// saying so) and a server nobody listens on.
fn connection_errors(
    wrong_password_url: &str,
    secret: &str,
    missing_db_url: &str,
    unreachable: &str,
) {
    for out in wrong_password_exits_69(wrong_password_url, secret) {
        assert!(out.stderr.contains("***"), "{out:?}");
    }
    let out = output(missing_db_url, &["status", "x"]);
    assert_eq!(out.code, Some(69), "{out:?}");
    assert!(out.stderr.contains("does not exist"), "{out:?}");
    assert!(out.stderr.contains("no_such_db"), "{out:?}");
    unreachable_exits_69(unreachable);
}

/// `status` and `run` with a wrong password exit 69 and do not show it; their outputs.
fn wrong_password_exits_69(url: &str, secret: &str) -> Vec<Output> {
    [&["status", "x"][..], &["run", "x", "--", "true"][..]]
        .into_iter()
        .map(|args| {
            let out = output(url, args);
            assert_eq!(out.code, Some(69), "{out:?}");
            assert!(out.stderr.starts_with("distlock: "), "{out:?}");
            assert!(!out.stderr.contains(secret), "{out:?}");
            assert!(!out.stdout.contains(secret), "{out:?}");
            out
        })
        .collect()
}

/// `run` against a server nobody listens on (a URL with the password `hunter22`) exits 69
/// without showing the password.
fn unreachable_exits_69(url: &str) {
    let out = output(url, &["run", "x", "--", "true"]);
    assert_eq!(out.code, Some(69), "{out:?}");
    assert!(!out.stderr.contains("hunter22"), "{out:?}");
}

/// A `psql` session holding `pg_advisory_lock(key)` until dropped.
fn psql_holding(server: &PostgresServer, key: i64) -> Proc {
    let mut psql = Command::new("psql");
    psql.args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["-U", distlock_testkit::postgres::SUPERUSER])
        .args(["-d", distlock_testkit::postgres::DATABASE])
        .args(["-X", "-q", "-A", "-t"])
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn(psql);
    let stdin = proc.stdin.as_mut().unwrap();
    writeln!(stdin, "SELECT pg_advisory_lock({key});").unwrap();
    stdin.flush().unwrap();
    proc
}

/// A `mariadb` client session holding `GET_LOCK(name)` until dropped.
fn mariadb_holding(server: &MariaDbServer, name: &str) -> Proc {
    let mut client = Command::new("mariadb");
    client
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &server.port().to_string()])
        .args(["-u", distlock_testkit::mysql::SUPERUSER])
        .args(["--batch", "--skip-column-names", "--unbuffered"])
        .arg(distlock_testkit::mysql::DATABASE)
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn(client);
    let stdin = proc.stdin.as_mut().unwrap();
    writeln!(stdin, "SELECT GET_LOCK('{name}', 10);").unwrap();
    stdin.flush().unwrap();
    proc
}

#[test]
fn postgres_url_end_to_end() {
    let server = PostgresServer::start();
    let url = server.url();
    runs_take_turns_with_increasing_tokens(&url);

    let _plain = psql_holding(&server, 4242);
    wait_until("psql holds advisory lock 4242", || {
        server.psql_db(
            distlock_testkit::postgres::DATABASE,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted",
        ) == "1"
    });
    status_and_list_show_holders(&url, "postgres", Some("4242"));

    let secret = "Wr0ng-Pa55word-xyzzy";
    connection_errors(
        &server.url_with_password(secret),
        secret,
        &format!("postgres://distlock@127.0.0.1:{}/no_such_db", server.port()),
        &format!(
            "postgres://u:hunter22@127.0.0.1:{}/db?connect_timeout=2",
            distlock_testkit::free_port()
        ),
    );
}

#[test]
fn postgres_transaction_mode_end_to_end() {
    let server = PostgresServer::start();
    let url = format!("{}?distlock_mode=transaction", server.url());
    runs_take_turns_with_increasing_tokens(&url);
    // A holder in transaction mode is visible (from pg_locks) while it runs, and its lock is
    // a transaction-level advisory lock: exclusive against session-mode users of the name.
    let holder = hold(&url, "tx/job", "in a transaction");
    let info = json(&url, &["status", "tx/job", "--json"]);
    assert_tx_holder(&info, &holder);
    let all = json(&url, &["list", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_tx_holder(&all[0], &holder);
    let out = output(&server.url(), &["run", "tx/job", "-n", "--", "true"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    // (Polled: a renewal makes the session briefly `active`.)
    wait_until("the lock lives in an open, idle transaction", || {
        server.psql_db(
            distlock_testkit::postgres::DATABASE,
            "SELECT state FROM pg_stat_activity WHERE pid IN \
             (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
        ) == "idle in transaction"
    });
    drop(holder);
    wait_until("the killed holder's transaction lock is free", || {
        output(&server.url(), &["run", "tx/job", "-n", "--", "true"]).code == Some(0)
    });

    // A holder paused past its TTL is cut off by idle_in_transaction_session_timeout.
    let paused = hold_with(&url, "tx/paused", &["--ttl", "2s"]);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(paused.pid(), libc::SIGSTOP);
    }
    let stopped = Instant::now();
    wait_until("the paused holder's lock is free", || {
        output(&url, &["run", "tx/paused", "-n", "--", "true"]).code == Some(0)
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(2 + 1 + 2),
        "freed after {:?}, ttl 2s",
        stopped.elapsed()
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(paused.pid(), libc::SIGCONT);
    }
    let out = paused.finish();
    assert_eq!(
        out.code,
        Some(74),
        "the resumed holder sees the loss: {out:?}"
    );
}

/// A transaction-mode holder, as `status`/`list` show it: pid, token and owner id from its
/// `application_name`; no description (no holder row).
fn assert_tx_holder(info: &Value, holder: &Proc) {
    let holders = info["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{info}");
    let h = &holders[0];
    assert_eq!(h["pid"], holder.pid(), "{info}");
    assert!(h["token"].as_u64().unwrap() >= 1, "{info}");
    assert_eq!(h["owner"].as_str().unwrap().len(), 32, "{info}");
    assert_ne!(h["owner"], "0".repeat(32), "{info}");
}

/// Transaction mode through PgBouncer's transaction pooling: turns, tokens, exclusion against
/// direct session-mode users, inspection, and a killed holder's lock freed.
#[test]
fn postgres_transaction_mode_through_pgbouncer() {
    assert!(
        PgBouncer::available(),
        "no pgbouncer binary: scripts/install-test-deps installs it (apt-get install pgbouncer)"
    );
    let server = PostgresServer::start();
    let bouncer = PgBouncer::start(&server);
    let url = format!("{}?distlock_mode=transaction", bouncer.url());
    runs_take_turns_with_increasing_tokens(&url);
    let holder = hold(&url, "pgb/job", "through pgbouncer");
    let info = json(&url, &["status", "pgb/job", "--json"]);
    assert_tx_holder(&info, &holder);
    // More clients than the pool has server connections still work while the lease pins one.
    for _ in 0..PgBouncer::POOL_SIZE + 2 {
        let out = output(&url, &["run", "pgb/job", "-n", "--", "true"]);
        assert_eq!(out.code, Some(75), "{out:?}");
    }
    let out = output(&server.url(), &["run", "pgb/job", "-n", "--", "true"]);
    assert_eq!(
        out.code,
        Some(75),
        "a direct session-mode user is excluded: {out:?}"
    );
    let out = output(&url, &["run", "pgb/other", "-n", "--", "true"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    drop(holder);
    wait_until("the killed holder's lock is free", || {
        output(&url, &["run", "pgb/job", "-n", "--", "true"]).code == Some(0)
    });
}

#[test]
fn mysql_url_end_to_end() {
    let server = MariaDbServer::start();
    let url = server.url();
    runs_take_turns_with_increasing_tokens(&url);

    let _plain = mariadb_holding(&server, "plain/lock");
    wait_until("the mariadb client holds plain/lock", || {
        server.sql("SELECT IS_USED_LOCK('plain/lock') IS NOT NULL") == "1"
    });
    status_and_list_show_holders(&url, "mysql", Some("plain/lock"));

    let secret = "Wr0ng-Pa55word-xyzzy";
    connection_errors(
        &server.url_with_password(secret),
        secret,
        &format!("mysql://distlock@127.0.0.1:{}/no_such_db", server.port()),
        &format!(
            "mysql://u:hunter22@127.0.0.1:{}/db",
            distlock_testkit::free_port()
        ),
    );
}

#[test]
fn redis_url_end_to_end() {
    let secret = "Redis-Pa55word-xyzzy";
    let server = RedisServer::start_with(
        distlock_testkit::redis::Persistence::None,
        &["--requirepass", secret],
    );
    let url = format!("redis://:{secret}@127.0.0.1:{}", server.port());
    runs_take_turns_with_increasing_tokens(&url);
    status_and_list_show_holders(&url, "redis", None);

    // A blocked `run` is listed as a waiter, with its pid, until the holder goes.
    let holder = hold_with(&url, "queue/job", &["--ttl", "3s"]);
    let mut waiter = Proc::spawn(cmd(&url, ["run", "queue/job", "--", "echo", "ran"]));
    wait_until("status shows the blocked run as a waiter", || {
        let info = json(&url, &["status", "queue/job", "--json"]);
        info["waiters"]
            .as_array()
            .is_some_and(|w| w.len() == 1 && w[0]["pid"] == waiter.pid())
    });
    let listed = json(&url, &["list", "queue/", "--json"]);
    assert_eq!(listed[0]["waiters"][0]["pid"], waiter.pid(), "{listed}");
    drop(holder);
    assert_eq!(waiter.stdout_line().trim(), "ran");
    let out = waiter.finish();
    assert_eq!(out.code, Some(0), "{out:?}");

    let wrong = format!("redis://:Wr0ng-{secret}@127.0.0.1:{}", server.port());
    wrong_password_exits_69(&wrong, secret);
    unreachable_exits_69(&format!(
        "redis://:hunter22@127.0.0.1:{}",
        distlock_testkit::free_port()
    ));
}
