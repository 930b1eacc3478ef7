//! ZooKeeper-specific behaviour against real servers: an unreachable server, a session that
//! expires while a lock is held, and a 3-node ensemble losing a node.

use std::time::{Duration, Instant};

use distlock_core::{LeaseState, Locks};
use distlock_testkit::Process;
use distlock_testkit::zookeeper::ZooKeeper;

const SOON: Duration = Duration::from_secs(20);

async fn connect(url: &str) -> Locks {
    Locks::new(distlock_zookeeper::connect(url).await.unwrap())
}

/// A server that is down at start is a prompt `Connection` error (the CLI's exit 69), not a
/// hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_connection_error() {
    let (a, b) = (distlock_testkit::free_port(), distlock_testkit::free_port());
    for url in [
        format!("zk://127.0.0.1:{a}/"),
        format!("zk://127.0.0.1:{a},127.0.0.1:{b}/app"),
    ] {
        let started = Instant::now();
        let err = distlock_zookeeper::connect(&url).await.unwrap_err();
        assert!(err.is_connection(), "{err}");
        assert!(err.to_string().contains("zookeeper"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }
}

/// The holder's session expires while it holds a lock (the server is frozen past the session
/// timeout): the holder sees Lost while the server is still frozen, i.e. before anyone else
/// can have acquired; afterwards another client gets the lock with a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_is_lost_before_another_client_acquires() {
    let server = tokio::task::block_in_place(ZooKeeper::start);
    let holder = connect(&format!("{}?session_timeout=1s", server.url())).await;
    let lease = holder.mutex("expiry").acquire().await.unwrap();
    let lost = lease.lost();
    let lost = tokio::spawn(async move {
        let error = lost.await;
        (Instant::now(), error)
    });

    server.pause(0);
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        lost.is_finished(),
        "the holder must see Lost within the 1 s session timeout, while the server is frozen; \
         state {:?}",
        lease.state()
    );
    server.resume(0);
    let resumed_at = Instant::now();
    let (lost_at, error) = lost.await.unwrap();
    assert!(error.is_lost(), "{error}");
    assert!(paused_at < lost_at && lost_at < resumed_at);

    let other = connect(&server.url()).await;
    let next = other.mutex("expiry").wait(SOON).acquire().await.unwrap();
    assert!(lost_at < Instant::now());
    assert!(next.token() > lease.token());
    assert_eq!(lease.state(), LeaseState::Lost);
    assert!(lease.release().await.unwrap_err().is_lost());
    assert!(
        next.is_held(),
        "the late release did not free the new holder"
    );
    next.release().await.unwrap();
}

/// A held lock keeps working when one node of three (the leader: every client is cut off
/// while a new one is elected) is SIGKILLed: still held, still excluding, renewed, and new
/// acquisitions work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_survives_losing_one_node_of_three() {
    let mut ensemble = tokio::task::block_in_place(ZooKeeper::start_ensemble);
    let url = format!("{}?session_timeout=5s", ensemble.url());
    let locks = connect(&url).await;
    let other = connect(&url).await;
    let lease = locks
        .mutex("failover")
        .ttl(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    let leader = ensemble
        .nodes()
        .iter()
        .position(|n| n.mode().as_deref() == Some("leader"))
        .expect("a leader");
    tokio::task::block_in_place(|| ensemble.kill(leader));
    let killed_at = Instant::now();
    // Wait for the survivors to serve again, then for several renewals (ttl/3 each).
    assert!(distlock_testkit::wait_until(SOON, || {
        ensemble.nodes().iter().filter(|n| n.serving()).count() == 2
    }));
    eprintln!(
        "ensemble serves again {:?} after the kill",
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lease.state(), LeaseState::Held, "held and renewed");
    let err = other
        .mutex("failover")
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "still excluding: {err}");
    let fresh = other
        .mutex("failover-fresh")
        .no_wait()
        .acquire()
        .await
        .unwrap();
    fresh.release().await.unwrap();
    lease.release().await.unwrap();
    let next = other.mutex("failover").wait(SOON).acquire().await.unwrap();
    assert!(next.token() > lease.token());
    next.release().await.unwrap();
}

const CHILD_URL: &str = "DISTLOCK_ZK_CHILD_URL";
const CHILD_NAME: &str = "DISTLOCK_ZK_CHILD_NAME";

