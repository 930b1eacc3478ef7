//! The conformance suite: one set of behavioural tests that every backend runs against a real
//! server (DESIGN §7).
//!
//! A backend crate instantiates it in an integration test, at the root of the test file:
//!
//! ```ignore
//! async fn fixture() -> MyFixture { /* start a server, return a Fixture */ }
//! async fn connect(url: String) -> distlock_core::Locks { /* a client for `url` */ }
//! distlock_core::conformance_suite!(fixture = fixture, connect = connect);
//! ```
//!
//! This expands to one `#[test]` per case in a module named `conformance`, plus one ignored
//! helper test, `conformance::child_holder`, which the SIGKILL case runs in a child process
//! (the test binary re-executes itself) to hold a lock that the parent then kills.
//!
//! Cases assert order and outcomes, never timings, except for bounds with generous slack.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{BoxFuture, ErrorKind, Lease, LeaseState, Locks, MAX_NAME_BYTES, local_host};

/// What a backend's test provides to the suite.
pub trait Fixture: Send + Sync + 'static {
    /// A URL that the `connect` function given to [`conformance_suite!`](crate::conformance_suite)
    /// turns into a client of the same server (used by child processes).
    fn url(&self) -> String;

    /// A new, independent client of the backend under test.
    fn connect(&self) -> BoxFuture<'_, Locks>;

    /// Makes the backend drop `lease` behind its holder's back: kill its connection or session,
    /// delete its key, or revoke it. The holder must then see `Lost`.
    fn break_lease<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()>;

    /// Whether inspection reports waiters on this backend.
    fn reports_waiters(&self) -> bool {
        true
    }

    /// How many tasks of one client wait for one lock in `many_waiters_in_one_process`.
    /// Backends whose waiters share the client's connections raise it to the thousands;
    /// those that wait inside a server session per waiter keep it under the server's
    /// connection limit.
    fn waiters_in_one_process(&self) -> usize {
        8
    }
}

/// Generous bound for outcomes that should happen "soon"; never a performance assertion.
const SOON: Duration = Duration::from_secs(20);

/// Environment variables of the child-holder protocol.
const CHILD_URL: &str = "DISTLOCK_CONFORMANCE_URL";
const CHILD_NAME: &str = "DISTLOCK_CONFORMANCE_NAME";
const CHILD_TTL_MS: &str = "DISTLOCK_CONFORMANCE_TTL_MS";
const CHILD_HELD: &str = "DISTLOCK-CONFORMANCE-HELD";

/// A lock name unique to this run and case, so cases can share one server.
pub fn unique_name(case: &str) -> String {
    format!("conformance/{case}/{:016x}", rand::random::<u64>())
}

/// Runs `future` on a fresh multi-threaded runtime (used by the generated tests).
pub fn block_on<F: std::future::Future<Output = ()>>(future: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future);
}

/// The body of the ignored `conformance::child_holder` test: when the parent set the
/// child-holder variables, acquire the named lock, print its token and hold it until killed.
pub async fn child_holder<F, Fut>(connect: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Locks>,
{
    let (Ok(url), Ok(name), Ok(ttl_ms)) = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_NAME),
        std::env::var(CHILD_TTL_MS),
    ) else {
        panic!("child_holder is run by the sigkill_holder case, not directly");
    };
    let locks = connect(url).await;
    let lease = locks
        .mutex(&name)
        .ttl(Duration::from_millis(ttl_ms.parse().expect("ttl ms")))
        .wait(SOON)
        .acquire()
        .await
        .expect("child holder acquires");
    // libtest has printed "test ... " without a newline: start a line of our own.
    println!("\n{CHILD_HELD} {}", lease.token());
    std::future::pending::<()>().await;
}

/// N concurrent acquirers guard a deliberately racy read-modify-write; the count must be exact
/// and the tokens seen inside the critical section strictly increasing.
pub async fn racy_counter(fixture: &dyn Fixture) {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 25;
    let name = unique_name("racy_counter");
    let counter = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let locks = fixture.connect().await;
        let (name, counter, tokens) = (name.clone(), counter.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let lease = locks.mutex(&name).wait(SOON).acquire().await.unwrap();
                tokens.lock().unwrap().push(lease.token());
                let seen = counter.load(Ordering::SeqCst);
                // Let other tasks run between the read and the write: without mutual
                // exclusion this loses updates.
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.store(seen + 1, Ordering::SeqCst);
                lease.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        counter.load(Ordering::SeqCst),
        TASKS * ROUNDS,
        "lost updates"
    );
    let tokens = tokens.lock().unwrap();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must strictly increase in grant order: {tokens:?}"
    );
}

