//! etcd-specific behaviour against real servers: interop with `etcdctl lock`, lease revocation,
//! fenced transactions, foreign keys, an unreachable server, and a 3-member cluster losing a
//! member.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use distlock_core::{LeaseState, Locks};
use distlock_etcd::etcd_client::{GetOptions, Txn, TxnOp};
use distlock_testkit::Process;
use distlock_testkit::etcd::Etcd;

const SOON: Duration = Duration::from_secs(20);

fn etcdctl_lock(server: &Etcd, name: &str) -> Process {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(server.etcdctl_endpoints())
        .args(["lock", "--ttl", "5", name]);
    Process::spawn("etcdctl lock", command).expect("etcdctl starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_distlock_exclude_each_other() {
    let server = tokio::task::block_in_place(Etcd::start);
    let backend = distlock_etcd::connect(&server.url()).await.unwrap();
    let locks = Locks::new(backend.clone());
    let name = "interop-etcdctl";

    // etcdctl holds: distlock must not get it.
    let mut holder = etcdctl_lock(&server, name);
    // etcdctl prints the key it holds.
    let key = tokio::task::block_in_place(|| holder.wait_for_line(name, SOON));
    let err = locks.mutex(name).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    let info = locks.inspect(name).await.unwrap();
    assert_eq!(
        info.holders.len(),
        1,
        "etcdctl's key is shown as a holder: {info:?}"
    );
    let shown = info.holders[0]
        .owner
        .description
        .clone()
        .unwrap_or_default();
    assert!(
        shown.contains(key.trim()),
        "the holder shown is etcdctl's key {key:?}: {shown:?}"
    );
    // SIGINT: etcdctl closes its session and its key goes.
    holder.signal(2).unwrap();
    let lease = locks.mutex(name).wait(SOON).acquire().await.unwrap();

    // distlock holds: etcdctl must wait until it is released.
    let mut waiter = etcdctl_lock(&server, name);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = locks.inspect(name).await.unwrap();
    assert_eq!(info.waiters.len(), 1, "etcdctl waits: {info:?}");
    assert!(lease.is_held());
    lease.release().await.unwrap();
    tokio::task::block_in_place(|| waiter.wait_for_line(name, SOON));
    waiter.signal(2).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_is_lost_and_fence_stops_writes() {
    let server = tokio::task::block_in_place(Etcd::start);
    let backend = distlock_etcd::connect(&server.url()).await.unwrap();
    let locks = Locks::new(backend.clone());
    let lease = locks
        .mutex("fenced")
        .ttl(Duration::from_secs(3))
        .acquire()
        .await
        .unwrap();
    let fence = backend.fence(&lease).expect("held here");
    assert_eq!(fence.create_revision as u64, lease.token().get());
    assert!(fence.key.starts_with("fenced/"), "{}", fence.key);
    let mut client = backend.client();
    let write = fence.txn([], [TxnOp::put("resource", "first", None)], []);
    assert!(client.txn(write).await.unwrap().succeeded());

    // Revoke the session lease the key carries (its id is the key's last part).
    let lease_hex = fence.key.rsplit('/').next().unwrap();
    let out = tokio::task::block_in_place(|| server.etcdctl(&["lease", "revoke", lease_hex]));
    assert!(out.status.success(), "{out:?}");
    let error = tokio::time::timeout(SOON, lease.lost())
        .await
        .expect("Lost");
    assert!(error.is_lost(), "{error}");
    assert_eq!(lease.state(), LeaseState::Lost);
    let write = fence.txn([], [TxnOp::put("resource", "late", None)], []);
    assert!(!client.txn(write).await.unwrap().succeeded(), "fenced out");
    let value = client.get("resource", None::<GetOptions>).await.unwrap();
    assert_eq!(value.kvs()[0].value(), b"first");

    // The session makes a new lease for later acquisitions.
    let again = locks.mutex("fenced").no_wait().acquire().await.unwrap();
    assert!(again.token() > lease.token());
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_under_the_prefix_are_treated_as_exclusive_holders() {
    let server = tokio::task::block_in_place(Etcd::start);
    let locks = Locks::new(distlock_etcd::connect(&server.url()).await.unwrap());
    let out =
        tokio::task::block_in_place(|| server.etcdctl(&["put", "foreign/by-hand", "{not json"]));
    assert!(out.status.success(), "{out:?}");
    let err = locks
        .mutex("foreign")
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    let err = locks
        .rwlock("foreign")
        .read()
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    let info = locks.inspect("foreign").await.unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert_eq!(info.holders[0].owner.pid, 0);
    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.mutex("foreign").wait(SOON).acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    let out = tokio::task::block_in_place(|| server.etcdctl(&["del", "foreign/by-hand"]));
    assert!(out.status.success(), "{out:?}");
    waiter.await.unwrap().unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_connection_error() {
    let port = distlock_testkit::free_port();
    let url = format!("etcd://user:hunter2@127.0.0.1:{port}/?connect_timeout=1s");
    let err = distlock_etcd::connect(&url).await.unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(err.to_string().contains("etcd"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_survives_losing_one_member_of_three() {
    let mut cluster = tokio::task::block_in_place(Etcd::start_cluster);
    let locks = Locks::new(distlock_etcd::connect(&cluster.url()).await.unwrap());
    let other = Locks::new(distlock_etcd::connect(&cluster.url()).await.unwrap());
    let lease = locks
        .mutex("failover")
        .ttl(Duration::from_secs(3))
        .acquire()
        .await
        .unwrap();
    // Kill the first member: clients may have been talking to it.
    tokio::task::block_in_place(|| cluster.kill(0));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        lease.is_held(),
        "still held after a member died: {:?}",
        lease.state()
    );
    let err = other
        .mutex("failover")
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    lease.release().await.unwrap();
    let next = other.mutex("failover").wait(SOON).acquire().await.unwrap();
    assert!(next.token() > lease.token());
    next.release().await.unwrap();
    tokio::task::block_in_place(|| cluster.restart(0));
}

const CHILD_URL: &str = "DISTLOCK_ETCD_CHILD_URL";
const CHILD_NAME: &str = "DISTLOCK_ETCD_CHILD_NAME";

/// Helper for `a_paused_holder_is_lost_before_another_client_acquires`: run in a child
/// process, holds a lock with a 2 s TTL, prints `HELD <token>`, then `LOST <reason>` when the
/// lease is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run in a child process by a_paused_holder_is_lost_before_another_client_acquires"]
async fn paused_holder_child() {
    let (Ok(url), Ok(name)) = (std::env::var(CHILD_URL), std::env::var(CHILD_NAME)) else {
        panic!("run by a_paused_holder_is_lost_before_another_client_acquires, not directly");
    };
    let locks = Locks::new(distlock_etcd::connect(&url).await.unwrap());
    let lease = locks
        .mutex(&name)
        .ttl(Duration::from_secs(2))
        .acquire()
        .await
        .unwrap();
    // libtest has printed "test ... " without a newline: start a line of our own.
    println!("\nHELD {}", lease.token());
    let error = lease.lost().await;
    println!("\nLOST {error}");
    std::future::pending::<()>().await;
}

/// A holder whose process is frozen (a GC pause, a stopped VM) stops sending keep-alives: etcd
/// lets its lease run out, and only then may another client acquire. When the holder runs
/// again its lease is Lost at once (its local deadline passed during the pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_lost_before_another_client_acquires() {
    let server = tokio::task::block_in_place(Etcd::start);
    let name = "paused-holder";
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "paused_holder_child", "--ignored", "--nocapture"])
        .env(CHILD_URL, server.url())
        .env(CHILD_NAME, name);
    let mut child = Process::spawn("paused holder", command).unwrap();
    let child_token: u64 = tokio::task::block_in_place(|| child.wait_for_line("HELD", SOON))
        .parse()
        .unwrap();
    let locks = Locks::new(distlock_etcd::connect(&server.url()).await.unwrap());
    let err = locks.mutex(name).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "the child holds it: {err}");

    child.pause().unwrap();
    let paused_at = std::time::Instant::now();
    let lease = locks.mutex(name).wait(SOON).acquire().await.unwrap();
    let waited = paused_at.elapsed();
    // Keep-alives go at ttl/3, so etcd still had at least 2/3 of the 2 s TTL left when the
    // child froze: nobody may get the lock before that has run out.
    assert!(
        waited >= Duration::from_millis(1300),
        "acquired {waited:?} after the holder froze, before its lease can have expired"
    );
    assert!(lease.token().get() > child_token);

    child.resume().unwrap();
    let resumed_at = std::time::Instant::now();
    let reason = tokio::task::block_in_place(|| child.wait_for_line("LOST", SOON));
    assert!(
        resumed_at.elapsed() < Duration::from_secs(5),
        "the resumed holder saw Lost only after {:?}",
        resumed_at.elapsed()
    );
    // The local deadline (or etcd, if its answer came first) says so.
    assert!(
        reason.contains("deadline") || reason.contains("expired"),
        "{reason}"
    );
    assert!(lease.is_held(), "the new holder is not disturbed");
    lease.release().await.unwrap();
}

/// User/password authentication: the right password works, a wrong one is refused, and
/// neither appears in errors or `Debug` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_auth() {
    let server = tokio::task::block_in_place(Etcd::start);
    let password = "s3cr3t-pw";
    for args in [
        &["user", "add", "root", "--new-user-password", password][..],
        &["user", "grant-role", "root", "root"][..],
        &["auth", "enable"][..],
    ] {
        let out = tokio::task::block_in_place(|| server.etcdctl(args));
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let hosts = server.hosts();

    let backend = distlock_etcd::connect(&format!("etcd://root:{password}@{hosts}/"))
        .await
        .unwrap();
    assert!(!format!("{backend:?}").contains(password), "{backend:?}");
    let locks = Locks::new(backend);
    let lease = locks.mutex("auth").no_wait().acquire().await.unwrap();
    let err = locks.mutex("auth").no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    lease.release().await.unwrap();

    // Without credentials, or with a wrong password, nothing is granted.
    let anonymous = distlock_etcd::connect(&format!("etcd://{hosts}/")).await;
    if let Ok(backend) = anonymous {
        let err = Locks::new(backend)
            .mutex("auth")
            .no_wait()
            .acquire()
            .await
            .unwrap_err();
        assert!(!err.is_would_block(), "refused, not merely busy: {err}");
    }
    let wrong = "wrong-pw-123";
    let err = distlock_etcd::connect(&format!("etcd://root:{wrong}@{hosts}/"))
        .await
        .unwrap_err();
    for text in [err.to_string(), format!("{err:?}"), format!("{err:#}")] {
        assert!(!text.contains(wrong), "{text}");
        assert!(!text.contains(password), "{text}");
    }
}

/// The session lease is revoked while no lock holds it (as when it expires during a partition
/// longer than its TTL): the next acquisitions on the same handle, several at once, grant one
/// new lease and succeed, with larger tokens; a lease of the old one stays Lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquisitions_after_the_session_lease_is_gone_use_a_new_lease() {
    let server = tokio::task::block_in_place(Etcd::start);
    let backend = distlock_etcd::connect(&server.url()).await.unwrap();
    let locks = Locks::new(backend.clone());
    let ttl = Duration::from_secs(3);
    let first = locks.mutex("new-lease").ttl(ttl).acquire().await.unwrap();
    let held = locks
        .mutex("new-lease-held")
        .ttl(ttl)
        .acquire()
        .await
        .unwrap();
    let key = backend.fence(&first).unwrap().key;
    let old_lease = key.rsplit('/').next().unwrap().to_owned();
    first.release().await.unwrap();

    // Revoke it and acquire at once, before the keep-alive task can notice.
    let out = tokio::task::block_in_place(|| server.etcdctl(&["lease", "revoke", &old_lease]));
    assert!(out.status.success(), "{out:?}");
    let acquisitions: Vec<_> = (0..4)
        .map(|i| {
            let locks = locks.clone();
            tokio::spawn(async move {
                locks
                    .mutex(format!("new-lease-{i}"))
                    .ttl(ttl)
                    .no_wait()
                    .acquire()
                    .await
            })
        })
        .collect();
    let mut leases = Vec::new();
    for acquisition in acquisitions {
        leases.push(acquisition.await.unwrap().expect("acquired on a new lease"));
    }
    let new_leases: std::collections::HashSet<String> = leases
        .iter()
        .map(|l| {
            let key = backend.fence(l).unwrap().key;
            key.rsplit('/').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(new_leases.len(), 1, "one new lease: {new_leases:?}");
    assert!(!new_leases.contains(&old_lease), "not the revoked lease");
    let again = locks
        .mutex("new-lease")
        .ttl(ttl)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert!(again.token() > first.token());

    let error = tokio::time::timeout(SOON, held.lost()).await.expect("Lost");
    assert!(error.is_lost(), "{error}");
    assert_eq!(held.state(), LeaseState::Lost, "never revived");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for lease in leases.iter().chain([&again]) {
        assert_eq!(lease.state(), LeaseState::Held, "kept alive");
    }
    for lease in leases {
        lease.release().await.unwrap();
    }
    again.release().await.unwrap();
}

/// A create sent while etcd restarts can get no answer and still land after the delete that
/// cleans it up, as etcd serves the two concurrently once it is ready (seen in the torture
/// harness: a key left that way lives as long as the session lease and blocks every later
/// waiter). Twenty acquisitions try again and again across a restart; then another client
/// must get every one of those locks within the wait bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_that_land_after_their_cleanup_do_not_block_the_lock() {
    let mut server = tokio::task::block_in_place(Etcd::start);
    let backend = distlock_etcd::connect(&format!("{}?timeout=300ms", server.url()))
        .await
        .unwrap();
    let locks = Locks::new(backend);
    // The session lease first, so that creates are what the restart cuts off.
    drop(locks.mutex("late-create-warm-up").acquire().await.unwrap());
    let names: Vec<String> = (0..20).map(|i| format!("late-create-{i}")).collect();
    let restarted = Arc::new(AtomicBool::new(false));
    let attempts: Vec<_> = names
        .iter()
        .map(|name| {
            let (locks, name, restarted) = (locks.clone(), name.clone(), restarted.clone());
            tokio::spawn(async move {
                let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
                let mut failures = 0;
                while tokio::time::Instant::now() < give_up {
                    let after_restart = restarted.load(Ordering::SeqCst);
                    match locks.mutex(&name).no_wait().acquire().await {
                        Ok(lease) => {
                            lease.release().await.ok();
                            if after_restart {
                                break;
                            }
                        }
                        Err(_) => failures += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                failures
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| server.restart(0));
    restarted.store(true, Ordering::SeqCst);
    let mut failures = 0;
    for attempt in attempts {
        failures += attempt.await.unwrap();
    }
    assert!(failures > 0, "the restart cut off no acquisition");
    let other = Locks::new(distlock_etcd::connect(&server.url()).await.unwrap());
    for name in &names {
        let lease = other
            .mutex(name)
            .wait(Duration::from_secs(10))
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("{name}: a key was left behind: {e}"));
        lease.release().await.unwrap();
    }
    drop(locks);
}

/// A queue longer than one page of a read (1,000 keys) is read whole and in create order:
/// 2,500 foreign keys whose names sort the other way round from their creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_longer_than_a_page_is_read_whole_in_create_order() {
    let server = tokio::task::block_in_place(Etcd::start);
    let backend = distlock_etcd::connect(&server.url()).await.unwrap();
    let prefix = backend.key_prefix("long-queue");
    let mut client = backend.client();
    let count = 2_500;
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        let puts: Vec<_> = batch
            .iter()
            .map(|i| TxnOp::put(format!("{prefix}/{:05}", count - i), "{not json", None))
            .collect();
        client.txn(Txn::new().and_then(puts)).await.unwrap();
    }
    let locks = Locks::new(backend);
    let info = locks.inspect("long-queue").await.unwrap();
    assert_eq!(info.holders.len(), 1, "one holder");
    assert_eq!(info.waiters.len(), count - 1, "every other key waits");
    // Keys put in one transaction share a create revision: the holder is one of the first
    // hundred created, the last waiter one of the last hundred.
    let number = |description: &Option<String>| -> usize {
        let description = description.clone().unwrap_or_default();
        let (_, rest) = description.split_once(&format!("{prefix}/")).unwrap();
        rest[..5].parse().unwrap()
    };
    let first = number(&info.holders[0].owner.description);
    assert!(first > count - 100, "the holder was created first: {first}");
    let last = number(&info.waiters[count - 2].owner.description);
    assert!(last <= 100, "the last waiter was created last: {last}");
    let listed = locks.list("long-").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].waiters.len(), count - 1);
    let err = locks
        .mutex("long-queue")
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
}

/// A waiter whose connection carries nothing but its watch for longer than etcd's gRPC ping
/// policy allows (a ping sooner than `--grpc-keepalive-min-time`, 5 s by default, is a strike;
/// after two strikes with nothing written back, etcd closes the connection) still gets the
/// lock: the client's HTTP/2 pings must respect that policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_outlasts_the_servers_ping_policy() {
    let server = tokio::task::block_in_place(Etcd::start);
    let holder = Locks::new(distlock_etcd::connect(&server.url()).await.unwrap());
    let waiter = Locks::new(distlock_etcd::connect(&server.url()).await.unwrap());
    let lease = holder.mutex("quiet-wait").acquire().await.unwrap();
    let waiting = tokio::spawn(async move {
        waiter
            .mutex("quiet-wait")
            .wait(Duration::from_secs(40))
            .acquire()
            .await
    });
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(!waiting.is_finished(), "{:?}", waiting.await);
    lease.release().await.unwrap();
    waiting
        .await
        .unwrap()
        .expect("granted after the release")
        .release()
        .await
        .unwrap();
}
