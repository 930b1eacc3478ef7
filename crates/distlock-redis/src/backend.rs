//! The `Backend` implementation: acquisition with queued waiting and hand-off, Redlock,
//! held locks, inspection.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distlock_core::{
    AcquireRequest, Backend, BoxFuture, Capabilities, Error, ErrorKind, FencingToken, HeldLock,
    Holder, LeaseSignal, LockInfo, LockMode, LockName, OwnerId, OwnerInfo, Result, Wait, Waiter,
    drift_margin, recheck_jitter,
};
use futures_util::future::join_all;
use redis::{PushInfo, PushKind, RedisError, Value};
use tokio::sync::Notify;

use crate::BACKEND;
use crate::config::{RedisConfig, Topology};
use crate::conn::{Conn, PushSink, ScriptCall, map_error};
use crate::keys::{self, LockKeys, Suffix};
use crate::scripts::scripts;

/// The longest a waiter sleeps between two checks of the lock (it also refreshes its queue
/// entry then): a lost notification costs at most this long, or the holder's remaining TTL.
const MAX_RECHECK: Duration = Duration::from_secs(1);

/// A lock service on Redis: one server, a Redis Cluster, or Redlock over independent masters.
///
/// Built by [`connect`](crate::connect) or [`RedisBackend::connect`]; wrap it in
/// [`Locks`](distlock_core::Locks). One backend holds one multiplexed connection per node,
/// shared by every lock, renewal and waiter of the process that uses it, and receives its
/// hand-off notifications on that same connection (RESP3 push messages), so 10,000 waiting
/// tasks still use one connection per node.
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.shared.config)
            .finish()
    }
}

struct HeldEntry {
    signal: LeaseSignal,
    ttl: Duration,
    keys: Arc<LockKeys>,
}

/// Where the notification dispatcher reaches one waiting acquisition.
#[derive(Default)]
struct WaiterSlot {
    /// Woken by a hand-off, a watched release, or a closed connection.
    notify: Notify,
    /// The token of a hand-off to this waiter, taken from its notification.
    handed_off: StdMutex<Option<u64>>,
}

pub(crate) struct Shared {
    config: RedisConfig,
    nodes: Vec<Conn>,
    /// The acquire script's `waiter ttl|channel`, the constant end of its waiting argument.
    waiting_tail: String,
    waiters: StdMutex<HashMap<u128, Arc<WaiterSlot>>>,
    held: StdMutex<HashMap<u128, HeldEntry>>,
}

impl RedisBackend {
    /// Connects with explicit options: opens one connection per node, subscribes it to this
    /// backend's notification channel and checks that the user may run scripts.
    ///
    /// Errors: [`ErrorKind::Connection`] when a node cannot be reached (quickly, bounded by
    /// the connect timeout), [`ErrorKind::Backend`] naming the missing permission when the
    /// user may not run EVAL/EVALSHA. No message contains the password.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is held until it returns; dropped connections close.
    pub async fn connect(config: RedisConfig) -> Result<RedisBackend> {
        let channel = format!("distlock:notify:{:032x}", rand::random::<u128>());
        let sink = PushSink::default();
        let nodes = crate::conn::connect(&config, &channel, &sink).await?;
        let waiting_tail = format!("{}|{channel}", config.waiter_ttl.as_millis());
        let shared = Arc::new(Shared {
            config,
            nodes,
            waiting_tail,
            waiters: StdMutex::new(HashMap::new()),
            held: StdMutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&shared);
        let handle = move |node, push| {
            if let Some(shared) = weak.upgrade() {
                shared.on_push(node, push);
            }
        };
        // The sink is new and set only here.
        let _ = sink.set(Box::new(handle));
        Ok(RedisBackend { shared })
    }

    /// The options this backend was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }
}

impl Shared {
    /// Routes a push message: a hand-off notification wakes its waiter; a closed connection
    /// puts every lease held through it in jeopardy and wakes every waiter to re-check.
    fn on_push(self: &Arc<Self>, node: usize, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                let payload = push.data.get(1).and_then(|v| match v {
                    Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
                    Value::SimpleString(s) => Some(s.as_str()),
                    _ => None,
                });
                // `owner:token` for a hand-off, `owner` for a watched release (Redlock).
                let Some((owner, token)) = payload.and_then(parse_notification) else {
                    return;
                };
                if let Some(slot) = self.waiters.lock().unwrap().get(&owner) {
                    if token.is_some() {
                        *slot.handed_off.lock().unwrap() = token;
                    }
                    slot.notify.notify_one();
                }
            }
            PushKind::Disconnection => self.on_disconnect(node),
            _ => {}
        }
    }
}

