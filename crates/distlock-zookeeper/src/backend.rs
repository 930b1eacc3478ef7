//! Sessions, Curator's node layout, acquisition by sequence order, predecessor watches.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use distlock_core::{
    AcquireOptions, AcquireRequest, Backend, BoxFuture, Capabilities, Error, ErrorKind,
    FencingToken, FreshReads, HeldLock, Holder, LeaseSignal, LockInfo, LockMode, LockName, OwnerId,
    OwnerInfo, Result, Wait, Waiter, redact_url,
};
use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use crate::BACKEND;

/// Where and how to connect, parsed from a `zk://` or `zks://` URL.
///
/// ```text
/// zk://host:port[,host:port...][/chroot][?session_timeout=4s&root=distlock]
/// zks://host:port[,host:port...][/chroot][?ca=/ca.pem&cert=/client.pem&key=/client.key&...]
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ZkConfig {
    /// `host:port,host:port[/chroot]`, as ZooKeeper clients take it.
    pub connect_string: String,
    /// The parent of every lock path (default `distlock`): lock `NAME` lives at
    /// `/<root>/<escaped NAME>`.
    pub root: String,
    /// The session timeout asked for (the server may negotiate it down or up).
    pub session_timeout: Duration,
    /// TLS to every server (`zks://`), or `None` for plaintext (`zk://`).
    pub tls: Option<ZkTls>,
}

/// The TLS settings of a `zks://` URL: paths of PEM files, read each time a session is opened
/// (so rotated files are picked up by the next session). Only paths are kept, never the
/// files' contents.
///
/// The server certificate must chain to a trust anchor and name the host it is reached by
/// (an IP address in the connect string must be an IP SAN of the certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZkTls {
    /// `ca=`: PEM file of trust anchors (and optional CRLs). Without it, the system's PEM
    /// bundle: `$SSL_CERT_FILE`, or the first of the usual distribution paths that exists
    /// (`/etc/ssl/certs/ca-certificates.crt`, ...): `zookeeper-client` has no built-in roots.
    pub ca: Option<PathBuf>,
    /// `cert=`: PEM certificate chain for client-certificate authentication (with `key`).
    pub cert: Option<PathBuf>,
    /// `key=`: PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl ZkConfig {
    /// Parses `zk://h1:p1,h2:p2/chroot?session_timeout=4s&root=distlock`, or the same with
    /// `zks://` (TLS) and the PEM file parameters `ca=`, `cert=` and `key=` (percent-decoded;
    /// `cert` and `key` go together). The files are not read here.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::InvalidUrl,
                BACKEND,
                format!("invalid URL {:?}: {why}", redact_url(url)),
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected zk://host:port/ or zks://host:port/"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "zk" | "zookeeper" => false,
            "zks" => true,
            _ => return Err(invalid("the scheme must be zk or zks")),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, chroot) = rest.split_once('/').unwrap_or((rest, ""));
        if hosts.is_empty() || hosts.contains('@') {
            return Err(invalid(
                "expected host:port[,host:port] without credentials",
            ));
        }
        let hosts = hosts
            .split(',')
            .map(|h| {
                if h.rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                {
                    h.to_owned()
                } else {
                    format!("{h}:2181")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let chroot = chroot.trim_matches('/');
        let mut config = ZkConfig {
            connect_string: if chroot.is_empty() {
                hosts
            } else {
                format!("{hosts}/{chroot}")
            },
            root: "distlock".into(),
            session_timeout: Duration::from_secs(30),
            tls: tls.then(ZkTls::default),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "session_timeout" => {
                    config.session_timeout = parse_duration(value)
                        .ok_or_else(|| invalid("durations look like 500ms or 5s"))?;
                }
                "root" => config.root = value.trim_matches('/').to_owned(),
                "ca" | "cert" | "key" => {
                    let Some(tls) = config.tls.as_mut() else {
                        return Err(invalid(&format!(
                            "{key}= is a TLS parameter: use zks:// for TLS"
                        )));
                    };
                    let path = unescape(value);
                    if path.is_empty() {
                        return Err(invalid(&format!("{key}= needs the path of a PEM file")));
                    }
                    let slot = match key {
                        "ca" => &mut tls.ca,
                        "cert" => &mut tls.cert,
                        _ => &mut tls.key,
                    };
                    *slot = Some(PathBuf::from(path));
                }
                _ => return Err(invalid(&format!("unknown parameter {key:?}"))),
            }
        }
        if config.root.is_empty() {
            return Err(invalid("root must not be empty"));
        }
        if let Some(tls) = &config.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err(invalid(
                "cert= and key= go together (a client certificate needs its private key)",
            ));
        }
        Ok(config)
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    text.strip_suffix('s')
        .unwrap_or(text)
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// The ZooKeeper backend: one session at a time per [`connect`](crate::connect), replaced by a
/// new one on the next acquisition once it has expired. Cheap to clone.
#[derive(Clone)]
pub struct ZooKeeperBackend {
    shared: Arc<Shared>,
}

impl fmt::Debug for ZooKeeperBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZooKeeperBackend")
            .field("config", &self.shared.config)
            .finish()
    }
}