/// Successive acquisitions from different clients get strictly increasing tokens.
pub async fn tokens_increase(fixture: &dyn Fixture) {
    let name = unique_name("tokens_increase");
    let clients = [fixture.connect().await, fixture.connect().await];
    let mut last = None;
    for round in 0..20 {
        let lease = clients[round % 2]
            .mutex(&name)
            .no_wait()
            .acquire()
            .await
            .unwrap();
        if let Some(last) = last {
            assert!(lease.token() > last, "{} after {last}", lease.token());
        }
        last = Some(lease.token());
        lease.release().await.unwrap();
    }
}

/// `no_wait()` on a held lock fails with WouldBlock, naming the lock, from another client and
/// from the same client.
pub async fn no_wait_conflict(fixture: &dyn Fixture) {
    let name = unique_name("no_wait_conflict");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let held = a.mutex(&name).acquire().await.unwrap();
    for client in [&b, &a] {
        let err = client.mutex(&name).no_wait().acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
        assert!(err.is_not_acquired() && err.is_retryable());
        assert!(
            err.to_string().contains(&name),
            "error names the lock: {err}"
        );
    }
    held.release().await.unwrap();
    b.mutex(&name).no_wait().acquire().await.unwrap();
}

/// A bounded wait on a held lock fails with Timeout, no earlier than the bound.
pub async fn wait_bound_times_out(fixture: &dyn Fixture) {
    let name = unique_name("wait_bound");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let _held = a.mutex(&name).acquire().await.unwrap();
    let started = Instant::now();
    let bound = Duration::from_millis(300);
    let err = b.mutex(&name).wait(bound).acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_timeout());
    assert!(started.elapsed() >= bound, "gave up before the bound");
}

/// A waiter gets the lock once the holder releases it, with a larger token.
pub async fn waiter_acquires_after_release(fixture: &dyn Fixture) {
    let name = unique_name("waiter");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let held = a.mutex(&name).acquire().await.unwrap();
    let first = held.token();
    let waiter = {
        let name = name.clone();
        tokio::spawn(async move { b.mutex(&name).wait(SOON).acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter must wait while the lock is held"
    );
    held.release().await.unwrap();
    let lease = waiter.await.unwrap().unwrap();
    assert!(lease.token() > first);
    lease.release().await.unwrap();
}

/// `release()` is idempotent and only ever releases its own acquisition.
pub async fn release_is_idempotent_and_owner_checked(fixture: &dyn Fixture) {
    let name = unique_name("release");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let first = a.mutex(&name).acquire().await.unwrap();
    first.release().await.unwrap();
    first.release().await.unwrap();
    assert_eq!(first.state(), LeaseState::Released);
    let second = b.mutex(&name).no_wait().acquire().await.unwrap();
    // A late release of the first acquisition must not free the second.
    first.release().await.unwrap();
    let err = a.mutex(&name).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert!(second.is_held());
    second.release().await.unwrap();
}

/// When the backend drops a lease behind the holder's back, the holder sees `Lost` (through
/// `lost()`, `state()` and `check()`), a new holder can acquire, and the old holder's release
/// does not free the new holder.
pub async fn broken_lease_is_lost(fixture: &dyn Fixture) {
    let name = unique_name("broken");
    let ttl = Duration::from_millis(900);
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let lease = a.mutex(&name).ttl(ttl).acquire().await.unwrap();
    let lost = lease.lost();
    fixture.break_lease(&lease).await;
    let error = tokio::time::timeout(SOON, lost)
        .await
        .expect("the holder must see Lost");
    assert!(error.is_lost(), "{error}");
    assert_eq!(lease.state(), LeaseState::Lost);
    assert!(lease.check().unwrap_err().is_lost());
    let next = b.mutex(&name).ttl(ttl).wait(SOON).acquire().await.unwrap();
    assert!(next.token() > lease.token());
    let late = lease.release().await;
    assert!(
        late.is_err_and(|e| e.is_lost()),
        "release of a lost lease reports Lost"
    );
    let err = a.mutex(&name).no_wait().acquire().await.unwrap_err();
    assert!(
        err.is_would_block(),
        "the new holder must still hold it: {err}"
    );
    next.release().await.unwrap();
}

/// A lease is renewed while held: after several TTLs it is still held and still excludes.
pub async fn renewal_keeps_the_lock(fixture: &dyn Fixture) {
    let name = unique_name("renewal");
    let ttl = Duration::from_millis(400);
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let lease = a.mutex(&name).ttl(ttl).acquire().await.unwrap();
    tokio::time::sleep(ttl * 5).await;
    assert_eq!(lease.state(), LeaseState::Held);
    let err = b.mutex(&name).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    lease.release().await.unwrap();
}

/// A holder in another process killed with SIGKILL frees the lock within ttl + 1 s (plus
/// slack for a loaded CI machine).
pub async fn sigkill_holder_frees_the_lock(fixture: &dyn Fixture) {
    let name = unique_name("sigkill");
    let ttl = Duration::from_secs(2);
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "conformance::child_holder",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD_URL, fixture.url())
        .env(CHILD_NAME, &name)
        .env(CHILD_TTL_MS, ttl.as_millis().to_string());
    let mut child = distlock_testkit::Process::spawn("child holder", command).unwrap();
    let child_token: u64 = tokio::task::block_in_place(|| child.wait_for_line(CHILD_HELD, SOON))
        .parse()
        .expect("token");
    let locks = fixture.connect().await;
    let err = locks.mutex(&name).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "the child holds it: {err}");
    child.kill();
    let bound = ttl + Duration::from_secs(1) + Duration::from_secs(2);
    let lease = locks
        .mutex(&name)
        .wait(bound)
        .acquire()
        .await
        .expect("a SIGKILLed holder's lock must be free within ttl + 1 s (+2 s slack)");
    assert!(lease.token().get() > child_token);
    lease.release().await.unwrap();
}

