//! A held lock: its state machine and the renewal task.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::HeldLock;
use crate::error::{Error, ErrorKind, Result};
use crate::name::LockName;
use crate::options::LockMode;
use crate::telemetry::{self, BackendKeys};
use crate::token::{FencingToken, OwnerId};

/// Where a lease is in its life.
///
/// `Held → Jeopardy → Lost`, `Jeopardy → Held` when a renewal succeeds again, and
/// `Held | Jeopardy → Released`. `Lost` and `Released` are final.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// The lock is held and the last renewal (or the grant) succeeded.
    Held,
    /// A renewal failed or the connection dropped; the lock may still be held until the local
    /// deadline. Finish or checkpoint quickly.
    Jeopardy,
    /// The lease is gone: the local deadline passed, or the backend said the lock is no longer
    /// ours. Stop touching the protected resource.
    Lost,
    /// `release()` gave the lock up.
    Released,
}

impl LeaseState {
    /// Lost or Released: no further transition happens.
    pub fn is_final(self) -> bool {
        matches!(self, LeaseState::Lost | LeaseState::Released)
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseState::Held => "held",
            LeaseState::Jeopardy => "jeopardy",
            LeaseState::Lost => "lost",
            LeaseState::Released => "released",
        })
    }
}

struct SignalShared {
    backend: &'static str,
    state: watch::Sender<LeaseState>,
    reason: StdMutex<Option<String>>,
}

/// The handle through which a backend reports what it sees happen to a held lock.
///
/// Transitions only go forward (see [`LeaseState`]); a call that would go back is ignored,
/// so backends may call these freely from connection tasks.
#[derive(Clone)]
pub struct LeaseSignal {
    shared: Arc<SignalShared>,
}

impl fmt::Debug for LeaseSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseSignal")
            .field("state", &self.state())
            .finish()
    }
}

impl LeaseSignal {
    /// A signal in state `Held`.
    pub fn new(backend: &'static str) -> Self {
        LeaseSignal {
            shared: Arc::new(SignalShared {
                backend,
                state: watch::Sender::new(LeaseState::Held),
                reason: StdMutex::new(None),
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        *self.shared.state.borrow()
    }

    /// The renewal failed or the connection dropped (`Held → Jeopardy`).
    pub fn jeopardy(&self, reason: impl fmt::Display) {
        let changed = self.shared.state.send_if_modified(|state| {
            if *state == LeaseState::Held {
                *state = LeaseState::Jeopardy;
                true
            } else {
                false
            }
        });
        if changed {
            tracing::warn!(backend = self.shared.backend, %reason, "distlock lease in jeopardy");
        }
    }

    /// A renewal succeeded again (`Jeopardy → Held`).
    pub fn recovered(&self) {
        self.shared.state.send_if_modified(|state| {
            if *state == LeaseState::Jeopardy {
                *state = LeaseState::Held;
                true
            } else {
                false
            }
        });
    }

    /// The lock is gone (`Held | Jeopardy → Lost`). The first reason is kept.
    pub fn lost(&self, reason: impl fmt::Display) {
        let reason = reason.to_string();
        let changed = self.shared.state.send_if_modified(|state| {
            if state.is_final() {
                false
            } else {
                *self.shared.reason.lock().unwrap() = Some(reason.clone());
                *state = LeaseState::Lost;
                true
            }
        });
        if changed {
            telemetry::lease_lost(self.shared.backend);
            tracing::warn!(backend = self.shared.backend, %reason, "distlock lease lost");
        }
    }

    fn released(&self) {
        self.shared.state.send_if_modified(|state| {
            if state.is_final() {
                false
            } else {
                *state = LeaseState::Released;
                // Notifying costs a walk over the channel's wakers, on every release, and
                // with no receiver there is nobody to tell: the state is written either way,
                // and a receiver made meanwhile reads it once this write lock is let go.
                self.shared.state.receiver_count() > 0
            }
        });
    }

    fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.shared.state.subscribe()
    }

    fn lost_reason(&self) -> String {
        self.shared
            .reason
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "the lease was lost".to_owned())
    }
}

/// The margin taken off every lease deadline for clock drift between client and server:
/// 1% of the TTL plus 2 ms, as Redlock does.
pub fn drift_margin(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// `base` shortened by up to 10% at random (never below 2 ms), for a waiter's periodic
/// re-check, so waiters woken together do not re-check together.
pub fn recheck_jitter(base: Duration) -> Duration {
    let jitter = rand::random::<f64>() * 0.1;
    base.mul_f64(1.0 - jitter).max(Duration::from_millis(2))
}

struct Inner {
    name: LockName,
    /// The backend's metrics keys, which also name the backend.
    metrics: &'static BackendKeys,
    mode: LockMode,
    owner: OwnerId,
    token: FencingToken,
    ttl: Duration,
    held: Box<dyn HeldLock>,
    signal: LeaseSignal,
    acquired_at: Instant,
    renewal: StdMutex<Renewal>,
    release_gate: tokio::sync::Mutex<()>,
    /// Held by the renewal task while a renewal is in flight, so that `release()` waits for
    /// an in-flight renewal only, not for the renewal task's cancellation on another thread.
    renewing: tokio::sync::Mutex<()>,
}

/// What stopping a lease's renewal found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StoppedRenewal {
    /// It had not started.
    NotStarted,
    /// Its task was running and is cancelled; the scheduler drops it when it next runs.
    Cancelled,
    /// It was stopped before.
    AlreadyStopped,
}

/// Where a lease's renewal is.
enum Renewal {
    /// Not started: the starter starts it when the first renewal comes due.
    Pending(StartKey, Arc<RenewalStarter>),
    Running(JoinHandle<()>),
    /// Stopped, or never to start (no runtime).
    Stopped,
}

impl Inner {
    /// Cancels the renewal; it never starts another renewal.
    fn stop_renewal(&self) -> StoppedRenewal {
        match std::mem::replace(&mut *self.renewal.lock().unwrap(), Renewal::Stopped) {
            Renewal::Pending(key, starter) => {
                starter.forget(key);
                StoppedRenewal::NotStarted
            }
            Renewal::Running(handle) => {
                handle.abort();
                StoppedRenewal::Cancelled
            }
            Renewal::Stopped => StoppedRenewal::AlreadyStopped,
        }
    }