struct Shared {
    config: ZkConfig,
    /// The current session. Once it has ended (expired, closed) the next acquisition replaces
    /// it; locks granted on it keep their own `Arc` and stay lost.
    current: StdMutex<Arc<Session>>,
    /// Held while a session is being replaced, so that concurrent acquisitions replace it once.
    replacing: tokio::sync::Mutex<()>,
}

/// One ZooKeeper session: its client and the locks held on it.
struct Session {
    client: zk::Client,
    /// Set when a request answered that the session expired or the client closed (which the
    /// state watcher may report a moment later).
    ended: AtomicBool,
    /// Signals of held locks, told about session state changes.
    signals: Arc<StdMutex<Vec<LeaseSignal>>>,
    /// Listings of lock directories, shared by this process's waiters on the same lock.
    listings: FreshReads<Arc<Vec<Node>>>,
    state_task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.state_task.abort();
    }
}

impl Session {
    /// Connects and waits for the session to be established (over TLS for `zks://`, reading
    /// the PEM files again).
    async fn open(config: &ZkConfig) -> Result<Session> {
        let connector = zk::Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(Duration::from_secs(5))
            .with_fail_eagerly();
        let connect_string = config.connect_string.as_str();
        let connect = async move {
            match &config.tls {
                None => Ok(connector.connect(connect_string).await),
                #[cfg(feature = "tls")]
                Some(tls) => {
                    let options = crate::tls::options(tls)?;
                    Ok(connector
                        .with_tls(options)
                        .secure_connect(connect_string)
                        .await)
                }
                #[cfg(not(feature = "tls"))]
                Some(_) => Err(Error::new(
                    ErrorKind::Unsupported,
                    BACKEND,
                    "zks:// (TLS) needs distlock-zookeeper's `tls` feature \
                     (`zookeeper-tls` on the distlock crate)",
                )),
            }
        };
        let over = if config.tls.is_some() {
            " over TLS (does ca=, or the system CA bundle without it, hold the CA that signed \
             the server certificate, does that certificate name the host, and does the server \
             want a client certificate?)"
        } else {
            ""
        };
        let unreachable = |why: String| {
            Error::new(
                ErrorKind::Connection,
                BACKEND,
                format!(
                    "could not reach zookeeper at {}{over}: {why}",
                    config.connect_string
                ),
            )
        };
        let client = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(Ok(client))) => client,
            Ok(Err(error)) => return Err(error),
            Ok(Ok(Err(error))) => return Err(unreachable(error.to_string())),
            Err(_) => return Err(unreachable("no session within 10 s".into())),
        };
        let signals = Arc::new(StdMutex::new(Vec::new()));
        let state_task = tokio::spawn(follow_session(
            client.state_watcher(),
            Arc::clone(&signals),
            client.session_timeout(),
        ));
        Ok(Session {
            client,
            ended: AtomicBool::new(false),
            signals,
            listings: FreshReads::new(),
            state_task,
        })
    }

    /// Whether the session is over for good: expired, closed or refused. ZooKeeper never
    /// revives a session, so only a new one can serve further acquisitions.
    fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst) || self.client.state().is_terminated()
    }

    /// Every lock held on this session is lost (its ephemeral nodes are gone).
    fn end(&self, why: &str) {
        self.ended.store(true, Ordering::SeqCst);
        for s in self.signals.lock().unwrap().drain(..) {
            s.lost(why);
        }
    }

    /// [`zk_error`], noting first whether the error says the session is over.
    fn error(&self, error: zk::Error, what: &str, name: &str) -> Error {
        self.note(&error);
        zk_error(error, what, name)
    }

    fn note(&self, error: &zk::Error) {
        if matches!(error, zk::Error::SessionExpired | zk::Error::ClientClosed) {
            self.ended.store(true, Ordering::SeqCst);
        }
    }

    /// The nodes under `path` in queue order, from a listing that started after this call
    /// (shared with this process's other callers for the same path).
    async fn children(&self, name: &str, path: &str) -> Result<Arc<Vec<Node>>> {
        self.listings
            .read(path, || async {
                match self.client.list_children(path).await {
                    Ok(children) => Ok(Arc::new(nodes_of(children))),
                    Err(zk::Error::NoNode) => Ok(Arc::default()),
                    Err(error) => Err(self.error(error, "listing the lock nodes", name)),
                }
            })
            .await
    }
}

