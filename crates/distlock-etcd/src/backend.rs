//! The etcd backend: session leases, the key layout, acquisition by create revision, waiting
//! on deletes, release, inspection.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use distlock_core::{
    AcquireRequest, Backend, BoxFuture, Capabilities, Error, ErrorKind, FencingToken, FreshReads,
    HeldLock, Holder, Lease, LeaseSignal, LockInfo, LockMode, LockName, OwnerId, OwnerInfo, Result,
    Wait, Waiter, recheck_jitter,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::BACKEND;
use crate::config::EtcdConfig;
use crate::keys;
use crate::watch_hub::WatchHub;

/// The etcd backend. Cheap to clone; clones share the connection and the session leases.
///
/// Keep a clone next to the [`Locks`](distlock_core::Locks) that wraps it to build
/// [fenced transactions](EtcdBackend::fence) and to reach the raw [`client`](Self::client).
#[derive(Clone)]
pub struct EtcdBackend {
    shared: Arc<Shared>,
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("config", &self.shared.config)
            .finish()
    }
}

struct Shared {
    client: Client,
    /// The client's KV service alone: cloned per request, which costs one channel handle
    /// instead of the whole client's eight.
    kv: KvClient,
    config: EtcdConfig,
    /// The session's leases, one per TTL in whole seconds.
    leases: tokio::sync::Mutex<HashMap<i64, Arc<SessionLease>>>,
    /// Lock keys this session holds or waits with, so two acquisitions of one name through one
    /// session never share a key.
    in_use: StdMutex<HashSet<String>>,
    /// Suffixes for keys whose plain form is in use: `<lease>.<n>`.
    suffixes: std::sync::atomic::AtomicU64,
    /// (lock name, token) → key, for fenced transactions.
    fences: StdMutex<HashMap<(String, u64), String>>,
    /// Reads of lock prefixes, shared by this process's waiters on the same lock.
    listings: FreshReads<Arc<Listing>>,
    /// The one watch stream of this backend's waiters.
    watches: WatchHub,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Revoke the session's leases so its keys go at once rather than after a TTL.
        let leases: Vec<_> = self.leases.get_mut().drain().map(|(_, l)| l).collect();
        for lease in &leases {
            if let Some(task) = lease.task.lock().unwrap().take() {
                task.abort();
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut client = self.client.clone();
            let timeout = self.config.request_timeout;
            runtime.spawn(async move {
                for lease in leases {
                    let _ = tokio::time::timeout(timeout, client.lease_revoke(lease.id)).await;
                }
            });
        }
    }
}

/// One etcd lease of the session, kept alive in the background at a third of its TTL.
struct SessionLease {
    id: i64,
    ttl_secs: i64,
    /// `true` once etcd said the lease is gone.
    dead: watch::Sender<bool>,
    keeper: tokio::sync::Mutex<Option<(LeaseKeeper, LeaseKeepAliveStream)>>,
    /// The send time of the last keep-alive (or the grant) that etcd confirmed.
    last_ok_sent: StdMutex<Instant>,
    /// Signals of the locks held on this lease, told when it dies or the connection fails.
    signals: StdMutex<Vec<LeaseSignal>>,
    task: StdMutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SessionLease {
    fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    fn mark_dead(&self) {
        self.dead.send_replace(true);
        for signal in self.signals.lock().unwrap().drain(..) {
            signal.lost(format!(
                "etcd lease {:x} expired or was revoked, deleting its keys",
                self.id
            ));
        }
    }

    fn lost_error(&self) -> Error {
        Error::new(
            ErrorKind::Lost,
            BACKEND,
            format!("etcd lease {:x} expired or was revoked", self.id),
        )
    }

    /// Sends one keep-alive and waits for its answer; returns the time it was sent.
    async fn keep_alive(&self, client: &Client, timeout: Duration) -> Result<Instant> {
        if self.is_dead() {
            return Err(self.lost_error());
        }
        let mut keeper = self.keeper.lock().await;
        let sent = Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            if keeper.is_none() {
                *keeper = Some(client.clone().lease_keep_alive(self.id).await?);
            }
            let (k, stream) = keeper.as_mut().expect("set above");
            k.keep_alive().await?;
            stream.message().await
        })
        .await;
        match outcome {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                let mut last = self.last_ok_sent.lock().unwrap();
                *last = (*last).max(sent);
                Ok(sent)
            }
            Ok(Ok(Some(_))) => {
                self.mark_dead();
                Err(self.lost_error())
            }
            Ok(Ok(None)) => {
                *keeper = None;
                Err(Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    "the keep-alive stream closed",
                ))
            }
            Ok(Err(error)) if lease_not_found(&error) => {
                // A new keep-alive stream on a lease etcd no longer has (expired while we were
                // cut off, or revoked): etcd-client reports it as an error, not as TTL 0.
                *keeper = None;
                self.mark_dead();
                Err(self.lost_error())
            }
            Ok(Err(error)) => {
                *keeper = None;
                Err(map_error(error, "keep-alive failed"))
            }
            Err(_) => {
                // The answer may still come; start a fresh stream so answers never mismatch.
                *keeper = None;
                Err(Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    format!("keep-alive got no answer within {timeout:?}"),
                ))
            }
        }
    }
}