    /// Cancels the renewal and waits until no renewal is in flight. Waiting for the task's
    /// cancellation itself would cost a cross-thread wake-up on every release. A renewal that
    /// never started did not free what the backend keeps for a lost lease (see
    /// [`renew_until_final`]), so that is done here.
    async fn quiesce_renewal(&self) -> StoppedRenewal {
        let stopped = self.stop_renewal();
        if stopped == StoppedRenewal::NotStarted && self.signal.state() == LeaseState::Lost {
            let _ = self.held.release().await;
        }
        drop(self.renewing.lock().await);
        stopped
    }

    /// Starts the renewal task now, unless the renewal was stopped.
    fn begin_renewal(self: &Arc<Self>) {
        let mut renewal = self.renewal.lock().unwrap();
        if matches!(*renewal, Renewal::Pending(..)) {
            *renewal = Renewal::Running(tokio::spawn(renew_until_final(Arc::clone(self))));
        }
    }

    fn lost_error(&self) -> Error {
        Error::new(
            ErrorKind::Lost,
            self.metrics.backend,
            self.signal.lost_reason(),
        )
        .with_lock(&self.name)
    }
}

/// A held lock.
///
/// The lease is renewed in the background at a third of its TTL until [`release`](Self::release)
/// is called. Watch [`lost`](Self::lost) while working: it resolves *before* the lease can have
/// expired on the server, because the local deadline counts from the time each renewal was sent
/// and subtracts a drift margin.
///
/// # Drop
///
/// Dropping a lease without calling `release()` stops its renewal and releases it in the
/// background when a Tokio runtime is available. Without a runtime the backend gives the lock
/// up if it can do so synchronously (the file backend closes its descriptor); otherwise the
/// lock lasts until its TTL runs out on the server.
pub struct Lease {
    inner: Arc<Inner>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.inner.metrics.backend)
            .field("name", &self.inner.name)
            .field("mode", &self.inner.mode)
            .field("owner", &self.inner.owner)
            .field("token", &self.inner.token)
            .field("state", &self.state())
            .finish()
    }
}