/// Follows the session: Disconnected → Jeopardy (and Lost if it lasts a third of the session
/// timeout, before the server can have expired the session), connected again → recovered,
/// Expired/Closed → Lost.
async fn follow_session(
    mut states: zk::StateWatcher,
    signals: Arc<StdMutex<Vec<LeaseSignal>>>,
    session_timeout: Duration,
) {
    let mut lost_at: Option<Instant> = None;
    loop {
        let state = match lost_at {
            Some(at) => tokio::select! {
                state = states.changed() => state,
                _ = tokio::time::sleep_until(at.into()) => {
                    for s in signals.lock().unwrap().drain(..) {
                        s.lost("disconnected from zookeeper for a third of the session timeout; \
                                the session may expire");
                    }
                    lost_at = None;
                    continue;
                }
            },
            None => states.changed().await,
        };
        let mut signals = signals.lock().unwrap();
        signals.retain(|s| !s.state().is_final());
        match state {
            zk::SessionState::Disconnected => {
                for s in signals.iter() {
                    s.jeopardy("disconnected from zookeeper (SUSPENDED)");
                }
                lost_at = Some(Instant::now() + session_timeout / 3);
            }
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                for s in signals.iter() {
                    s.recovered();
                }
                lost_at = None;
            }
            other if other.is_terminated() => {
                for s in signals.drain(..) {
                    s.lost(format!(
                        "zookeeper session ended ({other:?}); its nodes are gone"
                    ));
                }
                return;
            }
            _ => {}
        }
    }
}

/// What distlock stores in a lock node (JSON). Curator stores the client's IP address; nodes
/// whose data is not a record are shown as foreign holders.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    owner: OwnerInfo,
    #[serde(flatten)]
    mode: LockMode,
}

/// The part of a node name after `_c_<uuid>-` that says what kind of holder it is.
/// The part of a node name after `_c_<uuid>-` and before the sequence: Curator's
/// `InterProcessMutex` (`lock-`) and `InterProcessReadWriteLock` (`__READ__`, `__WRIT__`)
/// names, and distlock's own for semaphore permits.
fn kind_label(options: &AcquireOptions) -> String {
    match options.mode {
        LockMode::Shared => "__READ__".into(),
        LockMode::Permits { count, limit } => format!("__PERM_{count}_{limit}__"),
        _ if options.write_side => "__WRIT__".into(),
        _ => "lock-".into(),
    }
}

/// The mode a node name stands for; names distlock does not know are exclusive.
fn mode_of(node: &str) -> LockMode {
    if node.contains("__READ__") {
        return LockMode::Shared;
    }
    if let Some(at) = node.find("__PERM_") {
        let rest = &node[at + 7..];
        if let Some((count, rest)) = rest.split_once('_')
            && let Some((limit, _)) = rest.split_once("__")
            && let (Ok(count), Ok(limit)) = (count.parse(), limit.parse())
        {
            return LockMode::Permits { count, limit };
        }
    }
    LockMode::Exclusive
}

/// The sequence number of a node: its trailing digits (Curator sorts the same way). Names
/// without one sort first, so a foreign node blocks rather than being overtaken.
fn sequence_of(node: &str) -> i64 {
    let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    node[node.len() - digits..].parse().unwrap_or(i64::MIN)
}

