//! The file backend against real files in temporary directories, through the lease API.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use distlock_core::{
    AcquireOptions, AcquireRequest, Backend, ErrorKind, LeaseSignal, LockMode, LockName, Locks,
    OwnerId, OwnerInfo, Wait,
};
use distlock_file::FileBackend;

/// Generous bound for anything that should happen "soon"; never a performance assertion.
const SOON: Duration = Duration::from_secs(20);

fn locks(dir: &Path) -> Locks {
    Locks::new(FileBackend::open(dir).expect("open the lock directory"))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Waits until `check` holds, polling; panics after [`SOON`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + SOON;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn exclusive_excludes_across_two_backends() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    let held = a
        .mutex("orders/42")
        .description("first")
        .acquire()
        .await
        .unwrap();
    let err = b.mutex("orders/42").no_wait().acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    assert_eq!(err.backend(), "file");
    let text = err.to_string();
    assert!(text.contains("orders/42"), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    assert!(text.contains("\"first\""), "{text}");
    // Other names are independent, including ones that encode alike.
    let other = b.mutex("orders%2F42").no_wait().acquire().await.unwrap();
    held.release().await.unwrap();
    held.release().await.unwrap(); // idempotent
    let again = b.mutex("orders/42").no_wait().acquire().await.unwrap();
    assert!(again.token() > held.token());
    again.release().await.unwrap();
    other.release().await.unwrap();
}

#[tokio::test]
async fn hostile_names_are_separate_locks() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let long_a = format!("{}a", "x/".repeat(300));
    let long_b = format!("{}b", "x/".repeat(300));
    let names = [
        ".",
        "..",
        "/",
        "a/b",
        "a%2Fb",
        "%",
        "~",
        "ключ/🔒",
        &long_a,
        &long_b,
    ];
    let mut held = Vec::new();
    for name in names {
        held.push(locks.mutex(name).no_wait().acquire().await.unwrap());
    }
    // Nothing escaped the directory, and every file name is a plain lock file.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let file_name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            file_name.ends_with(".lock") && !file_name.starts_with('.'),
            "{file_name}"
        );
        assert!(file_name.len() <= 255);
    }
    let listed: Vec<String> = locks
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for name in names {
        let err = locks.mutex(name).no_wait().acquire().await.unwrap_err();
        assert!(err.is_would_block(), "{name}: {err}");
    }
    for lease in held {
        lease.release().await.unwrap();
    }
}

#[tokio::test]
async fn shared_holders_coexist_and_exclude_writers() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    let r1 = a.rwlock("config").read().acquire().await.unwrap();
    let r2 = b.rwlock("config").read().no_wait().acquire().await.unwrap();
    assert_ne!(r1.token(), r2.token());
    let err = b
        .rwlock("config")
        .write()
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert!(err.to_string().contains("2 holders"), "{err}");
    let info = a.inspect("config").await.unwrap();
    assert_eq!(info.holders.len(), 2);
    assert!(info.holders.iter().all(|h| h.mode == LockMode::Shared));
    r1.release().await.unwrap();
    assert!(
        b.rwlock("config")
            .write()
            .no_wait()
            .acquire()
            .await
            .is_err()
    );
    r2.release().await.unwrap();
    let w = b
        .rwlock("config")
        .write()
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert!(w.token() > r2.token() && w.token() > r1.token());
    let err = a
        .rwlock("config")
        .read()
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    w.release().await.unwrap();
}