/// Keeps `lease` alive until it dies or the session drops it.
async fn keep_alive_loop(lease: std::sync::Weak<SessionLease>, client: Client, timeout: Duration) {
    let Some(period) = lease
        .upgrade()
        .map(|l| Duration::from_secs(l.ttl_secs as u64) / 3)
    else {
        return;
    };
    let mut next = Instant::now() + period;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let Some(lease) = lease.upgrade() else { return };
        match lease.keep_alive(&client, timeout.min(period)).await {
            Ok(sent) => next = sent + period,
            Err(error) if error.is_lost() => return,
            Err(error) => {
                tracing::warn!(backend = BACKEND, lease = lease.id, %error, "etcd keep-alive failed");
                for signal in lease.signals.lock().unwrap().iter() {
                    signal.jeopardy(format!("etcd keep-alive failed: {error}"));
                }
                next = Instant::now() + period / 4;
            }
        }
    }
}

/// What distlock stores as the value of a lock key (JSON). Keys under a lock prefix whose
/// value is not such a record (etcdctl's empty values, keys made by hand) count as exclusive.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    owner: OwnerInfo,
    #[serde(flatten)]
    mode: LockMode,
}

/// One key under a lock prefix.
struct Entry {
    key: String,
    create_revision: i64,
    record: Option<Record>,
}

impl Entry {
    fn from_kv(kv: &KeyValue) -> Entry {
        Entry {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            create_revision: kv.create_revision(),
            record: serde_json::from_slice(kv.value()).ok(),
        }
    }

    fn mode(&self) -> LockMode {
        self.record
            .as_ref()
            .map_or(LockMode::Exclusive, |record| record.mode)
    }

    fn owner(&self) -> OwnerInfo {
        match &self.record {
            Some(record) => record.owner.clone(),
            None => {
                let mut owner = OwnerInfo::current(
                    OwnerId::from_u128(0),
                    Some(format!("foreign key {:?} (not made by distlock)", self.key)),
                );
                owner.host = "unknown".into();
                owner.pid = 0;
                owner.since = SystemTime::UNIX_EPOCH;
                owner
            }
        }
    }
}

/// The keys under a lock prefix, oldest create revision first, and the read's revision.
struct Listing {
    entries: Vec<Entry>,
    revision: i64,
}

/// What an acquisition waits for.
enum Blocker {
    /// The deletion of this key, created at this revision (a later key of the same name is
    /// another acquisition, behind ours).
    Key { key: String, create_revision: i64 },
    /// Any deletion under the lock prefix (semaphores).
    Prefix,
}

impl Blocker {
    fn key_of(entry: &Entry) -> Blocker {
        Blocker::Key {
            key: entry.key.clone(),
            create_revision: entry.create_revision,
        }
    }
}

/// Whether an acquisition in `mode` behind `before` (the keys with a lower create revision)
/// holds the lock, and if not what to wait for.
fn blocker(before: &[Entry], mode: LockMode) -> Option<Blocker> {
    let last_conflicting = |compatible: &dyn Fn(LockMode) -> bool| {
        before
            .iter()
            .rev()
            .find(|e| !compatible(e.mode()))
            .map(Blocker::key_of)
    };
    match mode {
        LockMode::Shared => last_conflicting(&|m| m == LockMode::Shared),
        LockMode::Permits { count, limit } => {
            if let Some(blocker) = last_conflicting(&|m| matches!(m, LockMode::Permits { .. })) {
                return Some(blocker);
            }
            let taken: u64 = before
                .iter()
                .map(|e| match e.mode() {
                    LockMode::Permits { count, .. } => u64::from(count),
                    _ => 0,
                })
                .sum();
            (taken + u64::from(count) > u64::from(limit)).then_some(Blocker::Prefix)
        }
        _ => before.last().map(Blocker::key_of),
    }
}