/// Escapes a lock name into one path segment: `%`, `/`, and the characters ZooKeeper refuses
/// in paths (controls, U+007F–U+009F, U+D800 and above, which Java sees as surrogates or
/// private use) become `%XX` escapes of their UTF-8 bytes; a name of `.` or `..`, which
/// ZooKeeper refuses as a segment, gets its dots escaped (`%2E`).
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let code = c as u32;
        if c == '%' || c == '/' || code < 0x20 || (0x7f..=0x9f).contains(&code) || code >= 0xd800 {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out == "." || out == ".." {
        out.replace('.', "%2E")
    } else {
        out
    }
}

fn unescape(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = segment
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Node {
    name: String,
    sequence: i64,
    mode: LockMode,
}

/// Whether a node in `mode` behind `before` holds the lock; if not, the node to watch.
fn blocker(before: &[Node], mode: LockMode) -> Option<&Node> {
    match mode {
        LockMode::Shared => before.iter().rev().find(|n| n.mode != LockMode::Shared),
        LockMode::Permits { count, limit } => {
            if let Some(n) = before
                .iter()
                .rev()
                .find(|n| !matches!(n.mode, LockMode::Permits { .. }))
            {
                return Some(n);
            }
            let mut taken = u64::from(count);
            // The earliest holders free permits first: wait for the last one that must go.
            for n in before {
                if let LockMode::Permits { count, .. } = n.mode {
                    taken += u64::from(count);
                }
            }
            if taken <= u64::from(limit) {
                None
            } else {
                before.last()
            }
        }
        _ => before.last(),
    }
}

fn nodes_of(children: Vec<String>) -> Vec<Node> {
    let mut nodes: Vec<Node> = children
        .into_iter()
        .map(|name| Node {
            sequence: sequence_of(&name),
            mode: mode_of(&name),
            name,
        })
        .collect();
    nodes.sort_by(|a, b| a.sequence.cmp(&b.sequence).then(a.name.cmp(&b.name)));
    nodes
}

/// Whether the connection failed with `error` after the request was sent, so the server may
/// have applied it. zookeeper-client reports a reset connection or a silent server ("no
/// response from connection in ..") as a custom error, not as `ConnectionLoss`, to the
/// requests in flight.
fn connection_failed(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::Custom(_)
    )
}

fn zk_error(error: zk::Error, what: &str, name: &str) -> Error {
    let session_gone = matches!(error, zk::Error::SessionExpired | zk::Error::ClientClosed);
    let kind = if session_gone || connection_failed(&error) {
        ErrorKind::Connection
    } else {
        ErrorKind::Backend
    };
    Error::new(kind, BACKEND, what.to_owned())
        .with_lock(name)
        .with_source(error)
}