#[tokio::test]
async fn semaphore_limits_and_weighted_permits() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    let one = a.semaphore("gpu", 3).acquire().await.unwrap();
    let two = b.semaphore("gpu", 3).permits(2).acquire().await.unwrap();
    let err = a.semaphore("gpu", 3).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert!(err.to_string().contains("permits"), "{err}");
    let info = a.inspect("gpu").await.unwrap();
    let mut modes: Vec<LockMode> = info.holders.iter().map(|h| h.mode).collect();
    modes.sort_by_key(|m| match m {
        LockMode::Permits { count, .. } => *count,
        _ => 0,
    });
    assert_eq!(
        modes,
        [
            LockMode::Permits { count: 1, limit: 3 },
            LockMode::Permits { count: 2, limit: 3 }
        ]
    );
    // A mutex of the same name excludes permit holders.
    assert!(a.mutex("gpu").no_wait().acquire().await.is_err());

    // A weighted waiter needs two permits: one release is not enough, two are.
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.semaphore("gpu", 3).permits(2).wait(SOON).acquire().await })
    };
    eventually("the weighted waiter shows up", || async {
        a.inspect("gpu").await.unwrap().waiters.len() == 1
    })
    .await;
    one.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "one free permit must not satisfy a request for two"
    );
    two.release().await.unwrap();
    let got = tokio::time::timeout(SOON, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.mode(), LockMode::Permits { count: 2, limit: 3 });
    // One permit is left.
    let last = a.semaphore("gpu", 3).no_wait().acquire().await.unwrap();
    assert!(a.semaphore("gpu", 3).no_wait().acquire().await.is_err());
    got.release().await.unwrap();
    last.release().await.unwrap();
}

#[tokio::test]
async fn large_weighted_requests_and_the_permit_bound() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let big = locks
        .semaphore("big", 50_000)
        .permits(40_000)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    let err = locks
        .semaphore("big", 50_000)
        .permits(20_000)
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    let rest = locks
        .semaphore("big", 50_000)
        .permits(10_000)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert!(
        locks
            .semaphore("big", 50_000)
            .no_wait()
            .acquire()
            .await
            .is_err()
    );
    big.release().await.unwrap();
    rest.release().await.unwrap();
    let err = locks
        .semaphore("huge", distlock_file::MAX_PERMITS + 1)
        .acquire()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn semaphore_waiter_wakes_for_any_released_permit() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            locks
                .semaphore("pool", 3)
                .no_wait()
                .acquire()
                .await
                .unwrap(),
        );
    }
    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.semaphore("pool", 3).wait(SOON).acquire().await })
    };
    eventually("the waiter shows up", || async {
        locks.inspect("pool").await.unwrap().waiters.len() == 1
    })
    .await;
    // Whichever permit frees, the waiter gets it.
    held.remove(1).release().await.unwrap();
    let got = tokio::time::timeout(SOON, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    got.release().await.unwrap();
    for lease in held {
        lease.release().await.unwrap();
    }
}

#[tokio::test]
async fn a_semaphore_waiter_for_every_permit_and_a_dropped_semaphore_wait() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let one = locks.semaphore("s", 3).acquire().await.unwrap();
    let two = locks.semaphore("s", 3).acquire().await.unwrap();
    let three = locks.semaphore("s", 3).acquire().await.unwrap();
    // A weighted wait that gives up: its thread must let go of the gate and of any permit it
    // collected, or the waiter below could never be served.
    let err = locks
        .semaphore("s", 3)
        .permits(2)
        .wait(Duration::from_millis(100))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(locks.inspect("s").await.unwrap().waiters.is_empty());
    one.release().await.unwrap();
    let single = locks.semaphore("s", 3).wait(SOON).acquire().await.unwrap();
    // Now a waiter for all three permits: served only once every holder has left.
    let all = {
        let locks = locks.clone();
        tokio::spawn(async move {
            locks
                .semaphore("s", 3)
                .permits(3)
                .wait(SOON)
                .acquire()
                .await
        })
    };
    eventually("the waiter for every permit shows up", || async {
        locks.inspect("s").await.unwrap().waiters.len() == 1
    })
    .await;
    two.release().await.unwrap();
    three.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!all.is_finished(), "one permit is still held");
    single.release().await.unwrap();
    let all = tokio::time::timeout(SOON, all)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(locks.semaphore("s", 3).no_wait().acquire().await.is_err());
    all.release().await.unwrap();
}