impl Lease {
    /// Wraps a lock the backend granted and starts renewing it. Called by [`Locks`](crate::Locks).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        name: LockName,
        metrics: &'static BackendKeys,
        mode: LockMode,
        owner: OwnerId,
        ttl: Duration,
        held: Box<dyn HeldLock>,
        signal: LeaseSignal,
        starter: &Arc<RenewalStarter>,
    ) -> Lease {
        let inner = Arc::new(Inner {
            name,
            metrics,
            mode,
            owner,
            token: held.token(),
            ttl,
            held,
            signal,
            acquired_at: Instant::now(),
            renewal: StdMutex::new(Renewal::Stopped),
            release_gate: tokio::sync::Mutex::new(()),
            renewing: tokio::sync::Mutex::new(()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let due = inner.acquired_at + ttl / 3;
            // Registered under the renewal's lock, so that the starter cannot find the lease
            // due before it is marked pending.
            let mut renewal = inner.renewal.lock().unwrap();
            let key = starter.register(due, Arc::downgrade(&inner));
            *renewal = Renewal::Pending(key, Arc::clone(starter));
        }
        Lease { inner }
    }

    /// The lock name.
    pub fn name(&self) -> &LockName {
        &self.inner.name
    }

    /// The backend holding the lock.
    pub fn backend(&self) -> &'static str {
        self.inner.metrics.backend
    }

    /// How the lock is held.
    pub fn mode(&self) -> LockMode {
        self.inner.mode
    }

    /// This acquisition's owner id.
    pub fn owner(&self) -> OwnerId {
        self.inner.owner
    }

    /// The fencing token: pass it to the protected resource with every write.
    pub fn token(&self) -> FencingToken {
        self.inner.token
    }

    /// The lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.inner.signal.state()
    }

    /// Whether the lock is still ours (`Held` or `Jeopardy`).
    pub fn is_held(&self) -> bool {
        matches!(self.state(), LeaseState::Held | LeaseState::Jeopardy)
    }

    /// A receiver that sees every state transition.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.inner.signal.subscribe()
    }

    /// Returns `Err(Lost)` if the lease has been lost, `Ok(())` while it is held or after release.
    pub fn check(&self) -> Result<()> {
        if self.state() == LeaseState::Lost {
            Err(self.inner.lost_error())
        } else {
            Ok(())
        }
    }

    /// Resolves with a [`Lost`](ErrorKind::Lost) error when the lease is lost. Never resolves if
    /// the lease is released first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the returned future only watches the state, so it can be used in
    /// `tokio::select!` and dropped at any time. It does not borrow the lease.
    pub fn lost(&self) -> impl Future<Output = Error> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        let mut states = inner.signal.subscribe();
        async move {
            loop {
                let state = *states.borrow_and_update();
                match state {
                    LeaseState::Lost => return inner.lost_error(),
                    LeaseState::Released => std::future::pending::<()>().await,
                    LeaseState::Held | LeaseState::Jeopardy => {}
                }
                if states.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Gives the lock up. Renewal is stopped before the backend is asked, so no renewal can
    /// race the release. Idempotent: a second call returns `Ok(())`. The backend only deletes
    /// the lock if this owner still holds it, so a late release never frees a newer holder.
    ///
    /// Returns a [`Lost`](ErrorKind::Lost) error if the lease was lost before it was released.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the lease is left unreleased (renewal may
    /// have been stopped) and dropping the `Lease` releases it in the background.
    pub async fn release(&self) -> Result<()> {
        let _gate = self.inner.release_gate.lock().await;
        match self.state() {
            LeaseState::Released => return Ok(()),
            LeaseState::Lost => {
                self.inner.quiesce_renewal().await;
                return Err(self.inner.lost_error());
            }
            LeaseState::Held | LeaseState::Jeopardy => {}
        }
        let stopped = self.inner.quiesce_renewal().await;
        let mut release = self.inner.held.release();
        let mut yielded = false;
        let result = std::future::poll_fn(|cx| {
            let poll = release.as_mut().poll(cx);
            yielded |= poll.is_pending();
            poll
        })
        .await;
        // A release that never waited (a file lock) has not let the scheduler drop a
        // cancelled renewal task; in a loop that never yields, such tasks would pile up. Only
        // a lease held past its first renewal has one, so short leases never pay for the
        // yield (a poll of the runtime's I/O driver, a system call). After the release, not
        // before: a waiter elsewhere is waiting for it.
        if stopped == StoppedRenewal::Cancelled && !yielded {
            tokio::task::yield_now().await;
        }
        // The state may have moved to Lost while we were releasing; report it.
        self.inner.signal.released();
        telemetry::hold_time(self.inner.metrics, self.inner.acquired_at.elapsed());
        match result {
            Ok(()) if self.state() == LeaseState::Lost => Err(self.inner.lost_error()),
            other => other.map_err(|e| e.with_lock(&self.inner.name)),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.state().is_final() {
            if self.inner.stop_renewal() == StoppedRenewal::NotStarted
                && self.state() == LeaseState::Lost
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                // What the renewal task would have freed (see `renew_until_final`).
                let inner = Arc::clone(&self.inner);
                runtime.spawn(async move {
                    let _ = inner.held.release().await;
                });
            }
            return;
        }
        self.inner.stop_renewal();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            runtime.spawn(async move {
                if let Err(error) = inner.held.release().await {
                    tracing::warn!(backend = inner.metrics.backend, lock = ?inner.name, %error,
                        "distlock background release of a dropped lease failed");
                }
                inner.signal.released();
                telemetry::hold_time(inner.metrics, inner.acquired_at.elapsed());
            });
        }
    }
}