/// A fencing handle for one held lock: the compare that says "this acquisition still holds
/// the lock", to put in your own etcd transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fence {
    /// The lock key.
    pub key: String,
    /// Its create revision: the lease's fencing token.
    pub create_revision: i64,
}

impl Fence {
    /// A fence for `key` created at `create_revision`.
    pub fn new(key: impl Into<String>, create_revision: i64) -> Self {
        Fence {
            key: key.into(),
            create_revision,
        }
    }

    /// `create_revision(key) == token`: true exactly while this acquisition holds the key.
    pub fn compare(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.create_revision)
    }

    /// A transaction that runs `then` only if `compares` hold *and* this acquisition still
    /// holds the lock, and `otherwise` if not. (`etcd_client::Txn::when` can be called only
    /// once, so pass your compares here.)
    pub fn txn(
        &self,
        compares: impl IntoIterator<Item = Compare>,
        then: impl Into<Vec<TxnOp>>,
        otherwise: impl Into<Vec<TxnOp>>,
    ) -> Txn {
        let mut all: Vec<Compare> = compares.into_iter().collect();
        all.push(self.compare());
        Txn::new().when(all).and_then(then).or_else(otherwise)
    }
}

impl EtcdBackend {
    /// Connects to the cluster in `config` and checks that it answers.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is held until it returns.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdBackend> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(HTTP2_PING_INTERVAL, config.request_timeout)
            .with_keep_alive_while_idle(false);
        if let (Some(user), Some(password)) = (&config.user, config.password()) {
            options = options.with_user(user.clone(), password.to_owned());
        }
        if config.tls {
            #[cfg(feature = "tls")]
            {
                options = options.with_tls(etcd_client::TlsOptions::new().with_native_roots());
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::new(
                ErrorKind::Unsupported,
                BACKEND,
                "etcds:// (TLS) needs distlock-etcd's `tls` feature",
            ));
        }
        let unreachable = |error: etcd_client::Error| {
            Error::new(
                ErrorKind::Connection,
                BACKEND,
                format!("could not reach etcd at {}", config.endpoints.join(",")),
            )
            .with_source(error)
        };
        let connect = async {
            let mut client = Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(unreachable)?;
            client.status().await.map_err(unreachable)?;
            Ok::<_, Error>(client)
        };
        let client = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    format!(
                        "could not reach etcd at {} within {:?}",
                        config.endpoints.join(","),
                        config.connect_timeout
                    ),
                )
            })??;
        let watches = WatchHub::new(client.clone(), config.request_timeout);
        Ok(EtcdBackend {
            shared: Arc::new(Shared {
                kv: client.kv_client(),
                client,
                config,
                leases: tokio::sync::Mutex::new(HashMap::new()),
                in_use: StdMutex::new(HashSet::new()),
                suffixes: std::sync::atomic::AtomicU64::new(1),
                fences: StdMutex::new(HashMap::new()),
                listings: FreshReads::new(),
                watches,
            }),
        })
    }

    /// The underlying etcd client, for your own transactions.
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.shared.config
    }

    /// The fence of `lease` if this backend granted it and it has not been released: add its
    /// [`compare`](Fence::compare) to your own transactions so a write only happens while the
    /// lock is still held (see [`Fence::txn`]).
    pub fn fence(&self, lease: &Lease) -> Option<Fence> {
        let fences = self.shared.fences.lock().unwrap();
        fences
            .get(&(lease.name().as_str().to_owned(), lease.token().get()))
            .map(|key| Fence::new(key.clone(), lease.token().get() as i64))
    }

    /// The etcd key prefix of lock `name` (its keys are `<prefix>/<lease id in hex>`).
    pub fn key_prefix(&self, name: &str) -> String {
        keys::prefix(&self.shared.config.root, name)
    }
}

impl Shared {
    fn timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Runs one request with the request timeout. Requests that fail before reaching a
    /// member (connection refused: a dead member of a cluster) are tried again on the next
    /// member, up to three times; every request made here is safe to repeat.
    async fn rpc<T, F>(&self, what: &str, name: &str, call: impl FnMut(KvClient) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.rpc_on(&self.kv, what, name, call).await
    }