#[tokio::test]
async fn a_waiter_gets_the_lock_when_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    let held = a.mutex("job").acquire().await.unwrap();
    let waiter = tokio::spawn(async move { b.mutex("job").wait(SOON).acquire().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    held.release().await.unwrap();
    let got = tokio::time::timeout(SOON, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(got.token() > held.token());
    got.release().await.unwrap();
}

#[tokio::test]
async fn shared_waiter_gets_the_lock_when_the_writer_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let held = a.rwlock("cfg").write().acquire().await.unwrap();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.rwlock("cfg").read().wait(SOON).acquire().await })
        })
        .collect();
    eventually("three readers wait", || async {
        a.inspect("cfg").await.unwrap().waiters.len() == 3
    })
    .await;
    held.release().await.unwrap();
    let mut tokens = HashSet::new();
    let mut leases = Vec::new();
    for reader in readers {
        let lease = tokio::time::timeout(SOON, reader)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(lease.token() > held.token());
        assert!(tokens.insert(lease.token()));
        leases.push(lease);
    }
    assert_eq!(a.inspect("cfg").await.unwrap().holders.len(), 3);
    for lease in leases {
        lease.release().await.unwrap();
    }
}

#[tokio::test]
async fn a_dropped_wait_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let held = locks.mutex("x").acquire().await.unwrap();
    // Bounded wait runs out: the core drops the backend's future.
    let err = locks
        .mutex("x")
        .wait(Duration::from_millis(50))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // An unbounded wait, aborted.
    let task = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.mutex("x").acquire().await })
    };
    eventually("the second waiter shows up", || async {
        locks.inspect("x").await.unwrap().waiters.len() == 1
    })
    .await;
    task.abort();
    let _ = task.await;
    // The dropped waits no longer show as waiters, though their threads still block.
    let info = locks.inspect("x").await.unwrap();
    assert!(info.waiters.is_empty(), "{info:?}");
    assert_eq!(info.holders.len(), 1);
    held.release().await.unwrap();
    // The abandoned threads may grab the lock for a moment; a short-waiting acquirer gets it.
    let next = locks.mutex("x").wait(SOON).acquire().await.unwrap();
    next.release().await.unwrap();
    eventually("nothing is held", || async {
        match locks.mutex("x").no_wait().acquire().await {
            Ok(lease) => lease.release().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    // Each abandoned thread takes the lock at most once and lets go at once, so the lock ends
    // up free with no waiters listed.
    eventually("the lock is free and nobody waits", || async {
        let info = locks.inspect("x").await.unwrap();
        !info.is_held() && info.waiters.is_empty()
    })
    .await;
}

#[tokio::test]
async fn tokens_increase_over_200_sequential_acquisitions() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    let mut last = 0;
    for i in 0..200 {
        let locks = if i % 2 == 0 { &a } else { &b };
        let lease = match i % 3 {
            0 => locks.mutex("seq").no_wait().acquire().await,
            1 => locks.rwlock("seq").read().no_wait().acquire().await,
            _ => locks.semaphore("seq", 2).no_wait().acquire().await,
        }
        .unwrap();
        assert!(lease.token().get() > last, "acquisition {i}");
        last = lease.token().get();
        lease.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_increase_across_concurrent_acquisitions() {
    let dir = tempfile::tempdir().unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let locks = locks(dir.path());
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..25 {
                let lease = locks.mutex("hot").wait(SOON).acquire().await.unwrap();
                // A deliberately racy read-modify-write that only the lock makes exact.
                let value = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.store(value + 1, Ordering::SeqCst);
                seen.push((lease.token().get(), value));
                lease.release().await.unwrap();
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(counter.load(Ordering::SeqCst), 200);
    all.sort();
    for pair in all.windows(2) {
        assert!(pair[0].0 < pair[1].0, "duplicate token {pair:?}");
        // Token order is grant order: the counter value each holder saw rises with it.
        assert!(
            pair[0].1 < pair[1].1,
            "token order differs from grant order {pair:?}"
        );
    }

    // Concurrent shared holders get distinct tokens too.
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let locks = locks(dir.path());
            tokio::spawn(async move {
                let lease = locks
                    .rwlock("hot")
                    .read()
                    .wait(SOON)
                    .acquire()
                    .await
                    .unwrap();
                let token = lease.token().get();
                lease.release().await.unwrap();
                token
            })
        })
        .collect();
    let mut tokens = HashSet::new();
    for reader in readers {
        let token = reader.await.unwrap();
        assert!(token > all.last().unwrap().0);
        assert!(tokens.insert(token), "duplicate shared token {token}");
    }
}

#[tokio::test]
async fn the_counter_is_seeded_from_the_clock_and_survives_a_wipe() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let before = now_micros();
    let first = locks.mutex("fresh").acquire().await.unwrap();
    let after = now_micros();
    assert!(
        (before..=after + 1).contains(&first.token().get()),
        "{before} <= {} <= {after}",
        first.token()
    );
    first.release().await.unwrap();
    // The counter lives in the file: bytes 8..16, little-endian.
    let path = dir.path().join("fresh.lock");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"DISTLCK1");
    assert_eq!(
        u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
        first.token().get()
    );
    // A wiped directory (tmpfs after a reboot) still never hands out a smaller token.
    std::fs::remove_file(&path).unwrap();
    let second = locks.mutex("fresh").acquire().await.unwrap();
    assert!(second.token() > first.token());
    second.release().await.unwrap();
    // A counter ahead of the clock keeps counting from where it is.
    let mut bytes = std::fs::read(&path).unwrap();
    let ahead = now_micros() + 3_600_000_000;
    bytes[8..16].copy_from_slice(&ahead.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let third = locks.mutex("fresh").acquire().await.unwrap();
    assert_eq!(third.token().get(), ahead + 1);
    third.release().await.unwrap();
}

#[tokio::test]
async fn a_file_with_foreign_content_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let path = dir.path().join("notes.lock");
    std::fs::write(&path, b"my precious data, not a lock").unwrap();
    let err = locks.mutex("notes").acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(
        err.to_string().contains("not a distlock lock file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"my precious data, not a lock"
    );
}

#[tokio::test]
async fn force_release_makes_the_holder_lose_and_frees_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    let held = a
        .mutex("deploy")
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    assert_eq!(b.force_release("deploy").await.unwrap(), 1);
    let lost = tokio::time::timeout(SOON, held.lost()).await.unwrap();
    assert!(lost.is_lost());
    assert!(
        lost.to_string().contains("revoked by force release"),
        "{lost}"
    );
    let next = b.mutex("deploy").wait(SOON).acquire().await.unwrap();
    assert!(next.token() > held.token());
    // The mark named the old owner only: the new holder keeps its lock through renewals.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(next.is_held());
    assert!(held.release().await.unwrap_err().is_lost());
    next.release().await.unwrap();

    // Shared holders are all revoked; a missing lock has nobody to revoke.
    let r1 = a
        .rwlock("cfg")
        .read()
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    let r2 = a
        .rwlock("cfg")
        .read()
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    assert_eq!(b.force_release("cfg").await.unwrap(), 2);
    tokio::time::timeout(SOON, r1.lost()).await.unwrap();
    tokio::time::timeout(SOON, r2.lost()).await.unwrap();
    assert_eq!(b.force_release("never-used").await.unwrap(), 0);
    assert!(!dir.path().join("never-used.lock").exists());
}