/// Renews every ttl/3, from now (the starter starts it when the first renewal is due), until
/// the lease is released or lost. Never re-acquires: a renewal that finds the lock gone ends
/// the lease.
async fn renew_until_final(inner: Arc<Inner>) {
    let ttl = inner.ttl;
    let period = ttl / 3;
    let retry = (period / 4).max(Duration::from_millis(5));
    let margin = drift_margin(ttl);
    let mut deadline = inner.held.granted_at().map(|sent| sent + ttl - margin);
    let mut states = inner.signal.subscribe();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = sleep_until_deadline(deadline) => {
                inner.signal.lost("the lease deadline passed before a renewal succeeded");
                break;
            }
            _ = states.wait_for(|s| s.is_final()) => break,
        }
        let in_flight = inner.renewing.lock().await;
        let sent = Instant::now();
        let outcome = tokio::select! {
            outcome = inner.held.renew(ttl) => Some(outcome),
            _ = sleep_until_deadline(deadline) => None,
        };
        drop(in_flight);
        match outcome {
            None => {
                inner
                    .signal
                    .lost("the lease deadline passed while a renewal was in flight");
                break;
            }
            Some(Ok(())) => {
                if deadline.is_some() {
                    deadline = Some(sent + ttl - margin);
                }
                inner.signal.recovered();
                next = sent + period;
            }
            Some(Err(error)) if error.is_lost() => {
                inner.signal.lost(error.message());
                break;
            }
            Some(Err(error)) => {
                inner.signal.jeopardy(format!("renewal failed: {error}"));
                next = Instant::now() + retry;
            }
        }
    }
    if inner.signal.state() == LeaseState::Lost {
        // Owner-checked, so harmless if the lock is already someone else's; frees whatever the
        // backend still keeps for us (a file descriptor, a session).
        let _ = inner.held.release().await;
    }
}

/// A lease's place in a [`RenewalStarter`]: when its first renewal is due, and a sequence
/// number that makes the key unique.
type StartKey = (Instant, u64);

/// Starts each lease's renewal task when its first renewal comes due (at a third of its TTL),
/// from one task per [`Locks`](crate::Locks).
///
/// Most leases are released before then. Such a lease costs a map insert and remove here,
/// where a task started at every grant would cost a spawn and a cancellation: on a
/// multi-threaded runtime (the blocking API's) each of those wakes a worker thread, which
/// doubled the blocking API's file-lock cycle.
pub(crate) struct RenewalStarter {
    state: StdMutex<StarterState>,
    wake: tokio::sync::Notify,
    /// [`STARTER_LINGER`], shorter in tests.
    linger: Duration,
}