    /// [`Shared::rpc`] on another of the client's services.
    async fn rpc_on<C: Clone, T, F>(
        &self,
        client: &C,
        what: &str,
        name: &str,
        mut call: impl FnMut(C) -> F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        let mut overload_pause = Duration::from_millis(10);
        let overloaded_since = Instant::now();
        loop {
            attempt += 1;
            match tokio::time::timeout(self.timeout(), call(client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if attempt < 3 && never_sent(&error) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // etcd sheds load when its raft log runs far ahead of what it has applied
                // (thousands of proposals in flight); the request was not applied, so it is
                // sent again after a growing, jittered pause.
                Ok(Err(error))
                    if is_overloaded(&error)
                        && overloaded_since.elapsed() < OVERLOAD_RETRY_LIMIT =>
                {
                    tokio::time::sleep(overload_pause.mul_f64(0.5 + rand::random::<f64>())).await;
                    overload_pause = (overload_pause * 2).min(Duration::from_secs(1));
                }
                Ok(Err(error)) => return Err(map_error(error, what).with_lock(name)),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Connection,
                        BACKEND,
                        format!("{what}: no answer within {:?}", self.timeout()),
                    )
                    .with_lock(name));
                }
            }
        }
    }

    /// The session lease for `ttl_secs`, granted on first use or after the last one died.
    async fn lease(self: &Arc<Self>, ttl_secs: i64, name: &str) -> Result<Arc<SessionLease>> {
        let mut leases = self.leases.lock().await;
        if let Some(lease) = leases.get(&ttl_secs)
            && !lease.is_dead()
        {
            return Ok(Arc::clone(lease));
        }
        let sent = Instant::now();
        let granted = self
            .rpc_on(&self.client, "granting a lease", name, |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        let lease = Arc::new(SessionLease {
            id: granted.id(),
            ttl_secs: granted.ttl().max(ttl_secs),
            dead: watch::Sender::new(false),
            keeper: tokio::sync::Mutex::new(None),
            last_ok_sent: StdMutex::new(sent),
            signals: StdMutex::new(Vec::new()),
            task: StdMutex::new(None),
        });
        let task = tokio::spawn(keep_alive_loop(
            Arc::downgrade(&lease),
            self.client.clone(),
            self.timeout(),
        ));
        *lease.task.lock().unwrap() = Some(task);
        if let Some(old) = leases.insert(ttl_secs, Arc::clone(&lease))
            && let Some(task) = old.task.lock().unwrap().take()
        {
            task.abort();
        }
        Ok(lease)
    }

    /// Picks a key for an acquisition by this session and reserves it.
    fn reserve_key(&self, prefix: &str, lease: i64) -> String {
        let mut in_use = self.in_use.lock().unwrap();
        let mut key = format!("{prefix}/{lease:x}");
        if in_use.contains(&key) {
            // A number never used before in this session, so no search (which would be
            // quadratic with thousands of waiters in one process).
            let n = self
                .suffixes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            key = format!("{key}.{n}");
        }
        in_use.insert(key.clone());
        key
    }

    /// Deletes `key` if it was created at `revision` (any revision when `None`).
    async fn delete_key(&self, name: &str, key: &str, revision: Option<i64>) -> Result<()> {
        let delete = TxnOp::delete(key, None);
        let txn = match revision {
            Some(revision) => Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, revision)])
                .and_then([delete]),
            None => Txn::new().and_then([delete]),
        };
        self.rpc("deleting the lock key", name, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map(drop)
    }

    /// Deletes `key` (created at `revision`, any when `None`) in the background, retrying
    /// until it is gone or the session lease is dead, and only then frees its reservation.
    /// The session lease is kept alive, so a key left behind would hold the lock, and a
    /// freed reservation would let a later acquisition adopt the stale key.
    ///
    /// `None` means the create got no answer: it may still be on its way (held while the
    /// channel reconnects, then sent just before this delete), and etcd serves the two
    /// concurrently, so the create can land after the delete and leave a key that blocks
    /// every waiter for as long as this process lives. So the key is deleted again once
    /// such a create has had time to land ([`LATE_CREATE_SETTLE`]).
    fn delete_in_background(
        self: &Arc<Self>,
        name: String,
        key: String,
        revision: Option<i64>,
        lease: Arc<SessionLease>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to retry on: the key goes with the session lease.
            self.in_use.lock().unwrap().remove(&key);
            return;
        };
        let shared = Arc::clone(self);
        runtime.spawn(async move {
            let mut warned = false;
            let mut deletes_left = if revision.is_none() { 2 } else { 1 };
            while !lease.is_dead() {
                match shared.delete_key(&name, &key, revision).await {
                    Ok(()) => {
                        deletes_left -= 1;
                        if deletes_left == 0 {
                            break;
                        }
                        tokio::time::sleep(LATE_CREATE_SETTLE).await;
                        continue;
                    }
                    Err(error) if !warned => {
                        warned = true;
                        tracing::warn!(backend = BACKEND, lock = name.as_str(), %error,
                            "could not delete a lock key; retrying until the session lease ends");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            shared.in_use.lock().unwrap().remove(&key);
        });
    }

    /// Every key under `prefix`, from a read that started after this call (shared with this
    /// process's other callers for the same prefix).
    async fn entries(&self, name: &str, prefix: &str) -> Result<Arc<Listing>> {
        self.listings
            .read(prefix, || async {
                let (entries, revision) = self
                    .read_entries("reading the lock keys", name, &format!("{prefix}/"))
                    .await?;
                Ok(Arc::new(Listing { entries, revision }))
            })
            .await
    }

    /// Every key that starts with `scan`, in create order, and the revision they were read
    /// at. Read in pages of [`LISTING_PAGE`] keys in key order, all at the first page's
    /// revision: one answer with every key of a long queue could pass the client's 4 MiB
    /// limit on a gRPC message, and would take the server longer than a request may. (A
    /// page in create order would cost the server a sort of the whole range per page.)
    async fn read_entries(&self, what: &str, name: &str, scan: &str) -> Result<(Vec<Entry>, i64)> {
        let end = keys::range_end(scan);
        let mut entries = Vec::new();
        let mut from = scan.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LISTING_PAGE)
                .with_revision(revision);
            let response = self
                .rpc(what, name, |mut c| {
                    let (from, options) = (from.clone(), options.clone());
                    async move { c.get(from, Some(options)).await }
                })
                .await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            entries.extend(response.kvs().iter().map(Entry::from_kv));
            match response.kvs().last() {
                Some(last) if response.more() => {
                    // The next key after `last`.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        entries.sort_by_key(|e| e.create_revision);
        Ok((entries, revision))
    }

    /// For an exclusive waiter: if its key (`key` at `revision`) is still there, the key just
    /// before it in create order (None when it is first) and the read's revision; None when
    /// its key is gone.
    async fn predecessor(
        &self,
        name: &str,
        prefix: &str,
        key: &str,
        revision: i64,
    ) -> Result<Option<(Option<Blocker>, i64)>> {
        let before = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(revision - 1)
            .with_limit(1);
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::get(format!("{prefix}/"), Some(before))]);
        let response = self
            .rpc("reading the predecessor", name, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let read_revision = response.header().map_or(0, |h| h.revision());
        let blocker = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| Blocker::Key {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                create_revision: kv.create_revision(),
            }),
            _ => None,
        });
        Ok(Some((blocker, read_revision)))
    }

    /// Waits until `blocker` is deleted (or anything under the prefix is), or returns at
    /// once if it already was; returns early if `lease` dies. `revision` is that of the read
    /// that found the blocker.
    ///
    /// A key is watched from "now", and checked once the watch is in place: etcd delivers
    /// events of a watch that starts in the past only from a catch-up loop that runs every
    /// 100 ms, which would add up to 100 ms to every hand-off that races the watch's creation.
    /// Deletions before the watch are seen by the check, later ones by the watch. A prefix
    /// (semaphores) is watched from `revision + 1`.
    ///
    /// The wait does not rest on the watch alone: the check is repeated every session-lease
    /// TTL (and a prefix waiter reads the queue again), so a wake lost with a stream that
    /// broke around a server restart, or a watch that is never confirmed, costs at most one
    /// TTL.
    async fn wait_for_delete(
        &self,
        name: &str,
        prefix: &str,
        blocker: Blocker,
        revision: i64,
        lease: &SessionLease,
    ) -> Result<()> {
        let filters = [WatchFilterType::NoPut];
        let (key, options, incarnation) = match blocker {
            Blocker::Key {
                key,
                create_revision,
            } => (
                key,
                WatchOptions::new().with_filters(filters),
                Some(create_revision),
            ),
            Blocker::Prefix => (
                format!("{prefix}/"),
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1)
                    .with_filters(filters),
                None,
            ),
        };
        let recheck = Duration::from_secs(lease.ttl_secs.max(1) as u64);
        let mut watch = self
            .watches
            .subscribe(&key, options)
            .await
            .map_err(|e| e.with_lock(name))?;
        let mut dead = lease.dead.subscribe();
        let waited = async {
            let Some(create_revision) = incarnation else {
                tokio::select! {
                    fired = watch.fired() => return fired,
                    _ = tokio::time::sleep(recheck_jitter(recheck)) => return Ok(()),
                }
            };
            let mut in_place = false;
            loop {
                if !in_place {
                    // A check before the watch is in place can miss a later delete, so it
                    // waits for the watch, but no longer than a re-check would.
                    if let Ok(established) =
                        tokio::time::timeout(recheck, watch.established()).await
                    {
                        established?;
                        in_place = true;
                    }
                }
                let found = self
                    .rpc("checking the predecessor", name, |mut c| {
                        let key = key.clone();
                        async move { c.get(key, Some(GetOptions::new().with_keys_only())).await }
                    })
                    .await?;
                let still_there = found
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == create_revision);
                if !still_there {
                    return Ok(());
                }
                if in_place {
                    tokio::select! {
                        fired = watch.fired() => return fired,
                        _ = tokio::time::sleep(recheck_jitter(recheck)) => {}
                    }
                }
            }
        };
        tokio::select! {
            waited = waited => waited.map_err(|e| e.with_lock(name)),
            _ = dead.wait_for(|d| *d) => Ok(()),
        }
    }
}