#[tokio::test]
async fn deleting_a_held_lock_file_makes_the_lease_lost() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let held = locks
        .mutex("doomed")
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    std::fs::remove_file(dir.path().join("doomed.lock")).unwrap();
    let lost = tokio::time::timeout(SOON, held.lost()).await.unwrap();
    assert!(lost.to_string().contains("deleted"), "{lost}");
}

#[tokio::test]
async fn a_lock_file_deleted_between_acquisitions_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    // Leaves an idle description of the file in `a`'s pool.
    a.mutex("tmpclean")
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    std::fs::remove_file(dir.path().join("tmpclean.lock")).unwrap();
    // `a` must lock the new file, not the deleted one it still has open, or `b` would get a
    // second grant.
    let held = a.mutex("tmpclean").no_wait().acquire().await.unwrap();
    let err = b.mutex("tmpclean").no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    held.release().await.unwrap();
}

#[tokio::test]
async fn inspect_shows_holder_and_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let a = locks(dir.path());
    let b = locks(dir.path());
    assert_eq!(a.inspect("report").await.unwrap().holders.len(), 0);
    assert!(
        !dir.path().join("report.lock").exists(),
        "inspect must not create"
    );
    let held = a
        .mutex("report")
        .description("nightly report")
        .acquire()
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        b.rwlock("report")
            .read()
            .description("reader")
            .wait(SOON)
            .acquire()
            .await
    });
    eventually("the waiter shows up", || async {
        a.inspect("report").await.unwrap().waiters.len() == 1
    })
    .await;
    let info = a.inspect("report").await.unwrap();
    assert_eq!(info.name, "report");
    assert_eq!(info.backend, "file");
    let [holder] = info.holders.as_slice() else {
        panic!("{info:?}")
    };
    assert_eq!(holder.owner.owner, held.owner());
    assert_eq!(holder.owner.pid, std::process::id());
    assert_eq!(holder.owner.host, distlock_core::local_host());
    assert_eq!(holder.owner.description.as_deref(), Some("nightly report"));
    assert_eq!(holder.token, held.token());
    assert_eq!(holder.mode, LockMode::Exclusive);
    assert_eq!(holder.expires, None);
    let waiter = &info.waiters[0];
    assert_eq!(waiter.mode, LockMode::Shared);
    assert_eq!(waiter.owner.description.as_deref(), Some("reader"));
    assert_eq!(waiter.owner.pid, std::process::id());
    held.release().await.unwrap();
    let reader = tokio::time::timeout(SOON, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let info = a.inspect("report").await.unwrap();
    assert!(info.waiters.is_empty());
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].owner.owner, reader.owner());
    assert_eq!(info.holders[0].owner.description.as_deref(), Some("reader"));
    reader.release().await.unwrap();
    let info = a.inspect("report").await.unwrap();
    assert!(!info.is_held() && info.waiters.is_empty(), "{info:?}");
}