/// Dropping a waiting `acquire()` leaves nothing held or queued.
pub async fn dropped_acquire_leaks_nothing(fixture: &dyn Fixture) {
    let name = unique_name("dropped_acquire");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let held = a.mutex(&name).acquire().await.unwrap();
    for _ in 0..3 {
        let attempt = b.mutex(&name).acquire();
        assert!(
            tokio::time::timeout(Duration::from_millis(150), attempt)
                .await
                .is_err()
        );
    }
    held.release().await.unwrap();
    let lease = b.mutex(&name).wait(SOON).acquire().await.unwrap();
    lease.release().await.unwrap();
    assert_eventually_idle(&a, &name).await;
}

/// An acquire dropped right after its first poll (its first request sent, no reply read)
/// leaves nothing behind that blocks another client or this one.
pub async fn acquire_dropped_after_first_poll_leaks_nothing(fixture: &dyn Fixture) {
    use std::future::Future;

    let name = unique_name("dropped_first_poll");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    // Connections up, so a first poll gets as far as the backend's first request.
    a.mutex(&name)
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    for _ in 0..5 {
        let mut attempt = Box::pin(a.mutex(&name).acquire());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(result) = attempt.as_mut().poll(&mut cx) {
            // Granted on the first poll (a local backend): give it back.
            result.unwrap().release().await.unwrap();
        }
        drop(attempt);
        let lease = b.mutex(&name).wait(SOON).acquire().await.unwrap();
        lease.release().await.unwrap();
    }
    let lease = a.mutex(&name).wait(SOON).acquire().await.unwrap();
    lease.release().await.unwrap();
    assert_eventually_idle(&a, &name).await;
}

/// Dropping a lease without `release()` gives the lock up well before its TTL.
pub async fn dropped_lease_is_released(fixture: &dyn Fixture) {
    let name = unique_name("dropped_lease");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    let lease = a
        .mutex(&name)
        .ttl(Duration::from_secs(300))
        .acquire()
        .await
        .unwrap();
    drop(lease);
    let next = b.mutex(&name).wait(SOON).acquire().await.unwrap();
    next.release().await.unwrap();
}