/// Deletes a key that an acquisition created if the acquisition does not complete (error,
/// timeout, or the future being dropped), then frees its reservation.
struct PendingKey {
    shared: Arc<Shared>,
    lease: Arc<SessionLease>,
    name: String,
    key: String,
    revision: Option<i64>,
    armed: bool,
}

impl PendingKey {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingKey {
    fn drop(&mut self) {
        if self.armed {
            self.shared.delete_in_background(
                self.name.clone(),
                self.key.clone(),
                self.revision,
                Arc::clone(&self.lease),
            );
        }
    }
}

impl EtcdBackend {
    /// One attempt at acquiring with the session lease `lease`.
    async fn acquire_on(
        &self,
        lease: Arc<SessionLease>,
        request: &AcquireRequest,
        signal: &LeaseSignal,
    ) -> Result<Box<dyn HeldLock>> {
        let shared = &self.shared;
        let name = request.name.as_str();
        let ttl = request.options.ttl;
        let prefix = keys::prefix(&shared.config.root, name);
        let key = shared.reserve_key(&prefix, lease.id);
        let mut pending = PendingKey {
            shared: Arc::clone(shared),
            lease: Arc::clone(&lease),
            name: name.to_owned(),
            key: key.clone(),
            revision: None,
            armed: true,
        };
        let record = Record {
            owner: request.owner.clone(),
            mode: request.options.mode,
        };
        let value = serde_json::to_vec(&record).expect("a record serializes");
        // The count of keys under the prefix, read in the same transaction after the put: 1
        // means ours is alone, and an uncontended acquire is this one round trip. (A count
        // comes from etcd's in-memory index; a sorted read of the keys would read every
        // value, for every waiter.)
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key.as_str(),
                    value,
                    Some(PutOptions::new().with_lease(lease.id)),
                ),
                TxnOp::get(
                    format!("{prefix}/"),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            ])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let created = match shared
            .rpc("creating the lock key", name, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
        {
            Ok(created) => created,
            Err(error) => {
                if caused_by_lease_not_found(&error) {
                    // Every lock on it is gone with it.
                    lease.mark_dead();
                }
                return Err(error);
            }
        };
        let revision = if created.succeeded() {
            created.header().map_or(0, |h| h.revision())
        } else {
            // The key exists: a create of ours whose reply was lost. It is ours (the
            // name carries our lease and the key was not reserved by anyone else here).
            created
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
                    _ => None,
                })
                .unwrap_or(0)
        };
        pending.revision = Some(revision);
        let alone = created.succeeded()
            && created.op_responses().into_iter().any(|r| match r {
                TxnOpResponse::Get(get) => get.count() == 1,
                _ => false,
            });
        let mut first = alone.then(|| (blocker(&[], request.options.mode), revision));
        // After a wake, an exclusive waiter asks only for its nearest predecessor (as Go's
        // concurrency.Mutex does): its answer is one key, not the whole queue, so a queue of
        // n waiters drains in O(n) transfer instead of O(n²). Other modes need every mode
        // before them.
        let mut woken = false;
        loop {
            let found = if let Some(alone) = first.take() {
                Some(alone)
            } else if woken && request.options.mode == LockMode::Exclusive {
                shared.predecessor(name, &prefix, &key, revision).await?
            } else {
                let listing = shared.entries(name, &prefix).await?;
                let entries = &listing.entries;
                entries
                    .iter()
                    .position(|e| e.key == key && e.create_revision == revision)
                    .map(|position| {
                        (
                            blocker(&entries[..position], request.options.mode),
                            listing.revision,
                        )
                    })
            };
            let Some((blocker, read_revision)) = found else {
                return Err(Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    format!(
                        "the lock key vanished while waiting (session lease {:x} expired?)",
                        lease.id
                    ),
                )
                .with_lock(name));
            };
            let Some(blocker) = blocker else {
                break;
            };
            if request.options.wait == Wait::NoWait {
                // `pending` deletes the key when dropped; do it now so a retry sees the
                // lock as it is.
                shared.delete_key(name, &key, Some(revision)).await?;
                pending.disarm();
                shared.in_use.lock().unwrap().remove(&key);
                return Err(
                    Error::new(ErrorKind::WouldBlock, BACKEND, "held by another owner")
                        .with_lock(name),
                );
            }
            shared
                .wait_for_delete(name, &prefix, blocker, read_revision, &lease)
                .await?;
            woken = true;
        }
        // The lease's server-side deadline counts from the last confirmed keep-alive; make
        // it recent so the local deadline (counted from that send time) is not short.
        let last = *lease.last_ok_sent.lock().unwrap();
        // The keep-alive loop confirms it every ttl/3, so this is only for a loop that is
        // falling behind.
        let granted_at = if last.elapsed() > ttl / 2 {
            lease.keep_alive(&shared.client, shared.timeout()).await?
        } else {
            last
        };
        {
            // Checked under the lock: `mark_dead` marks the lease dead before it drains the
            // signals, so either it tells ours or we see it dead here.
            let mut signals = lease.signals.lock().unwrap();
            if lease.is_dead() {
                return Err(lease.lost_error().with_lock(name));
            }
            signals.retain(|s| !s.state().is_final());
            signals.push(signal.clone());
        }
        shared
            .fences
            .lock()
            .unwrap()
            .insert((name.to_owned(), revision as u64), key.clone());
        pending.disarm();
        Ok(Box::new(EtcdHeld {
            shared: Arc::clone(shared),
            lease,
            name: name.to_owned(),
            key,
            revision,
            granted_at,
        }) as Box<dyn HeldLock>)
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::EXCLUSIVE_ONLY.with_shared().with_semaphore()
    }

    fn acquire<'a>(
        &'a self,
        request: &'a AcquireRequest,
        signal: LeaseSignal,
    ) -> BoxFuture<'a, Result<Box<dyn HeldLock>>> {
        Box::pin(async move {
            let ttl_secs = request.options.ttl.as_secs_f64().ceil().max(1.0) as i64;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let lease = self.shared.lease(ttl_secs, request.name.as_str()).await?;
                match self.acquire_on(Arc::clone(&lease), request, &signal).await {
                    // The session lease died before the lock was granted (it expired while
                    // we were cut off, or was revoked): nothing of this attempt survives it,
                    // so try again on a new lease. The old lease is never used again.
                    Err(error) if attempt < 3 && lease.is_dead() => {
                        tracing::info!(backend = BACKEND, lock = request.name.as_str(),
                            lease = lease.id, %error,
                            "etcd session lease gone during an acquisition; retrying on a new lease");
                    }
                    other => return other,
                }
            }
        })
    }

    fn inspect<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>> {
        Box::pin(async move {
            let prefix = keys::prefix(&self.shared.config.root, name.as_str());
            let listing = self.shared.entries(name.as_str(), &prefix).await?;
            Ok(describe(name.as_str(), &listing.entries))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            let root = &self.shared.config.root;
            let scan = format!("{root}{}", keys::escape(prefix));
            let (entries, _) = self
                .shared
                .read_entries("listing locks", prefix, &scan)
                .await?;
            let mut by_name: std::collections::BTreeMap<String, Vec<Entry>> = Default::default();
            for entry in entries {
                let Some(name) = keys::name_of(root, &entry.key) else {
                    continue;
                };
                by_name.entry(name).or_default().push(entry);
            }
            Ok(by_name
                .into_iter()
                .map(|(name, entries)| describe(&name, &entries))
                .collect())
        })
    }

    fn force_release<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let prefix = keys::prefix(&self.shared.config.root, name.as_str());
            let entries = &self.shared.entries(name.as_str(), &prefix).await?.entries;
            let mut removed = 0;
            for i in 0..entries.len() {
                if blocker(&entries[..i], entries[i].mode()).is_none() {
                    self.shared
                        .delete_key(
                            name.as_str(),
                            &entries[i].key,
                            Some(entries[i].create_revision),
                        )
                        .await?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }
}