#[tokio::test]
async fn list_filters_by_prefix_and_shows_only_busy_locks() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let long = format!("jobs/{}", "z".repeat(400));
    let j1 = locks.mutex("jobs/1").acquire().await.unwrap();
    let j2 = locks.rwlock("jobs/2").read().acquire().await.unwrap();
    let jl = locks.mutex(&long).acquire().await.unwrap();
    let other = locks.mutex("other/1").acquire().await.unwrap();
    let idle = locks.mutex("jobs/idle").acquire().await.unwrap();
    idle.release().await.unwrap();
    // A stray symlink in the directory is skipped, not followed.
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("jobs%2Fevil.lock")).unwrap();

    let names = |infos: Vec<distlock_core::LockInfo>| -> Vec<String> {
        infos.into_iter().map(|i| i.name).collect()
    };
    assert_eq!(
        names(locks.list("jobs/").await.unwrap()),
        ["jobs/1", "jobs/2", long.as_str()]
    );
    assert_eq!(locks.list("").await.unwrap().len(), 4);
    assert_eq!(names(locks.list("other").await.unwrap()), ["other/1"]);
    assert!(locks.list("nothing").await.unwrap().is_empty());
    let listed = locks.list("jobs/2").await.unwrap();
    assert_eq!(listed[0].holders[0].mode, LockMode::Shared);
    j1.release().await.unwrap();
    assert_eq!(
        names(locks.list("jobs/").await.unwrap()),
        ["jobs/2", long.as_str()]
    );
    j2.release().await.unwrap();
    jl.release().await.unwrap();
    other.release().await.unwrap();
    assert!(locks.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_symlinked_lock_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("victim.lock")).unwrap();
    let locks = locks(dir.path());
    let err = locks.mutex("victim").acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert_eq!(err.backend(), "file");
    let text = err.to_string();
    assert!(text.contains("symbolic link"), "{text}");
    assert!(text.contains("victim.lock"), "{text}");
    assert!(text.contains("\"victim\""), "{text}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert!(locks.inspect("victim").await.is_err());
    assert!(locks.force_release("victim").await.is_err());
}