/// Parses a notification payload: `owner` or `owner:token`, owner in hex.
fn parse_notification(payload: &str) -> Option<(u128, Option<u64>)> {
    match payload.split_once(':') {
        Some((owner, token)) => Some((
            u128::from_str_radix(owner, 16).ok()?,
            Some(token.parse().ok()?),
        )),
        None => Some((u128::from_str_radix(payload, 16).ok()?, None)),
    }
}

impl Shared {
    fn conn(&self) -> &Conn {
        &self.nodes[0]
    }

    fn is_redlock(&self) -> bool {
        self.config.topology == Topology::Redlock
    }

    fn error(&self, doing: &str, error: RedisError) -> Error {
        map_error(&self.config, doing, error)
    }

    fn on_disconnect(self: &Arc<Self>, node: usize) {
        for slot in self.waiters.lock().unwrap().values() {
            slot.notify.notify_one();
        }
        if self.is_redlock() {
            // One master of several: the lease still stands on the others; renewal decides.
            tracing::debug!(
                backend = BACKEND,
                node,
                "connection to a Redlock master closed"
            );
            return;
        }
        let held: Vec<(u128, LeaseSignal, Duration, Arc<LockKeys>)> = self
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(o, e)| (*o, e.signal.clone(), e.ttl, e.keys.clone()))
            .collect();
        if held.is_empty() {
            return;
        }
        for (_, signal, _, _) in &held {
            signal.jeopardy(format!(
                "the connection to {} closed",
                self.config.display_url
            ));
        }
        // Reconnect and check each lease at once instead of waiting for the next renewal:
        // still ours → back to Held; gone → Lost. Errors leave it to the core's renewal.
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for (owner, signal, ttl, keys) in held {
                match shared.extend_one(shared.conn(), &keys, owner, ttl).await {
                    Ok(true) => signal.recovered(),
                    Ok(false) => signal.lost("the lock was gone when the connection came back"),
                    Err(_) => {}
                }
            }
        });
    }

    async fn extend_one(
        &self,
        conn: &Conn,
        keys: &LockKeys,
        owner: u128,
        ttl: Duration,
    ) -> Result<bool> {
        let mut call = ScriptCall::new(&scripts().extend, keys.all());
        call.arg(&OwnerId::from_u128(owner).hex())
            .arg(ttl.as_millis() as u64);
        let extended: i64 = conn
            .invoke(&call)
            .await
            .map_err(|e| self.error("extending the lease", e))?;
        Ok(extended == 1)
    }

    /// Releases `owner`'s hold or queue entry on one node; `contended` when the lock likely
    /// goes to a waiter (see [`Conn::invoke_waking_first`]).
    async fn release_one(
        &self,
        conn: &Conn,
        keys: &LockKeys,
        owner: u128,
        contended: bool,
    ) -> Result<i64> {
        let mut call = ScriptCall::new(&scripts().release, keys.all());
        call.arg(&OwnerId::from_u128(owner).hex());
        let released = if contended {
            conn.invoke_waking_first(&call).await
        } else {
            conn.invoke(&call).await
        };
        released.map_err(|e| self.error("releasing", e))
    }

    async fn release_everywhere(
        &self,
        keys: &LockKeys,
        owner: u128,
        contended: bool,
    ) -> Result<()> {
        let results = join_all(
            self.nodes
                .iter()
                .map(|node| self.release_one(node, keys, owner, contended)),
        )
        .await;
        let mut first_error = None;
        let mut failed = 0;
        for result in results {
            if let Err(e) = result {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        // Redlock: a master that missed the release lets the lease run out there; fine as
        // long as a majority released.
        match first_error {
            Some(e) if !self.is_redlock() || failed >= self.config.quorum() => Err(e),
            _ => Ok(()),
        }
    }

    /// One run of the acquire script on `conn`: `Ok(Ok(grant))` when held, `Ok(Err(hint))`
    /// with the ms until the first holder expires otherwise.
    async fn try_acquire(
        &self,
        conn: &Conn,
        keys: &LockKeys,
        request: &AcquireRequest,
        enqueue: Enqueue,
        watch: bool,
        info: &str,
    ) -> Result<std::result::Result<Grant, u64>> {
        // The holder record's `kind:count:limit`.
        let terms: Cow<'static, str> = match request.options.mode {
            LockMode::Shared => "s:1:0".into(),
            LockMode::Permits { count, limit } => format!("p:{count}:{limit}").into(),
            _ => "x:1:1".into(),
        };
        let priority = !((request.options.priority as u32) ^ 0x8000_0000);
        // `priority|enqueue|watch|asked|waiter ttl|channel`, its constant end made once at
        // connect. `asked` is this call's send time on the client's clock (µs since the epoch):
        // the queue orders waiters by it, within bounds (see acquire.lua), because the server
        // reads requests that reach it while it is busy in an order of its own. A try that
        // does not queue sends 0: only queueing reads it.
        let asked = match enqueue {
            Enqueue::No => 0,
            Enqueue::Again | Enqueue::First => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_micros() as u64),
        };
        let mut waiting = String::with_capacity(32 + self.waiting_tail.len());
        let mut digits = [0; 8];
        hex::encode_to_slice(priority.to_be_bytes(), &mut digits).expect("4 bytes, 8 digits");
        waiting.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
        waiting.push_str(match enqueue {
            Enqueue::No => "|0",
            Enqueue::Again => "|1",
            Enqueue::First => "|2",
        });
        waiting.push_str(if watch { "|1|" } else { "|0|" });
        write!(waiting, "{asked}|").expect("writing to a String cannot fail");
        waiting.push_str(&self.waiting_tail);
        let mut call = ScriptCall::new(&scripts().acquire, keys.all());
        call.arg(&request.owner.owner.hex())
            .arg(terms.as_ref())
            .arg(request.options.ttl.as_millis() as u64)
            .arg(info)
            .arg(waiting);
        let (held, value): (i64, i64) = conn
            .invoke(&call)
            .await
            .map_err(|e| self.error("acquiring", e))?;
        Ok(if held > 0 {
            Ok(Grant {
                token: value as u64,
                contended: held == 2,
            })
        } else {
            Err(value.max(0) as u64)
        })
    }
}