impl ZooKeeperBackend {
    /// Connects and waits for the session to be established.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is held until it returns.
    pub async fn connect(config: ZkConfig) -> Result<ZooKeeperBackend> {
        let session = Session::open(&config).await?;
        Ok(ZooKeeperBackend {
            shared: Arc::new(Shared {
                config,
                current: StdMutex::new(Arc::new(session)),
                replacing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn current(&self) -> Arc<Session> {
        Arc::clone(&self.shared.current.lock().unwrap())
    }

    /// The current session, or a new one if it has ended. Concurrent callers that find it
    /// ended wait for one replacement rather than each opening a session.
    ///
    /// A new session never revives the old one's locks: they were told Lost (here, by the
    /// session follower, or by their next renewal), and their nodes were ephemeral nodes of
    /// the old session, which ZooKeeper deleted when it expired.
    async fn session(&self) -> Result<Arc<Session>> {
        let current = self.current();
        if !current.has_ended() {
            return Ok(current);
        }
        let _replacing = self.shared.replacing.lock().await;
        let current = self.current();
        if !current.has_ended() {
            return Ok(current);
        }
        let fresh = Arc::new(Session::open(&self.shared.config).await?);
        current.end("zookeeper session ended (expired or closed); its nodes are gone");
        tracing::info!(
            backend = BACKEND,
            old = current.client.session().id().0,
            new = fresh.client.session().id().0,
            "zookeeper session ended; opened a new one"
        );
        *self.shared.current.lock().unwrap() = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// The ZooKeeper path of lock `name`: `/<root>/<escaped name>`.
    pub fn lock_path(&self, name: &str) -> String {
        format!("/{}/{}", self.shared.config.root, escape(name))
    }

    /// The ZooKeeper client of the current session (a new session, and so a new client,
    /// replaces it after it expires).
    pub fn client(&self) -> zk::Client {
        self.current().client.clone()
    }

    async fn describe(&self, name: &str) -> Result<LockInfo> {
        let session = self.session().await?;
        let path = self.lock_path(name);
        let nodes = session.children(name, &path).await?;
        let mut info = LockInfo::new(name, BACKEND);
        for (i, node) in nodes.iter().enumerate() {
            let (data, stat) = match session
                .client
                .get_data(&format!("{path}/{}", node.name))
                .await
            {
                Ok(found) => found,
                Err(zk::Error::NoNode) => continue,
                Err(error) => return Err(session.error(error, "reading a lock node", name)),
            };
            let owner = match serde_json::from_slice::<Record>(&data) {
                Ok(record) => record.owner,
                Err(_) => {
                    let mut owner = OwnerInfo::current(
                        OwnerId::from_u128(0),
                        Some(format!("node {:?} (not made by distlock)", node.name)),
                    );
                    owner.host = String::from_utf8_lossy(&data).chars().take(64).collect();
                    owner.pid = 0;
                    owner.since = SystemTime::UNIX_EPOCH;
                    owner
                }
            };
            if blocker(&nodes[..i], node.mode).is_none() {
                info.holders.push(Holder::new(
                    owner,
                    node.mode,
                    FencingToken::new(stat.czxid as u64),
                    None,
                ));
            } else {
                info.waiters.push(Waiter::new(owner, node.mode, 0));
            }
        }
        Ok(info)
    }
}

/// A node this session created and no longer wants.
#[derive(Clone)]
enum OwnNode {
    /// Known by path. The path carries this acquisition's random id (protected mode), so no
    /// other acquisition, even after the lock directory was deleted and its sequence numbers
    /// restarted, can have created a node at it: a plain delete is owner-checked.
    Path { path: String },
    /// Created in protected mode whose reply was lost: found by its id among `dir`'s children.
    Protected { dir: String, uuid: String },
}

impl Session {
    /// One attempt at deleting `node`; Ok when it is gone.
    async fn delete_own(&self, node: &OwnNode) -> std::result::Result<(), zk::Error> {
        let path = match node {
            OwnNode::Path { path } => path.clone(),
            OwnNode::Protected { dir, uuid } => match self.client.list_children(dir).await {
                Ok(children) => match children.into_iter().find(|c| c.contains(uuid.as_str())) {
                    Some(child) => format!("{dir}/{child}"),
                    None => return Ok(()),
                },
                Err(zk::Error::NoNode) => return Ok(()),
                Err(error) => return Err(error),
            },
        };
        match self.client.delete(&path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Deletes `node`; if that fails, keeps trying in the background until it is gone or the
    /// session has ended (which deletes it too). A node left behind on a live session would
    /// hold the lock until the process exits.
    async fn delete_own_or_retry(
        self: &Arc<Self>,
        node: OwnNode,
    ) -> std::result::Result<(), zk::Error> {
        let first = match self.delete_own(&node).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        self.note(&first);
        if !self.has_ended() {
            self.spawn_delete(node);
        }
        if matches!(first, zk::Error::SessionExpired) {
            Ok(())
        } else {
            Err(first)
        }
    }

    /// Retries deleting `node` in the background (see [`Session::delete_own_or_retry`]).
    fn spawn_delete(self: &Arc<Self>, node: OwnNode) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let session = Arc::clone(self);
        runtime.spawn(async move {
            loop {
                match session.delete_own(&node).await {
                    Ok(()) => return,
                    Err(error) => session.note(&error),
                }
                if session.has_ended() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

/// Deletes the node of an acquisition that does not complete (dropped, timed out, failed).
struct PendingNode {
    session: Arc<Session>,
    node: Option<OwnNode>,
}

impl Drop for PendingNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            self.session.spawn_delete(node);
        }
    }
}

impl ZooKeeperBackend {
    /// One attempt at acquiring on `session`.
    async fn acquire_on(
        &self,
        session: &Arc<Session>,
        request: &AcquireRequest,
        signal: &LeaseSignal,
    ) -> Result<Box<dyn HeldLock>> {
        let name = request.name.as_str();
        let client = &session.client;
        let path = self.lock_path(name);
        let mode = request.options.mode;
        // Curator's protected mode: a random id in the name lets us find our node if the
        // reply to the create is lost.
        let uuid = format!("{:032x}", rand::random::<u128>());
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &uuid[..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..]
        );
        let prefix = format!("{path}/_c_{uuid}-{}", kind_label(&request.options));
        let data = serde_json::to_vec(&Record {
            owner: request.owner.clone(),
            mode,
        })
        .expect("a record serializes");
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        // Set before the create is sent, not after it returns: an acquire dropped while the
        // create is in flight must still delete the node the server goes on to create. The
        // client sends a request when it is called, so the listing done by that delete is
        // ordered after the create in this session.
        let mut pending = PendingNode {
            session: Arc::clone(session),
            node: Some(OwnNode::Protected {
                dir: path.clone(),
                uuid: uuid.clone(),
            }),
        };
        let created = match client.create(&prefix, &data, &options).await {
            Err(zk::Error::NoNode) => {
                let parent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                match client.mkdir(&path, &parent).await {
                    Ok(()) | Err(zk::Error::NodeExists) => {}
                    Err(error) => {
                        pending.node = None;
                        return Err(session.error(error, "creating the lock path", name));
                    }
                }
                client.create(&prefix, &data, &options).await
            }
            other => other,
        };
        let (stat, sequence) = match created {
            Ok(created) => created,
            Err(error) if connection_failed(&error) => {
                // Protected mode: our node, if it was created, is found by its id (`pending`)
                // and deleted once the session has reconnected; left on a live session, it
                // would hold or block the lock until this process ended.
                return Err(Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    "the connection was lost while creating the lock node",
                )
                .with_lock(name)
                .with_source(error));
            }
            Err(error) => {
                pending.node = None;
                return Err(session.error(error, "creating the lock node", name));
            }
        };
        let own_name = format!("{}{sequence}", &prefix[path.len() + 1..]);
        let own_path = format!("{path}/{own_name}");
        pending.node = Some(OwnNode::Path {
            path: own_path.clone(),
        });
        loop {
            let nodes = session.children(name, &path).await?;
            let Some(position) = nodes.iter().position(|n| n.name == own_name) else {
                return Err(Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    "the lock node vanished while waiting (session expired or deleted)",
                )
                .with_lock(name));
            };
            let Some(blocker) = blocker(&nodes[..position], mode) else {
                break;
            };
            if request.options.wait == Wait::NoWait {
                // Deleted now, so that a retry sees the lock as it is.
                if let Some(node) = pending.node.take() {
                    let _ = session.delete_own_or_retry(node).await;
                }
                return Err(
                    Error::new(ErrorKind::WouldBlock, BACKEND, "held by another owner")
                        .with_lock(name),
                );
            }
            let watched = format!("{path}/{}", blocker.name);
            match client.check_and_watch_stat(&watched).await {
                Ok((Some(_), watcher)) => {
                    watcher.changed().await;
                }
                Ok((None, _)) => {}
                Err(error) => return Err(session.error(error, "watching the predecessor", name)),
            }
        }
        {
            // Checked under the lock: the follower drains the signals only after the session
            // state has ended, so either it will see ours or we see the end here.
            let mut signals = session.signals.lock().unwrap();
            if session.has_ended() {
                return Err(Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    "the zookeeper session ended while acquiring",
                )
                .with_lock(name));
            }
            signals.retain(|s| !s.state().is_final());
            signals.push(signal.clone());
        }
        pending.node = None;
        Ok(Box::new(ZkHeld {
            session: Arc::clone(session),
            name: name.to_owned(),
            path: own_path,
            czxid: stat.czxid,
        }) as Box<dyn HeldLock>)
    }
}

impl Backend for ZooKeeperBackend {
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
            let mut attempt = 0;
            loop {
                attempt += 1;
                let session = self.session().await?;
                match self.acquire_on(&session, request, &signal).await {
                    // The session expired before the lock was granted: nothing of this
                    // attempt survives it (its node was ephemeral), so try on a new session.
                    Err(error) if attempt < 3 && session.has_ended() => {
                        tracing::info!(backend = BACKEND, lock = request.name.as_str(), %error,
                            "zookeeper session ended during an acquisition; retrying on a new session");
                    }
                    other => return other,
                }
            }
        })
    }

    fn inspect<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>> {
        Box::pin(self.describe(name.as_str()))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            let root = format!("/{}", self.shared.config.root);
            let session = self.session().await?;
            let locks = match session.client.list_children(&root).await {
                Ok(locks) => locks,
                Err(zk::Error::NoNode) => Vec::new(),
                Err(error) => return Err(session.error(error, "listing locks", prefix)),
            };
            let mut names: Vec<String> = locks
                .iter()
                .map(|segment| unescape(segment))
                .filter(|name| name.starts_with(prefix))
                .collect();
            names.sort();
            let mut infos = Vec::new();
            for name in names {
                let info = self.describe(&name).await?;
                if !info.holders.is_empty() || !info.waiters.is_empty() {
                    infos.push(info);
                }
            }
            Ok(infos)
        })
    }