/// Helper for `a_paused_holder_is_lost_when_it_runs_again`: run in a child process, holds a
/// lock with a 1 s TTL on a 1 s session, prints `HELD <token>`, then `LOST <reason>` when the
/// lease is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run in a child process by a_paused_holder_is_lost_when_it_runs_again"]
async fn paused_holder_child() {
    let (Ok(url), Ok(name)) = (std::env::var(CHILD_URL), std::env::var(CHILD_NAME)) else {
        panic!("run by a_paused_holder_is_lost_when_it_runs_again, not directly");
    };
    let locks = connect(&url).await;
    let lease = locks
        .mutex(&name)
        .ttl(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    // libtest has printed "test ... " without a newline: start a line of our own.
    println!("\nHELD {}", lease.token());
    let error = lease.lost().await;
    println!("\nLOST {error}");
    std::future::pending::<()>().await;
}

/// A holder whose process is frozen (a GC pause, a stopped VM) past its session timeout: the
/// server expires its session and another client acquires only then; when the holder runs
/// again it sees Lost at once (its local deadline passed while it was frozen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_lost_when_it_runs_again() {
    let server = tokio::task::block_in_place(ZooKeeper::start);
    let url = format!("{}?session_timeout=1s", server.url());
    let name = "paused-holder";
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "paused_holder_child", "--ignored", "--nocapture"])
        .env(CHILD_URL, &url)
        .env(CHILD_NAME, name);
    let mut child = distlock_testkit::Process::spawn("paused holder", command).unwrap();
    let child_token: u64 = tokio::task::block_in_place(|| child.wait_for_line("HELD", SOON))
        .parse()
        .unwrap();
    let locks = connect(&server.url()).await;
    let err = locks.mutex(name).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "the child holds it: {err}");

    child.pause().unwrap();
    let paused_at = Instant::now();
    let lease = locks.mutex(name).wait(SOON).acquire().await.unwrap();
    let waited = paused_at.elapsed();
    assert!(lease.token().get() > child_token);
    // Let the frozen holder's TTL pass for sure, then wake it.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(waited)).await;
    child.resume().unwrap();
    let resumed_at = Instant::now();
    let reason = tokio::task::block_in_place(|| child.wait_for_line("LOST", SOON));
    eprintln!(
        "acquired {waited:?} after the freeze; the resumed holder saw Lost after {:?}: {reason}",
        resumed_at.elapsed()
    );
    assert!(
        resumed_at.elapsed() < Duration::from_secs(2),
        "the resumed holder saw Lost only after {:?}",
        resumed_at.elapsed()
    );
    assert!(lease.is_held(), "the new holder is not disturbed");
    lease.release().await.unwrap();
}

/// Compiles `tests/java/CuratorHold.java` into a temp dir; returns it and the classpath to
/// run it with.
fn compile_curator_hold() -> (tempfile::TempDir, String) {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/CuratorHold.java");
    distlock_testkit::zookeeper::compile_curator_program(source.as_ref())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `CuratorHold`: `kind` is `mutex`, `read` or `write`.
fn curator_hold(classpath: &str, hosts: &str, path: &str, hold: Duration, kind: &str) -> Process {
    let mut command = std::process::Command::new("java");
    command
        .arg("-cp")
        .arg(classpath)
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "CuratorHold"])
        .args([hosts, path, &hold.as_millis().to_string(), kind]);
    Process::spawn("curator", command).expect("java starts")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Apache Curator's `InterProcessMutex` (Java) and distlock on the same path exclude each