/// A lock the server granted.
#[derive(Clone, Copy)]
struct Grant {
    token: u64,
    /// Others waited for the lock (or this acquisition did): its release likely hands it on.
    contended: bool,
}

/// What an acquire call does when it cannot have the lock at once.
#[derive(Clone, Copy)]
enum Enqueue {
    /// Returns (try-lock, or a Redlock attempt).
    No,
    /// Joins the queue: the acquisition's first call, so its owner has no entry yet.
    First,
    /// Keeps its place in the queue, refreshing its entry, or joins it if the entry is gone.
    Again,
}

/// Removes a waiter's queue entry (or a lock handed to it too late) if the acquisition is
/// dropped or fails: the cleanup is spawned, so it runs even when the future is cancelled.
struct CancelGuard {
    shared: Arc<Shared>,
    keys: Arc<LockKeys>,
    owner: u128,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.shared.waiters.lock().unwrap().remove(&self.owner);
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (shared, keys, owner) = (self.shared.clone(), self.keys.clone(), self.owner);
            runtime.spawn(async move {
                if let Err(error) = shared.release_everywhere(&keys, owner, false).await {
                    tracing::warn!(backend = BACKEND, %error,
                        "distlock: cleanup of a cancelled acquisition failed; its entry expires on its own");
                }
            });
        }
    }
}

fn recheck_delay(hint_ms: u64) -> Duration {
    let base = if hint_ms == 0 {
        MAX_RECHECK
    } else {
        Duration::from_millis(hint_ms + 2).min(MAX_RECHECK)
    };
    recheck_jitter(base)
}