struct StarterState {
    due: std::collections::BTreeMap<StartKey, std::sync::Weak<Inner>>,
    next_seq: u64,
    /// The starter task, while it runs; it ends once no lease has waited for a while
    /// ([`STARTER_LINGER`]).
    task: Option<JoinHandle<()>>,
    /// When the task wakes next, unless woken earlier.
    wakes_at: Option<Instant>,
}

impl RenewalStarter {
    pub(crate) fn new() -> Arc<RenewalStarter> {
        Self::with_linger(STARTER_LINGER)
    }

    fn with_linger(linger: Duration) -> Arc<RenewalStarter> {
        Arc::new(RenewalStarter {
            state: StdMutex::new(StarterState {
                due: std::collections::BTreeMap::new(),
                next_seq: 0,
                task: None,
                wakes_at: None,
            }),
            wake: tokio::sync::Notify::new(),
            linger,
        })
    }

    /// Has `lease`'s renewal started at `due`. Needs a Tokio runtime, on which the starter
    /// task runs (started here when it does not run).
    fn register(self: &Arc<Self>, due: Instant, lease: std::sync::Weak<Inner>) -> StartKey {
        let mut state = self.state.lock().unwrap();
        let key = (due, state.next_seq);
        state.next_seq += 1;
        state.due.insert(key, lease);
        // A runtime that shut down took the task with it.
        let running = state.task.as_ref().is_some_and(|task| !task.is_finished());
        if !running {
            state.wakes_at = Some(due);
            state.task = Some(tokio::spawn(start_renewals(Arc::clone(self))));
        } else if state.wakes_at.is_none_or(|at| due < at) {
            state.wakes_at = Some(due);
            self.wake.notify_one();
        }
        key
    }

    /// The lease of `key` no longer needs its renewal started.
    fn forget(&self, key: StartKey) {
        self.state.lock().unwrap().due.remove(&key);
    }
}

/// How long the starter task stays once no lease waits for its renewal. A client that takes
/// and releases locks one after another empties the starter's map at every release: were the
/// task to end then, every grant would spawn it anew, and the grant after a release usually
/// comes within this.
const STARTER_LINGER: Duration = Duration::from_secs(5);