/// other, both ways round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_interprocess_mutex_and_distlock_exclude_each_other() {
    let (_classes, classpath) = tokio::task::block_in_place(compile_curator_hold);
    let server = tokio::task::block_in_place(ZooKeeper::start);
    let backend = distlock_zookeeper::connect(&server.url()).await.unwrap();
    let name = "curator-interop";
    let path = backend.lock_path(name);
    let locks = Locks::new(backend);

    // distlock holds: Curator queues behind it and gets the lock only after the release.
    let lease = locks.mutex(name).acquire().await.unwrap();
    let mut curator = curator_hold(
        &classpath,
        &server.hosts(),
        &path,
        Duration::from_secs(3),
        "mutex",
    );
    tokio::task::block_in_place(|| curator.wait_for_line("WAITING", SOON));
    let deadline = Instant::now() + SOON;
    loop {
        let info = locks.inspect(name).await.unwrap();
        if info.waiters.len() == 1 {
            assert_eq!(info.holders.len(), 1, "{info:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Curator's node never showed: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_ms = now_ms();
    lease.release().await.unwrap();
    let held_ms: u64 = tokio::task::block_in_place(|| curator.wait_for_line("HELD", SOON))
        .parse()
        .unwrap();
    assert!(
        held_ms >= released_ms,
        "Curator held at {held_ms}, before distlock released at {released_ms}"
    );

    // Curator holds: distlock is excluded until Curator releases.
    let err = locks.mutex(name).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    let info = locks.inspect(name).await.unwrap();
    assert_eq!(
        info.holders.len(),
        1,
        "Curator's node is the holder: {info:?}"
    );
    let next = locks.mutex(name).wait(SOON).acquire().await.unwrap();
    let acquired_ms = now_ms();
    let releasing_ms: u64 =
        tokio::task::block_in_place(|| curator.wait_for_line("RELEASING", SOON))
            .parse()
            .unwrap();
    assert!(
        acquired_ms >= releasing_ms,
        "distlock acquired at {acquired_ms}, before Curator released at {releasing_ms}"
    );
    assert!(next.token() > lease.token());
    next.release().await.unwrap();
    let status = tokio::task::block_in_place(|| curator.wait_exit(SOON));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Curator's `InterProcessReadWriteLock` and distlock's `rwlock` on the same path: a distlock
/// writer excludes a Curator reader, a Curator writer excludes a distlock reader, and readers
/// of both share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_read_write_lock_and_distlock_rwlock_interoperate() {
    let (_classes, classpath) = tokio::task::block_in_place(compile_curator_hold);
    let server = tokio::task::block_in_place(ZooKeeper::start);
    let backend = distlock_zookeeper::connect(&server.url()).await.unwrap();
    let name = "curator-rw-interop";
    let path = backend.lock_path(name);
    let locks = Locks::new(backend);
    let curator =
        |hold: Duration, kind: &str| curator_hold(&classpath, &server.hosts(), &path, hold, kind);

    // distlock writes: Curator's reader queues until the writer releases.
    let writer = locks.rwlock(name).write().acquire().await.unwrap();
    let mut reader = curator(Duration::from_millis(1500), "read");
    tokio::task::block_in_place(|| reader.wait_for_line("WAITING", SOON));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let released_ms = now_ms();
    writer.release().await.unwrap();
    let held_ms: u64 = tokio::task::block_in_place(|| reader.wait_for_line("HELD", SOON))
        .parse()
        .unwrap();
    assert!(
        held_ms >= released_ms,
        "Curator's reader held at {held_ms}, before distlock's writer released at {released_ms}"
    );
    // Curator reads: a distlock reader shares, a distlock writer is excluded.
    let shared = locks.rwlock(name).read().no_wait().acquire().await.unwrap();
    let err = locks
        .rwlock(name)
        .write()
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    shared.release().await.unwrap();
    let status = tokio::task::block_in_place(|| reader.wait_exit(SOON));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // Curator writes: a distlock reader waits until Curator releases.
    let mut writer = curator(Duration::from_secs(2), "write");
    tokio::task::block_in_place(|| writer.wait_for_line("HELD", SOON));
    let err = locks
        .rwlock(name)
        .read()
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    let read = locks
        .rwlock(name)
        .read()
        .wait(SOON)
        .acquire()
        .await
        .unwrap();
    let acquired_ms = now_ms();
    let releasing_ms: u64 = tokio::task::block_in_place(|| writer.wait_for_line("RELEASING", SOON))
        .parse()
        .unwrap();
    assert!(
        acquired_ms >= releasing_ms,
        "distlock's reader acquired at {acquired_ms}, before Curator's writer released at \
         {releasing_ms}"
    );
    read.release().await.unwrap();
    let status = tokio::task::block_in_place(|| writer.wait_exit(SOON));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// After the session of a `connect()` has expired (the server was frozen past the session
/// timeout), the same handle keeps working: the next acquisitions open one new session and
/// succeed, with larger tokens, while the lease of the old session stays Lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquisitions_after_session_expiry_use_a_new_session() {
    let server = tokio::task::block_in_place(ZooKeeper::start);
    let backend = distlock_zookeeper::connect(&format!("{}?session_timeout=1s", server.url()))
        .await
        .unwrap();
    let old_session = backend.client().session().id();
    let locks = Locks::new(backend.clone());
    let lease = locks.mutex("renewed-session").acquire().await.unwrap();

    server.pause(0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.resume(0);
    let error = tokio::time::timeout(SOON, lease.lost())
        .await
        .expect("Lost");
    assert!(error.is_lost(), "{error}");
    // Wait until the client has learnt from the server that its session expired.
    let deadline = Instant::now() + SOON;
    while !backend.client().state().is_terminated() {
        assert!(
            Instant::now() < deadline,
            "the session never expired: {:?}",
            backend.client().state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Several acquisitions at once while the session is being replaced: all succeed, on one
    // new session.
    let acquisitions: Vec<_> = (0..4)
        .map(|i| {
            let locks = locks.clone();
            tokio::spawn(async move {
                let name = if i == 0 {
                    "renewed-session".to_owned()
                } else {
                    format!("renewed-session-{i}")
                };
                locks.mutex(&name).wait(SOON).acquire().await
            })
        })
        .collect();
    let mut leases = Vec::new();
    for acquisition in acquisitions {
        leases.push(
            acquisition
                .await
                .unwrap()
                .expect("acquired on a new session"),
        );
    }
    let new_session = backend.client().session().id();
    assert_ne!(new_session, old_session);
    assert!(leases[0].token() > lease.token());
    assert_eq!(lease.state(), LeaseState::Lost, "the old lease stays Lost");
    assert!(lease.release().await.unwrap_err().is_lost());
    for next in &leases {
        assert!(next.is_held());
    }
    let info = locks.inspect("renewed-session").await.unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert_eq!(info.holders[0].token, leases[0].token());
    for next in leases {
        next.release().await.unwrap();
    }
    assert_eq!(
        backend.client().session().id(),
        new_session,
        "replaced once"
    );
}

/// The client port of the node this process has a connection to, among `ports` (one client
/// of the ensemble in this process: the holder's session), from `/proc/self/net/tcp`.
fn connected_node(ports: &[u16]) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/self/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // rem_address is `IP:PORT` in hex; state 01 is ESTABLISHED.
        let port = u16::from_str_radix(fields.get(2)?.split(':').nth(1)?, 16).ok()?;
        (fields.get(3) == Some(&"01"))
            .then(|| ports.iter().position(|&p| p == port))
            .flatten()
    })
}

/// A release whose delete meets a dead node (frozen: the request is sent and never answered)
/// fails, and the session moves to another node and lives on; the delete is retried on it,
/// so another client gets the lock while the holder's session lives on.
/// Without the retry the lock node would keep the lock until that process ended. The holder
/// knows only the two followers, so the frozen node is never the leader and no election
/// cuts off the other client, which knows only the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_cut_off_by_a_frozen_node_still_frees_the_lock() {
    let ensemble = tokio::task::block_in_place(ZooKeeper::start_ensemble);
    let nodes = ensemble.nodes();
    let leader = nodes
        .iter()
        .position(|n| n.mode().as_deref() == Some("leader"))
        .expect("a leader");
    let followers: Vec<String> = (0..nodes.len())
        .filter(|&i| i != leader)
        .map(|i| nodes[i].address())
        .collect();
    let backend =
        distlock_zookeeper::connect(&format!("zk://{}/?session_timeout=5s", followers.join(",")))
            .await
            .unwrap();
    let session = backend.client().session().id();
    let holder = Locks::new(backend.clone());
    let lease = holder.mutex("cut-release").acquire().await.unwrap();
    let ports: Vec<u16> = nodes
        .iter()
        .map(|n| n.address().rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let node = connected_node(&ports).expect("the holder's connection");
    assert_ne!(node, leader);
    let other = connect(&format!("zk://{}/", nodes[leader].address())).await;

    ensemble.pause(node);
    let error = lease
        .release()
        .await
        .expect_err("the delete met a frozen node");
    assert!(error.is_connection(), "{error}");
    let next = other
        .mutex("cut-release")
        .wait(SOON)
        .acquire()
        .await
        .expect("the released lock is free while the holder's session lives");
    assert!(next.token() > lease.token());
    // The holder's session (and so its ephemeral nodes) lived on: only the delete freed it.
    let client = backend.client();
    assert_eq!(client.session().id(), session);
    assert!(!client.state().is_terminated(), "{:?}", client.state());
    next.release().await.unwrap();
    ensemble.resume(node);
}