    fn force_release<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let path = self.lock_path(name.as_str());
            let session = self.session().await?;
            let nodes = session.children(name.as_str(), &path).await?;
            let mut removed = 0;
            for i in 0..nodes.len() {
                if blocker(&nodes[..i], nodes[i].mode).is_none() {
                    match session
                        .client
                        .delete(&format!("{path}/{}", nodes[i].name), None)
                        .await
                    {
                        Ok(()) => removed += 1,
                        Err(zk::Error::NoNode) => {}
                        Err(error) => {
                            return Err(session.error(
                                error,
                                "deleting a holder's node",
                                name.as_str(),
                            ));
                        }
                    }
                }
            }
            Ok(removed)
        })
    }
}

/// A lock node this session holds.
struct ZkHeld {
    /// The session the node belongs to (never a later one).
    session: Arc<Session>,
    name: String,
    path: String,
    czxid: i64,
}

impl HeldLock for ZkHeld {
    fn token(&self) -> FencingToken {
        FencingToken::new(self.czxid as u64)
    }

    /// `None`: the node lives as long as the session; the session follower signals loss.
    fn granted_at(&self) -> Option<Instant> {
        None
    }

    fn renew(&self, _ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.session.client.check_stat(&self.path).await {
                Ok(Some(stat)) if stat.czxid == self.czxid => Ok(()),
                Ok(_) => Err(Error::new(
                    ErrorKind::Lost,
                    BACKEND,
                    "the lock node was deleted (by an operator, or its session expired)",
                )
                .with_lock(&self.name)),
                Err(zk::Error::SessionExpired) => {
                    self.session.ended.store(true, Ordering::SeqCst);
                    Err(
                        Error::new(ErrorKind::Lost, BACKEND, "the zookeeper session expired")
                            .with_lock(&self.name),
                    )
                }
                Err(error) => Err(zk_error(error, "checking the lock node", &self.name)),
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let node = OwnNode::Path {
                path: self.path.clone(),
            };
            self.session
                .delete_own_or_retry(node)
                .await
                .map_err(|error| {
                    zk_error(
                        error,
                        "deleting the lock node (retried in the background until the \
                     connection is back or the session ends)",
                        &self.name,
                    )
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds() {
        assert_eq!(escape("a/b%c"), "a%2Fb%25c");
        for name in ["a/b%2Fc", "ключ/🔒", "..", "x\u{9f}y"] {
            assert_eq!(unescape(&escape(name)), name);
        }
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(sequence_of("_c_x-lock-0000000042"), 42);
        assert_eq!(sequence_of("by-hand"), i64::MIN);
        assert_eq!(mode_of("_c_x-__READ__0000000001"), LockMode::Shared);
        assert_eq!(
            mode_of("_c_x-__PERM_2_5__0000000001"),
            LockMode::Permits { count: 2, limit: 5 }
        );
        assert_eq!(mode_of("_c_x-lock-0000000001"), LockMode::Exclusive);
        let c = ZkConfig::from_url("zk://a:1,b/app?session_timeout=4s").unwrap();
        assert_eq!(c.connect_string, "a:1,b:2181/app");
        assert_eq!(c.session_timeout, Duration::from_secs(4));
    }
}