fn describe(name: &str, entries: &[Entry]) -> LockInfo {
    let mut info = LockInfo::new(name, BACKEND);
    for (i, entry) in entries.iter().enumerate() {
        if blocker(&entries[..i], entry.mode()).is_none() {
            info.holders.push(Holder::new(
                entry.owner(),
                entry.mode(),
                FencingToken::new(entry.create_revision as u64),
                None,
            ));
        } else {
            info.waiters
                .push(Waiter::new(entry.owner(), entry.mode(), 0));
        }
    }
    info
}

/// A lock key this session holds.
struct EtcdHeld {
    shared: Arc<Shared>,
    lease: Arc<SessionLease>,
    name: String,
    key: String,
    revision: i64,
    granted_at: Instant,
}

impl HeldLock for EtcdHeld {
    fn token(&self) -> FencingToken {
        FencingToken::new(self.revision as u64)
    }

    fn granted_at(&self) -> Option<Instant> {
        Some(self.granted_at)
    }

    fn renew(&self, _ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let check = async {
                let response = self
                    .shared
                    .rpc("checking the lock key", &self.name, |mut c| async move {
                        c.get(self.key.as_str(), None).await
                    })
                    .await?;
                match response.kvs().first() {
                    Some(kv) if kv.create_revision() == self.revision => Ok(()),
                    _ => Err(Error::new(
                        ErrorKind::Lost,
                        BACKEND,
                        "the lock key was deleted (released by an operator, or its lease expired)",
                    )
                    .with_lock(&self.name)),
                }
            };
            let keep_alive = self
                .lease
                .keep_alive(&self.shared.client, self.shared.timeout());
            let (checked, kept) = tokio::join!(check, keep_alive);
            // Lost from either side wins over a connection error on the other.
            match (checked, kept) {
                (Err(e), _) if e.is_lost() => Err(e),
                (_, Err(e)) if e.is_lost() => Err(e.with_lock(&self.name)),
                (Err(e), _) => Err(e),
                (_, Err(e)) => Err(e.with_lock(&self.name)),
                (Ok(()), Ok(_)) => Ok(()),
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let result = self
                .shared
                .delete_key(&self.name, &self.key, Some(self.revision))
                .await;
            self.shared
                .fences
                .lock()
                .unwrap()
                .remove(&(self.name.clone(), self.revision as u64));
            match result {
                Ok(()) => {
                    self.shared.in_use.lock().unwrap().remove(&self.key);
                    Ok(())
                }
                Err(error) => {
                    self.shared.delete_in_background(
                        self.name.clone(),
                        self.key.clone(),
                        Some(self.revision),
                        Arc::clone(&self.lease),
                    );
                    Err(error)
                }
            }
        })
    }
}