async fn assert_eventually_idle(locks: &Locks, name: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        let info = locks.inspect(name).await.unwrap();
        if info.holders.is_empty() && info.waiters.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Unicode, `/`, punctuation and names at the length limit work and never collide; invalid
/// names fail with InvalidName naming the rule.
pub async fn names(fixture: &dyn Fixture) {
    let locks = fixture.connect().await;
    let base = unique_name("names");
    let long_a = format!(
        "{base}/{}",
        "é".repeat((MAX_NAME_BYTES - base.len() - 2) / 2)
    );
    let mut long_b = long_a.clone();
    long_b.pop();
    long_b.push('è');
    let mut names: Vec<String> = [
        "a/b",
        "a%2Fb",
        "a_b",
        "A/B",
        "a/b/",
        "a//b",
        "..",
        ".",
        "/",
        "ключ/🔒",
        "{tag}",
        "}{",
        "with space",
        "tab\\t",
        "a:b",
        "*",
        "?",
        "'quote\"",
        "%",
        "~",
    ]
    .iter()
    .map(|suffix| format!("{base}/{suffix}"))
    .collect();
    names.push(long_a);
    names.push(long_b);
    let distinct: BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len());
    // Held all at once: any two names that mapped to one key would conflict.
    let mut leases = Vec::new();
    for name in &names {
        assert!(name.len() <= MAX_NAME_BYTES, "{}", name.len());
        let lease = locks
            .mutex(name)
            .no_wait()
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let info = locks.inspect(name).await.unwrap();
        assert_eq!(info.name, *name);
        assert_eq!(info.holders.len(), 1, "{name:?}: {info:?}");
        assert_eq!(info.holders[0].token, lease.token());
        leases.push(lease);
    }
    for lease in leases {
        lease.release().await.unwrap();
    }
    let too_long = "x".repeat(MAX_NAME_BYTES + 1);
    for bad in ["", "a\0b", "line\nbreak", "esc\u{1b}[0m", too_long.as_str()] {
        let err = locks.mutex(bad).no_wait().acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad:?}: {err}");
        assert!(
            err.to_string().contains("a lock name must"),
            "names the rule: {err}"
        );
        assert!(!err.to_string().contains('\u{1b}'), "escaped: {err}");
    }
}

/// Out-of-range options fail with Config before anything is acquired.
pub async fn invalid_options(fixture: &dyn Fixture) {
    let locks = fixture.connect().await;
    let name = unique_name("options");
    for ttl in [Duration::ZERO, Duration::from_millis(5)] {
        let err = locks.mutex(&name).ttl(ttl).acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    if locks.capabilities().semaphore {
        let err = locks.semaphore(&name, 0).acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let err = locks
            .semaphore(&name, 3)
            .permits(4)
            .acquire()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    let err = locks.mutex(&name).permits(2).acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "permits on a mutex: {err}");
    let info = locks.inspect(&name).await.unwrap();
    assert!(!info.is_held(), "nothing acquired: {info:?}");
}

/// Readers share, writers exclude both; or Unsupported naming the backend.
pub async fn rwlock(fixture: &dyn Fixture) {
    let name = unique_name("rwlock");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    if !a.capabilities().shared {
        let err = a.rwlock(&name).read().acquire().await.unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert!(err.to_string().contains(a.backend_name()), "{err}");
        return;
    }
    let r1 = a.rwlock(&name).read().no_wait().acquire().await.unwrap();
    let r2 = b.rwlock(&name).read().no_wait().acquire().await.unwrap();
    assert_ne!(r1.token(), r2.token());
    let err = b
        .rwlock(&name)
        .write()
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    let info = a.inspect(&name).await.unwrap();
    assert_eq!(info.holders.len(), 2, "{info:?}");
    r1.release().await.unwrap();
    r2.release().await.unwrap();
    let w = b.rwlock(&name).write().no_wait().acquire().await.unwrap();
    let err = a
        .rwlock(&name)
        .read()
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert!(w.token() > r2.token().max(r1.token()));
    w.release().await.unwrap();
}

/// A semaphore admits `limit` permits, counts weighted acquisitions, and frees permits on
/// release; or Unsupported naming the backend.
pub async fn semaphore(fixture: &dyn Fixture) {
    let name = unique_name("semaphore");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    if !a.capabilities().semaphore {
        let err = a.semaphore(&name, 3).acquire().await.unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        return;
    }
    let mut held = Vec::new();
    for client in [&a, &b, &a] {
        held.push(
            client
                .semaphore(&name, 3)
                .no_wait()
                .acquire()
                .await
                .unwrap(),
        );
    }
    let err = b.semaphore(&name, 3).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert_eq!(a.inspect(&name).await.unwrap().holders.len(), 3);
    held.pop().unwrap().release().await.unwrap();
    let err = b
        .semaphore(&name, 3)
        .permits(2)
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "two permits while one is free: {err}");
    held.pop().unwrap().release().await.unwrap();
    let two = b
        .semaphore(&name, 3)
        .permits(2)
        .wait(SOON)
        .acquire()
        .await
        .unwrap();
    let err = a.semaphore(&name, 3).no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "1 + 2 of 3 permits are taken: {err}");
    two.release().await.unwrap();
    held.pop().unwrap().release().await.unwrap();
}