/// The starter task: starts the renewals that are due, then sleeps until the next one is due
/// or a sooner one is registered. It ends when it wakes to find no lease waiting and none
/// registered for its linger ([`STARTER_LINGER`]).
async fn start_renewals(starter: Arc<RenewalStarter>) {
    // Registrations seen so far (`next_seq`), and since when none came with none waiting.
    let mut seen = None;
    let mut idle_since = Instant::now();
    loop {
        let (due, next) = {
            let mut state = starter.state.lock().unwrap();
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = state.due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if seen != Some(state.next_seq) {
                seen = Some(state.next_seq);
                idle_since = now;
            }
            let next = match state.due.first_key_value() {
                Some((key, _)) => Some(key.0),
                None => Some(idle_since + starter.linger).filter(|&end| end > now),
            };
            state.wakes_at = next;
            if next.is_none() {
                state.task = None;
            }
            (due, next)
        };
        // Outside the starter's lock: `Inner::stop_renewal` takes the renewal's lock, then
        // this one.
        for lease in due.iter().filter_map(std::sync::Weak::upgrade) {
            lease.begin_renewal();
        }
        let Some(next) = next else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = starter.wake.notified() => {}
        }
    }
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The state machine against a scripted held lock: this tests the core's renewal logic,
    //! not a backend (backends are tested against real servers by the conformance suite).
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

    use super::*;

    const OK: u8 = 0;
    const HANG: u8 = 1;
    const FAIL: u8 = 2;
    const GONE: u8 = 3;

    #[derive(Default)]
    struct Script {
        renew: AtomicU8,
        renewals: AtomicUsize,
        releases: AtomicUsize,
    }

    struct ScriptedHeld(Arc<Script>, Instant);

    impl HeldLock for ScriptedHeld {
        fn token(&self) -> FencingToken {
            FencingToken::new(1)
        }
        fn granted_at(&self) -> Option<Instant> {
            Some(self.1)
        }
        fn renew(&self, _ttl: Duration) -> crate::BoxFuture<'_, Result<()>> {
            let script = Arc::clone(&self.0);
            Box::pin(async move {
                script.renewals.fetch_add(1, Ordering::SeqCst);
                match script.renew.load(Ordering::SeqCst) {
                    OK => Ok(()),
                    HANG => std::future::pending().await,
                    FAIL => Err(Error::new(
                        ErrorKind::Connection,
                        "test",
                        "connection reset",
                    )),
                    _ => Err(Error::new(ErrorKind::Lost, "test", "owned by another")),
                }
            })
        }
        fn release(&self) -> crate::BoxFuture<'_, Result<()>> {
            self.0.releases.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
    }

    fn lease(ttl: Duration) -> (Lease, Arc<Script>) {
        let script = Arc::new(Script::default());
        let held = Box::new(ScriptedHeld(Arc::clone(&script), Instant::now()));
        let name = LockName::new("state-machine", "test").unwrap();
        let lease = Lease::start(
            name,
            telemetry::keys("test"),
            LockMode::Exclusive,
            OwnerId::random(),
            ttl,
            held,
            LeaseSignal::new("test"),
            &RenewalStarter::new(),
        );
        (lease, script)
    }

    async fn wait_for(lease: &Lease, state: LeaseState) {
        let mut states = lease.watch();
        tokio::time::timeout(Duration::from_secs(10), states.wait_for(|s| *s == state))
            .await
            .expect("state reached")
            .unwrap();
    }

    #[tokio::test]
    async fn renewal_failure_is_jeopardy_then_recovers() {
        let (lease, script) = lease(Duration::from_millis(300));
        script.renew.store(FAIL, Ordering::SeqCst);
        wait_for(&lease, LeaseState::Jeopardy).await;
        script.renew.store(OK, Ordering::SeqCst);
        wait_for(&lease, LeaseState::Held).await;
        lease.release().await.unwrap();
        assert_eq!(lease.state(), LeaseState::Released);
    }

    #[tokio::test]
    async fn lost_is_final_and_never_reacquires() {
        let (lease, script) = lease(Duration::from_millis(60));
        script.renew.store(GONE, Ordering::SeqCst);
        let error = lease.lost().await;
        assert!(error.is_lost() && error.to_string().contains("owned by another"));
        let renewals = script.renewals.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            script.renewals.load(Ordering::SeqCst),
            renewals,
            "renewal stopped"
        );
        assert_eq!(lease.state(), LeaseState::Lost);
        assert!(lease.release().await.unwrap_err().is_lost());
        assert_eq!(lease.state(), LeaseState::Lost, "Lost stays final");
    }

    #[tokio::test]
    async fn a_hanging_renewal_is_lost_at_the_deadline() {
        let ttl = Duration::from_millis(150);
        let (lease, script) = lease(ttl);
        script.renew.store(HANG, Ordering::SeqCst);
        let error = tokio::time::timeout(Duration::from_secs(10), lease.lost())
            .await
            .expect("lost at the deadline, not never");
        assert!(error.is_lost(), "{error}");
        assert_eq!(script.renewals.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn release_stops_renewal_and_is_idempotent() {
        let (lease, script) = lease(Duration::from_millis(30));
        tokio::time::sleep(Duration::from_millis(60)).await;
        lease.release().await.unwrap();
        let renewals = script.renewals.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(script.renewals.load(Ordering::SeqCst), renewals);
        lease.release().await.unwrap();
        assert_eq!(script.releases.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn drop_releases_in_the_background() {
        let (lease, script) = lease(Duration::from_secs(30));
        let mut states = lease.watch();
        drop(lease);
        tokio::time::timeout(
            Duration::from_secs(10),
            states.wait_for(|s| *s == LeaseState::Released),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(script.releases.load(Ordering::SeqCst), 1);
    }

    /// Leases waiting for their first renewal share one starter task: none has a task of
    /// its own until its renewal is due.
    #[tokio::test]
    async fn renewals_start_when_due_from_one_task_per_client() {
        let starter = RenewalStarter::new();
        let script = Arc::new(Script::default());
        let ttl = Duration::from_millis(600);
        let leases: Vec<Lease> = (0..3)
            .map(|i| {
                let held = Box::new(ScriptedHeld(Arc::clone(&script), Instant::now()));
                let name = LockName::new(format!("starter {i}"), "test").unwrap();
                let mode = LockMode::Exclusive;
                let signal = LeaseSignal::new("test");
                Lease::start(
                    name,
                    telemetry::keys("test"),
                    mode,
                    OwnerId::random(),
                    ttl,
                    held,
                    signal,
                    &starter,
                )
            })
            .collect();
        let metrics = tokio::runtime::Handle::current().metrics();
        assert_eq!(metrics.num_alive_tasks(), 1, "the starter only");
        assert_eq!(script.renewals.load(Ordering::SeqCst), 0);
        // Due at 200 ms: each lease then has its renewal task, beside the starter.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(script.renewals.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.num_alive_tasks(), 4, "one renewal task per lease");
        for lease in &leases {
            lease.release().await.unwrap();
        }
    }

    /// Leases taken and released one after another are all served by one starter task, which
    /// ends once none has come for its linger; the next lease starts it again.
    #[tokio::test]
    async fn the_starter_task_outlives_a_release_and_ends_when_idle() {
        let linger = Duration::from_millis(300);
        let starter = RenewalStarter::with_linger(linger);
        let script = Arc::new(Script::default());
        let ttl = Duration::from_millis(600);
        let start = || {
            let held = Box::new(ScriptedHeld(Arc::clone(&script), Instant::now()));
            let name = LockName::new("linger", "test").unwrap();
            let signal = LeaseSignal::new("test");
            let owner = OwnerId::random();
            let metrics = telemetry::keys("test");
            Lease::start(
                name,
                metrics,
                LockMode::Exclusive,
                owner,
                ttl,
                held,
                signal,
                &starter,
            )
        };
        let task = |starter: &RenewalStarter| {
            let state = starter.state.lock().unwrap();
            state
                .task
                .as_ref()
                .filter(|t| !t.is_finished())
                .map(|t| t.id())
        };
        let mut first = None;
        for _ in 0..20 {
            // The starter first runs after the release, as when the release waits for a
            // server: it finds no lease waiting.
            start().release().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            let current = task(&starter).expect("the starter stays between leases");
            assert_eq!(*first.get_or_insert(current), current, "one starter task");
        }
        // It sleeps until the first lease's renewal would have been due (a third of the TTL),
        // sees the leases that came meanwhile, then lingers.
        let idle = Instant::now();
        while task(&starter).is_some() {
            assert!(idle.elapsed() < ttl / 3 + 2 * linger + Duration::from_secs(2));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(idle.elapsed() >= linger, "it lingered");
        let lease = start();
        assert!(task(&starter).is_some(), "the next lease starts it again");
        lease.release().await.unwrap();
        assert_eq!(script.renewals.load(Ordering::SeqCst), 0);
    }

    /// A lease lost before its first renewal still has what the backend keeps for it freed,
    /// as the renewal task does for a lease lost later: on release, and on drop.
    #[tokio::test]
    async fn a_lease_lost_before_its_first_renewal_is_freed() {
        let (released, script) = lease(Duration::from_secs(30));
        released.inner.signal.lost("the connection closed");
        assert!(released.release().await.unwrap_err().is_lost());
        assert_eq!(script.releases.load(Ordering::SeqCst), 1);

        let (dropped, script) = lease(Duration::from_secs(30));
        dropped.inner.signal.lost("the connection closed");
        drop(dropped);
        tokio::time::timeout(Duration::from_secs(10), async {
            while script.releases.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("freed in the background");
        assert_eq!(script.renewals.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn drift_margin_is_one_percent_plus_two_ms() {
        assert_eq!(
            drift_margin(Duration::from_secs(10)),
            Duration::from_millis(102)
        );
    }
}