/// Whether etcd said the lease a request named does not exist (expired or revoked).
fn lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

/// [`lease_not_found`] for the source of a mapped error.
fn caused_by_lease_not_found(error: &Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<etcd_client::Error>())
        .is_some_and(lease_not_found)
}

/// How often the client pings a connection that has streams open. etcd's server counts a
/// ping sooner than `--grpc-keepalive-min-time` (5 s by default) after the last as a strike,
/// and closes the connection, with every watch on it, after two strikes with nothing written
/// back: a waiter whose only traffic is its watch lost it after about 8 s with pings every
/// 2 s. Go's gRPC clients never ping more often than every 10 s; neither does this one. Pings
/// on a connection without streams are strikes at any rate, so there are none.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);

/// How long a create that got no answer is given to land before its key is deleted a second
/// time (see `Shared::delete_in_background`). The create and the first delete reach the
/// server together and are served within moments of each other; a longer pause only keeps
/// waiters behind the stray key longer.
const LATE_CREATE_SETTLE: Duration = Duration::from_secs(1);

/// Keys per answer when reading a lock's queue (see `Shared::read_entries`).
const LISTING_PAGE: i64 = 1000;

/// How long requests are retried while etcd answers that it is overloaded.
const OVERLOAD_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// Whether etcd refused the request because too many proposals are pending
/// (`ErrTooManyRequests`); nothing was applied.
fn is_overloaded(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("too many requests"))
}

/// Whether a request failed before any member received it (so repeating it is harmless).
fn never_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

pub(crate) fn map_error(error: etcd_client::Error, what: &str) -> Error {
    use tonic::Code;
    let kind = match &error {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                ErrorKind::Connection
            }
            _ => ErrorKind::Backend,
        },
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::LeaseKeepAliveError(_)
        | etcd_client::Error::WatchError(_) => ErrorKind::Connection,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, BACKEND, what.to_owned()).with_source(error)
}