impl RedisBackend {
    async fn acquire_impl(
        &self,
        request: &AcquireRequest,
        signal: LeaseSignal,
    ) -> Result<Box<dyn HeldLock>> {
        let shared = &self.shared;
        let keys = Arc::new(LockKeys::new(request.name.as_str()));
        let owner = request.owner.owner.as_u128();
        let info = request.owner.to_json();
        let no_wait = matches!(request.options.wait, Wait::NoWait);
        let mut guard = CancelGuard {
            shared: shared.clone(),
            keys: keys.clone(),
            owner,
            armed: true,
        };
        if shared.is_redlock() {
            return self
                .acquire_redlock(request, signal, keys, &info, no_wait, guard)
                .await;
        }
        let slot = Arc::new(WaiterSlot::default());
        if !no_wait {
            shared.waiters.lock().unwrap().insert(owner, slot.clone());
        }
        let mut answered = false;
        loop {
            let sent = Instant::now();
            // Until the server has answered, this owner (new for each acquisition) has no
            // queue entry: the script need not look for one.
            let enqueue = match (no_wait, answered) {
                (true, _) => Enqueue::No,
                (false, false) => Enqueue::First,
                (false, true) => Enqueue::Again,
            };
            match shared
                .try_acquire(shared.conn(), &keys, request, enqueue, false, &info)
                .await
            {
                Ok(Ok(mut grant)) => {
                    guard.armed = false;
                    grant.contended |= answered;
                    return Ok(self.held(keys, owner, grant, sent, request, signal));
                }
                Ok(Err(_)) if no_wait => {
                    guard.armed = false;
                    return Err(would_block());
                }
                Ok(Err(hint)) => {
                    answered = true;
                    tokio::select! {
                        _ = slot.notify.notified() => {}
                        _ = tokio::time::sleep(recheck_delay(hint)) => {}
                    }
                    // Handed off: the server granted it for the TTL after answering the call
                    // sent at `sent` that it was still waiting, so the lease may count from
                    // `sent`. If that was long ago, the next call claims the grant instead,
                    // which restarts its TTL, so the lease does not start near its end.
                    let handed_off = slot.handed_off.lock().unwrap().take();
                    if let Some(token) = handed_off
                        && sent.elapsed() < request.options.ttl / 3
                    {
                        guard.armed = false;
                        let grant = Grant {
                            token,
                            contended: true,
                        };
                        return Ok(self.held(keys, owner, grant, sent, request, signal));
                    }
                }
                // The server answered before: ride out a reconnect while waiting. The entry
                // expires on its own if this never comes back; the wait bound still applies.
                Err(error) if answered && error.is_connection() => {
                    tracing::debug!(backend = BACKEND, %error, "retrying while waiting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn acquire_redlock(
        &self,
        request: &AcquireRequest,
        signal: LeaseSignal,
        keys: Arc<LockKeys>,
        info: &str,
        no_wait: bool,
        mut guard: CancelGuard,
    ) -> Result<Box<dyn HeldLock>> {
        let shared = &self.shared;
        let owner = request.owner.owner.as_u128();
        let ttl = request.options.ttl;
        let quorum = shared.config.quorum();
        let drift = drift_margin(ttl) + shared.config.extra_drift;
        let slot = Arc::new(WaiterSlot::default());
        if !no_wait {
            shared.waiters.lock().unwrap().insert(owner, slot.clone());
        }
        let mut answered = false;
        loop {
            let sent = Instant::now();
            let results =
                join_all(shared.nodes.iter().map(|node| {
                    shared.try_acquire(node, &keys, request, Enqueue::No, !no_wait, info)
                }))
                .await;
            let elapsed = sent.elapsed();
            let mut tokens = Vec::new();
            let mut hint = 0u64;
            let mut errors = 0;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(Ok(grant)) => tokens.push(grant.token),
                    Ok(Err(h)) => hint = hint.max(h),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            let valid = ttl
                .checked_sub(elapsed + drift)
                .is_some_and(|v| !v.is_zero());
            if tokens.len() >= quorum && valid {
                let token = tokens.iter().copied().max().unwrap_or(0);
                // Raise every master's counter to the token, so the next quorum (which shares
                // a master with a majority of these) hands out a larger one.
                let fenced = join_all(shared.nodes.iter().map(|node| {
                    let mut call = ScriptCall::new(&scripts().fence, &[keys.key(Suffix::Counter)]);
                    call.arg(token);
                    async move { node.invoke::<i64>(&call).await }
                }))
                .await;
                if fenced.iter().filter(|r| r.is_ok()).count() >= quorum {
                    guard.armed = false;
                    let grant = Grant {
                        token,
                        contended: answered,
                    };
                    return Ok(self.held(keys, owner, grant, sent, request, signal));
                }
            }
            // Not acquired: give back whatever some masters granted.
            if !tokens.is_empty() {
                let _ = shared.release_everywhere(&keys, owner, false).await;
            }
            let reachable = shared.nodes.len() - errors >= quorum;
            if !reachable && (no_wait || !answered) {
                return Err(first_error.expect("errors when masters are unreachable"));
            }
            answered |= reachable;
            if no_wait {
                guard.armed = false;
                return Err(would_block());
            }
            // No queue across independent masters: each master notifies this waiter at its
            // next release; re-check anyway after the holder's remaining TTL (at most a
            // second). A short random delay keeps woken competitors from splitting the votes
            // forever.
            tokio::select! {
                _ = slot.notify.notified() => {}
                _ = tokio::time::sleep(recheck_delay(hint)) => {}
            }
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 20)).await;
        }
    }

    fn held(
        &self,
        keys: Arc<LockKeys>,
        owner: u128,
        grant: Grant,
        sent: Instant,
        request: &AcquireRequest,
        signal: LeaseSignal,
    ) -> Box<dyn HeldLock> {
        self.shared.held.lock().unwrap().insert(
            owner,
            HeldEntry {
                signal,
                ttl: request.options.ttl,
                keys: keys.clone(),
            },
        );
        Box::new(RedisHeld {
            shared: self.shared.clone(),
            keys,
            owner,
            token: FencingToken::new(grant.token),
            contended: grant.contended,
            granted_at: sent,
        })
    }

    async fn inspect_impl(&self, name: &LockName) -> Result<LockInfo> {
        let shared = &self.shared;
        let keys = LockKeys::new(name.as_str());
        let results = join_all(shared.nodes.iter().map(|node| async {
            let call = ScriptCall::new(&scripts().inspect, keys.all());
            node.invoke::<(i64, Vec<String>, Vec<String>)>(&call)
                .await
                .map_err(|e| shared.error("inspecting", e))
        }))
        .await;
        let mut replies = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if replies.len() < shared.config.quorum() {
            return Err(first_error.expect("an error when too few answered"));
        }
        let mut info = LockInfo::new(name.as_str(), BACKEND);
        // Redlock: a holder counts when a majority of masters report it; its token is the max.
        let mut seen: Vec<(Holder, usize)> = Vec::new();
        for (now_ms, holders, waiters) in &replies {
            for h in holders.chunks_exact(4) {
                let Some(holder) = parse_holder(h, *now_ms) else {
                    continue;
                };
                match seen
                    .iter_mut()
                    .find(|(s, _)| s.owner.owner == holder.owner.owner)
                {
                    Some((s, n)) => {
                        *n += 1;
                        s.token = s.token.max(holder.token);
                    }
                    None => seen.push((holder, 1)),
                }
            }
            if !shared.is_redlock() {
                for w in waiters.chunks_exact(3) {
                    if let Some(waiter) = parse_waiter(w) {
                        info.waiters.push(waiter);
                    }
                }
            }
        }
        let quorum = shared.config.quorum();
        info.holders = seen
            .into_iter()
            .filter(|(_, n)| *n >= quorum)
            .map(|(h, _)| h)
            .collect();
        info.holders.sort_by_key(|h| h.token);
        Ok(info)
    }
}

fn would_block() -> Error {
    Error::new(
        ErrorKind::WouldBlock,
        BACKEND,
        "held by another owner".to_owned(),
    )
}

fn parse_owner(json: &str) -> Option<OwnerInfo> {
    serde_json::from_str(json).ok()
}

fn parse_holder(fields: &[String], now_ms: i64) -> Option<Holder> {
    let [_, expiry, kind, info] = fields else {
        return None;
    };
    let owner = parse_owner(info)?;
    let parts: Vec<&str> = kind.split(':').collect();
    let [kind, count, limit, token] = parts.as_slice() else {
        return None;
    };
    let mode = match *kind {
        "s" => LockMode::Shared,
        "p" => LockMode::Permits {
            count: count.parse().ok()?,
            limit: limit.parse().ok()?,
        },
        _ => LockMode::Exclusive,
    };
    let expiry_ms: f64 = expiry.parse().ok()?;
    // Report the expiry on this machine's clock: now + what the server says remains.
    let remaining = Duration::from_millis((expiry_ms as i64 - now_ms).max(0) as u64);
    Some(Holder::new(
        owner,
        mode,
        FencingToken::new(token.parse().ok()?),
        Some(SystemTime::now() + remaining),
    ))
}

fn parse_waiter(fields: &[String]) -> Option<Waiter> {
    let [_, record, info] = fields else {
        return None;
    };
    let owner = parse_owner(info)?;
    let parts: Vec<&str> = record.splitn(4, '|').collect();
    let [terms, _ttl, member, _channel] = parts.as_slice() else {
        return None;
    };
    let parts: Vec<&str> = terms.splitn(3, ':').collect();
    let [kind, count, limit] = parts.as_slice() else {
        return None;
    };
    let mode = match *kind {
        "s" => LockMode::Shared,
        "p" => LockMode::Permits {
            count: count.parse().ok()?,
            limit: limit.parse().ok()?,
        },
        _ => LockMode::Exclusive,
    };
    let encoded = u32::from_str_radix(member.get(..8)?, 16).ok()?;
    let priority = ((!encoded) ^ 0x8000_0000) as i32;
    Some(Waiter::new(owner, mode, priority))
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        if self.shared.is_redlock() {
            // No queue across independent masters (so no priority), and a semaphore's limit
            // cannot be kept by majorities of independent counts.
            Capabilities::EXCLUSIVE_ONLY.with_shared()
        } else {
            Capabilities::EXCLUSIVE_ONLY
                .with_shared()
                .with_semaphore()
                .with_priority()
        }
    }

    fn acquire<'a>(
        &'a self,
        request: &'a AcquireRequest,
        signal: LeaseSignal,
    ) -> BoxFuture<'a, Result<Box<dyn HeldLock>>> {
        Box::pin(self.acquire_impl(request, signal))
    }

    fn inspect<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>> {
        Box::pin(self.inspect_impl(name))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            let pattern = keys::scan_pattern(prefix);
            let mut names = std::collections::BTreeSet::new();
            for node in &self.shared.nodes {
                let found = node
                    .scan(&pattern)
                    .await
                    .map_err(|e| self.shared.error("listing locks", e))?;
                names.extend(found.iter().filter_map(|k| keys::name_of_key(k)));
            }
            let mut out = Vec::new();
            for name in names {
                let Ok(name) = LockName::new(name, BACKEND) else {
                    continue;
                };
                let info = self.inspect_impl(&name).await?;
                if info.is_held() || !info.waiters.is_empty() {
                    out.push(info);
                }
            }
            Ok(out)
        })
    }

    fn force_release<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let keys = LockKeys::new(name.as_str());
            let shared = &self.shared;
            let results = join_all(shared.nodes.iter().map(|node| async {
                let call = ScriptCall::new(&scripts().force, keys.all());
                node.invoke::<i64>(&call)
                    .await
                    .map_err(|e| shared.error("force-releasing", e))
            }))
            .await;
            let mut removed = 0;
            for result in results {
                removed = removed.max(result? as usize);
            }
            Ok(removed)
        })
    }
}