/// With priorities, the highest waiting priority is served first; without, Unsupported.
pub async fn priority(fixture: &dyn Fixture) {
    let name = unique_name("priority");
    let a = fixture.connect().await;
    if !a.capabilities().priority {
        let err = a.mutex(&name).priority(5).acquire().await.unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert!(err.to_string().contains(a.backend_name()), "{err}");
        // Priority 0 is the default and always accepted.
        a.mutex(&name)
            .priority(0)
            .no_wait()
            .acquire()
            .await
            .unwrap();
        return;
    }
    let held = a.mutex(&name).acquire().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for priority in [1, 10] {
        let client = fixture.connect().await;
        let (name, order) = (name.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let lease = client
                .mutex(&name)
                .priority(priority)
                .wait(SOON)
                .acquire()
                .await
                .unwrap();
            order.lock().unwrap().push(priority);
            lease.release().await.unwrap();
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    held.release().await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![10, 1]);
}

/// `acquire_all` is all-or-nothing and deadlock-free for overlapping sets in any order.
pub async fn acquire_all(fixture: &dyn Fixture) {
    let base = unique_name("acquire_all");
    let [a, b, c] = ["a", "b", "c"].map(|s| format!("{base}/{s}"));
    let locks = fixture.connect().await;
    let other = fixture.connect().await;
    let held_b = other.mutex(&b).acquire().await.unwrap();
    let err = locks
        .acquire_all_with(
            [&c, &a, &b],
            crate::AcquireOptions {
                wait: crate::Wait::NoWait,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    for free in [&a, &c] {
        let lease = other.mutex(free).no_wait().acquire().await;
        assert!(lease.is_ok(), "{free} must not be left held");
    }
    held_b.release().await.unwrap();
    let all = locks.acquire_all([&c, &a, &b, &a]).await.unwrap();
    let names: Vec<_> = all.iter().map(|l| l.name().to_string()).collect();
    assert_eq!(
        names,
        vec![a.clone(), b.clone(), c.clone()],
        "sorted, de-duplicated"
    );
    for lease in all {
        lease.release().await.unwrap();
    }
    // Opposite orders, concurrently: sorting makes deadlock impossible.
    let mut tasks = Vec::new();
    for order in [[a.clone(), c.clone()], [c.clone(), a.clone()]] {
        let client = fixture.connect().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let leases = client.acquire_all(order.iter()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                for lease in leases {
                    lease.release().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(SOON, task)
            .await
            .expect("no deadlock")
            .unwrap();
    }
}

/// Many tasks of one client wait for one lock: each gets it exactly once, never two at a
/// time, with tokens strictly increasing in grant order, and nothing is left behind.
pub async fn many_waiters_in_one_process(fixture: &dyn Fixture) {
    let name = unique_name("many_waiters");
    let count = fixture.waiters_in_one_process();
    let locks = fixture.connect().await;
    let held = locks.mutex(&name).acquire().await.unwrap();
    let inside = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (locks, name) = (locks.clone(), name.clone());
        let (inside, tokens) = (inside.clone(), tokens.clone());
        tasks.spawn(async move {
            let lease = locks.mutex(&name).wait_forever().acquire().await.unwrap();
            assert_eq!(
                inside.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            tokens.lock().unwrap().push(lease.token());
            tokio::task::yield_now().await;
            inside.fetch_sub(1, Ordering::SeqCst);
            lease.release().await.unwrap();
        });
    }
    if fixture.reports_waiters() {
        let deadline = Instant::now() + SOON * 3;
        loop {
            let queued = locks.inspect(&name).await.unwrap().waiters.len();
            if queued == count {
                break;
            }
            if let Some(finished) = tasks.try_join_next() {
                finished.unwrap();
                panic!("a waiter finished while the lock was held");
            }
            assert!(
                Instant::now() < deadline,
                "{queued} of {count} waiters queued"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    held.release().await.unwrap();
    while let Some(finished) = tasks.join_next().await {
        finished.unwrap();
    }
    let tokens = std::mem::take(&mut *tokens.lock().unwrap());
    assert_eq!(tokens.len(), count);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must strictly increase in grant order"
    );
    assert_eventually_idle(&locks, &name).await;
}

/// Inspection shows the holder (owner, host, pid, token, description) and a waiter.
pub async fn inspect_shows_holders_and_waiters(fixture: &dyn Fixture) {
    let name = unique_name("inspect");
    let a = fixture.connect().await;
    let b = fixture.connect().await;
    assert!(!a.inspect(&name).await.unwrap().is_held());
    let lease = a
        .mutex(&name)
        .description("conformance holder")
        .acquire()
        .await
        .unwrap();
    let info = a.inspect(&name).await.unwrap();
    assert_eq!(info.backend, a.backend_name());
    let [holder] = info.holders.as_slice() else {
        panic!("one holder expected: {info:?}");
    };
    assert_eq!(holder.owner.owner, lease.owner());
    assert_eq!(holder.owner.pid, std::process::id());
    assert_eq!(holder.owner.host, local_host());
    assert_eq!(
        holder.owner.description.as_deref(),
        Some("conformance holder")
    );
    assert_eq!(holder.token, lease.token());
    let listed = a.list(&name).await.unwrap();
    assert!(
        listed.iter().any(|l| l.name == name),
        "list shows it: {listed:?}"
    );
    if fixture.reports_waiters() {
        let waiter = {
            let name = name.clone();
            tokio::spawn(async move {
                let lease = b
                    .mutex(&name)
                    .description("conformance waiter")
                    .wait(SOON)
                    .acquire()
                    .await;
                lease.unwrap().release().await.unwrap();
            })
        };
        let deadline = Instant::now() + SOON;
        loop {
            let info = a.inspect(&name).await.unwrap();
            if let [w] = info.waiters.as_slice() {
                assert_eq!(w.owner.description.as_deref(), Some("conformance waiter"));
                break;
            }
            assert!(Instant::now() < deadline, "waiter never shown: {info:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lease.release().await.unwrap();
        waiter.await.unwrap();
    } else {
        lease.release().await.unwrap();
    }
    assert_eventually_idle(&a, &name).await;
}

/// Expands to the conformance tests for one backend. See the [module docs](self).
#[macro_export]
macro_rules! conformance_suite {
    (fixture = $fixture:ident, connect = $connect:ident $(,)?) => {
        mod conformance {
            $crate::conformance_suite!(@cases $fixture;
                racy_counter,
                tokens_increase,
                no_wait_conflict,
                wait_bound_times_out,
                waiter_acquires_after_release,
                release_is_idempotent_and_owner_checked,
                broken_lease_is_lost,
                renewal_keeps_the_lock,
                sigkill_holder_frees_the_lock,
                dropped_acquire_leaks_nothing,
                acquire_dropped_after_first_poll_leaks_nothing,
                dropped_lease_is_released,
                names,
                invalid_options,
                rwlock,
                semaphore,
                priority,
                acquire_all,
                inspect_shows_holders_and_waiters,
                many_waiters_in_one_process,
            );

            #[test]
            #[ignore = "helper: run in a child process by sigkill_holder_frees_the_lock"]
            fn child_holder() {
                $crate::conformance::block_on($crate::conformance::child_holder(
                    |url: String| async move { super::$connect(url).await },
                ));
            }
        }
    };
    (@cases $fixture:ident; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::block_on(async {
                    let fixture = super::$fixture().await;
                    $crate::conformance::$case(&fixture).await;
                });
            }
        )*
    };
}