#[test]
fn a_symlinked_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = FileBackend::open(&link).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert_eq!(err.backend(), "file");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(
        err.to_string().contains(&link.display().to_string()),
        "{err}"
    );
    FileBackend::open(&real).unwrap();
}

#[test]
fn a_regular_file_is_not_a_lock_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let err = FileBackend::open(&file).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(err.to_string().contains("plain"), "{err}");
}

#[test]
fn missing_directories_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/locks");
    let backend = FileBackend::open(&nested).unwrap();
    assert_eq!(backend.dir(), nested);
    let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    // Opening again (it exists now) is fine.
    FileBackend::open(&nested).unwrap();
}

#[test]
fn an_unwritable_directory_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root passes permission bits; the symlink and not-a-directory cases cover the rest.
        eprintln!("running as root: permission bits do not apply, skipping the assertion");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("ro");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    let err = FileBackend::open(&locked).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("not writable"), "{err}");
}

#[test]
fn the_default_directory_is_private_to_the_user() {
    let dir = FileBackend::default_dir();
    assert!(dir.is_absolute());
    let backend = FileBackend::open_default().unwrap();
    let meta = std::fs::symlink_metadata(backend.dir()).unwrap();
    assert!(meta.is_dir());
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    assert_eq!(meta.mode() & 0o022, 0);
}

#[test]
fn dropping_a_held_lock_releases_it_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::open(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let request = |wait| {
        let name = LockName::new("no-runtime", "file").unwrap();
        let mut options = AcquireOptions::default();
        options.wait = wait;
        AcquireRequest::new(name, options, OwnerInfo::current(OwnerId::random(), None))
    };
    let first = request(Wait::NoWait);
    let held = runtime
        .block_on(backend.acquire(&first, LeaseSignal::new("file")))
        .unwrap();
    drop(runtime);
    let second = request(Wait::NoWait);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(
        runtime
            .block_on(backend.acquire(&second, LeaseSignal::new("file")))
            .is_err()
    );
    drop(held); // no runtime involved: closes the file description
    let again = runtime
        .block_on(backend.acquire(&second, LeaseSignal::new("file")))
        .unwrap();
    assert!(again.token().get() > 0);
}

/// A python child holding a classic POSIX lock (`lockf`) on `path`, killed on drop.
struct LockfChild(Child);

impl LockfChild {
    fn spawn(path: &Path) -> LockfChild {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import fcntl,os,time,sys\n\
                 fd=os.open(sys.argv[1], os.O_RDWR)\n\
                 fcntl.lockf(fd, fcntl.LOCK_EX)\n\
                 print('locked', flush=True)\n\
                 time.sleep(60)",
            ])
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the lockf interop test");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        LockfChild(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for LockfChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn classic_posix_locks_exclude_distlock() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    // Create the lock file the way distlock does.
    locks
        .mutex("shared-with-c")
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let path = dir.path().join("shared-with-c.lock");
    let child = LockfChild::spawn(&path);
    for builder in [
        locks.mutex("shared-with-c"),
        locks.rwlock("shared-with-c").read(),
        locks.semaphore("shared-with-c", 4),
    ] {
        let err = builder.no_wait().acquire().await.unwrap_err();
        assert!(err.is_would_block(), "{err}");
        let text = err.to_string();
        assert!(text.contains("classic POSIX lock"), "{text}");
        assert!(text.contains(&child.pid().to_string()), "{text}");
    }
    let info = locks.inspect("shared-with-c").await.unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert_eq!(info.holders[0].owner.pid, child.pid());
    assert_eq!(info.holders[0].mode, LockMode::Exclusive);
    assert_eq!(locks.force_release("shared-with-c").await.unwrap(), 0);
    // A waiter is woken by the kernel when the foreign lock goes.
    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.mutex("shared-with-c").wait(SOON).acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    drop(child);
    let lease = tokio::time::timeout(SOON, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    lease.release().await.unwrap();
}