/// A lock held on Redis.
struct RedisHeld {
    shared: Arc<Shared>,
    keys: Arc<LockKeys>,
    owner: u128,
    token: FencingToken,
    /// Others waited when it was granted (or it waited itself), so its release likely hands
    /// the lock on and wakes that waiter first.
    contended: bool,
    granted_at: Instant,
}

impl Drop for RedisHeld {
    fn drop(&mut self) {
        self.shared.held.lock().unwrap().remove(&self.owner);
    }
}

impl HeldLock for RedisHeld {
    fn token(&self) -> FencingToken {
        self.token
    }

    fn granted_at(&self) -> Option<Instant> {
        Some(self.granted_at)
    }

    fn renew(&self, ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let shared = &self.shared;
            let results = join_all(
                shared
                    .nodes
                    .iter()
                    .map(|node| shared.extend_one(node, &self.keys, self.owner, ttl)),
            )
            .await;
            let quorum = shared.config.quorum();
            let mut extended = 0;
            let mut gone = 0;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(true) => extended += 1,
                    Ok(false) => gone += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if extended >= quorum {
                Ok(())
            } else if gone + quorum > shared.nodes.len() {
                Err(Error::new(
                    ErrorKind::Lost,
                    BACKEND,
                    "the lock is gone or owned by another owner".to_owned(),
                ))
            } else {
                Err(first_error.unwrap_or_else(|| {
                    Error::new(
                        ErrorKind::Connection,
                        BACKEND,
                        "too few Redlock masters extended the lease".to_owned(),
                    )
                }))
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.shared.held.lock().unwrap().remove(&self.owner);
            self.shared
                .release_everywhere(&self.keys, self.owner, self.contended)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_notification;

    #[test]
    fn notifications_carry_an_owner_and_maybe_a_token() {
        let owner = 0xabc_u128;
        assert_eq!(
            parse_notification(&format!("{owner:032x}:42")),
            Some((owner, Some(42)))
        );
        assert_eq!(
            parse_notification(&format!("{owner:032x}")),
            Some((owner, None))
        );
        assert_eq!(parse_notification("not hex"), None);
        assert_eq!(parse_notification(&format!("{owner:032x}:x")), None);
    }
}