#[tokio::test]
async fn distlock_excludes_classic_posix_locks() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let try_lockf = |path: &Path| {
        Command::new("python3")
            .args([
                "-c",
                "import fcntl,os,sys\n\
                 fd=os.open(sys.argv[1], os.O_RDWR)\n\
                 try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
                 except OSError as e:\n    print('blocked', e.errno); sys.exit(3)\n\
                 print('locked')",
            ])
            .arg(path)
            .output()
            .expect("python3 is needed for the lockf interop test")
    };
    let path = dir.path().join("tool.lock");
    for mode in ["exclusive", "shared", "permits"] {
        let lease = match mode {
            "exclusive" => locks.mutex("tool").acquire().await,
            "shared" => locks.rwlock("tool").read().acquire().await,
            _ => locks.semaphore("tool", 2).acquire().await,
        }
        .unwrap();
        let out = try_lockf(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{mode}: {stdout}");
        assert!(
            stdout.contains(&format!("blocked {}", libc::EAGAIN))
                || stdout.contains(&format!("blocked {}", libc::EACCES)),
            "{mode}: {stdout}"
        );
        lease.release().await.unwrap();
        let out = try_lockf(&path);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn fork_children_neither_keep_nor_steal_the_parents_lock() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::open(dir.path()).unwrap();
    let other = FileBackend::open(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let request = || {
        let mut options = AcquireOptions::default();
        options.wait = Wait::NoWait;
        AcquireRequest::new(
            LockName::new("forked", "file").unwrap(),
            options,
            OwnerInfo::current(OwnerId::random(), None),
        )
    };
    let try_other = |runtime: &tokio::runtime::Runtime| {
        let request = request();
        runtime
            .block_on(other.acquire(&request, LeaseSignal::new("file")))
            .map(drop)
    };
    let first = request();
    let held = runtime
        .block_on(backend.acquire(&first, LeaseSignal::new("file")))
        .unwrap();

    // A child that drops its inherited copy must not release the parent's lock.
    // SAFETY: the child only drops the held lock (close, getpid, an uncontended mutex) and
    // calls _exit; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(held);
        // SAFETY: _exit is async-signal-safe and ends the child at once.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        try_other(&runtime).is_err(),
        "the child's drop released the parent's lock"
    );

    // A child that keeps its copy must not keep the lock alive after the parent releases.
    // SAFETY: the child only sleeps until it is killed.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        loop {
            // SAFETY: pause is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    runtime.block_on(held.release()).unwrap();
    let result = try_other(&runtime);
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
    result.expect("the parent's release must free the lock although the child has a copy");
}

/// A loop of acquire + release that never waits for anything (the file backend answers at
/// once) still lets the runtime drop each lease's cancelled renewal task: they do not pile
/// up on a current-thread runtime.
#[tokio::test(flavor = "current_thread")]
async fn a_tight_cycle_loop_does_not_pile_up_renewal_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let locks = locks(dir.path());
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut most = 0;
    for _ in 0..2000 {
        let lease = locks.mutex("tight").no_wait().acquire().await.unwrap();
        lease.release().await.unwrap();
        most = most.max(metrics.num_alive_tasks());
    }
    // A lease released before its first renewal is due never starts a renewal task, and
    // `Lease::release` yields after cancelling the task of a lease that did renew. With a
    // task started at every grant and no yield,
    // Tokio's cooperative budget alone let about 150 pile up before the runtime ran them.
    assert!(most <= 20, "{most} tasks alive at once");
}
