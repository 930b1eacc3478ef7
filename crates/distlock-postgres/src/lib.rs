//! distlock backend on PostgreSQL **session advisory locks**.
//!
//! - Each held (or waiting) lock has a session of its own, taken from a small pool; a released
//!   session goes back to the pool only once its locks are verifiably gone.
//! - Exclusive locks use `pg_advisory_lock`, shared ones `pg_advisory_lock_shared`,
//!   semaphores a set of slot keys. Keys: see [`lock_key`] and [`slot_keys`].
//! - Fencing tokens come from a sequence (`distlock_token_seq`), durable across restarts and
//!   crashes; the sequence and an unlogged holder table are created on first use.
//! - The granting statement names the holder in the session's `application_name`
//!   (`distlock <token> <pid> <owner id>`); the holder rows that `inspect` reads are written
//!   off the lock's path by a task of their own, and count only while they agree with it.
//! - The lease is enforced by the server: the holder session sets `idle_session_timeout` (and
//!   TCP keepalives / `tcp_user_timeout`) to the TTL and is pinged every TTL/3, so a paused or
//!   partitioned holder is cut off by PostgreSQL and its locks freed. A closed session is seen
//!   at once (the connection task ends) and makes the lease `Lost`.
//! - Waiting happens in the server (`pg_advisory_lock` with `lock_timeout`); a dropped
//!   `acquire()` sends a cancel request and closes its session.
//! - For PgBouncer's transaction pooling, `?distlock_mode=transaction` takes
//!   `pg_advisory_xact_lock` inside a transaction held open for the lease and ended by `COMMIT`
//!   (`idle_in_transaction_session_timeout` = TTL; exclusive and shared locks, no semaphores,
//!   no holder rows).
//!
//! See `docs/postgres.md` for the full contract.
//!
//! ```no_run
//! # async fn demo() -> distlock_core::Result<()> {
//! let locks = distlock_postgres::connect("postgres://app@db/app").await?;
//! let lease = locks.mutex("orders/42").acquire().await?;
//! lease.release().await?;
//! # Ok(()) }
//! ```

mod config;
mod key;
mod rows;
mod sql;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use distlock_core::{
    Backend, BoxFuture, Capabilities, Error, ErrorKind, FencingToken, HeldLock, Holder,
    LeaseSignal, LockInfo, LockMode, LockName, Locks, OwnerId, OwnerInfo, Result, SLOT_PROBE, Wait,
    Waiter,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

pub use config::PostgresConfig;
pub use key::{lock_key, slot_keys, split_key};

use distlock_core::HolderRows;
use rows::HolderRow;
use sql::{AcquireSql, Statements};

/// The backend's name in errors and metrics.
pub const BACKEND: &str = "postgres";

/// How long a semaphore waiter blocks on one busy slot before trying the others again.
const SLOT_WAIT_SLICE: Duration = Duration::from_millis(250);

/// Connects to the server at `url` (`postgres://` or `postgresql://`) and returns a lock
/// client. One session is opened to check the URL and credentials.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future closes the session being opened.
pub async fn connect(url: &str) -> Result<Locks> {
    PostgresBackend::connect(url).await.map(Locks::new)
}

/// A lock service on one PostgreSQL database.
#[derive(Clone)]
pub struct PostgresBackend {
    shared: Arc<Shared>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("config", &self.shared.config)
            .finish()
    }
}

#[derive(Clone)]
enum Tls {
    None,
    #[cfg(feature = "tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

struct Shared {
    config: PostgresConfig,
    tls: Tls,
    sql: Statements,
    idle: StdMutex<Vec<PgConn>>,
    returned: Notify,
    permits: Arc<Semaphore>,
    /// The holder row writer, unless `distlock_holder_info=false` (or transaction mode).
    rows: Option<HolderRows<HolderRow>>,
    /// Wakes the settler ([`settle_idle_sessions`]).
    settle_wake: Arc<Notify>,
    /// Whether the settler has a session to reset; changed only under `idle`'s lock.
    settler_armed: AtomicBool,
    settler: StdMutex<Option<JoinHandle<()>>>,
}

/// Who to tell when a session ends: the lease that holds locks on it, if any.
#[derive(Default)]
struct ConnWatch {
    signal: StdMutex<Option<LeaseSignal>>,
}

/// One session and the task driving its connection.
struct PgConn {
    client: Client,
    /// The backend's statements, prepared on this session at first use (session mode only:
    /// a transaction pooler may run the next transaction on another server session).
    /// A short list, not a map: there are a dozen statements at most, and hashing a
    /// statement's text on every query cost more than comparing it.
    prepared: Option<StdMutex<Vec<(String, Statement)>>>,
    /// The TTL (ms) of the session's last grant, which its `idle_session_timeout` and TCP
    /// keepalive settings were derived from (-1 before any): the keepalives are sent again
    /// only when a grant's TTL differs.
    grant_ttl_ms: AtomicI64,
    /// Whether the session's settings are its own: false after a release, which leaves
    /// `application_name` and `idle_session_timeout` as the grant set them, until
    /// [`Shared::settle`] or a clean-up resets them.
    settled: bool,
    /// When the session was last given back to the pool.
    idle_since: Instant,
    /// The session's server process id, which keys its holder row (0 without holder rows).
    pid: u32,
    task: JoinHandle<()>,
    watch: Arc<ConnWatch>,
    _permit: OwnedSemaphorePermit,
}

impl PgConn {
    /// Runs `sql`, one of the backend's fixed statements, and returns its row, if any.
    /// Parsed and planned once per session, not on every call (not in transaction mode).
    async fn query_opt(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> std::result::Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let Some(prepared) = &self.prepared else {
            let rows = self.client.query_typed(sql, params).await?;
            return Ok(rows.into_iter().next());
        };
        let cached = prepared
            .lock()
            .unwrap()
            .iter()
            .find(|(text, _)| text == sql)
            .map(|(_, statement)| statement.clone());
        let statement = match cached {
            Some(statement) => statement,
            None => {
                let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
                let statement = self.client.prepare_typed(sql, &types).await?;
                prepared
                    .lock()
                    .unwrap()
                    .push((sql.to_owned(), statement.clone()));
                statement
            }
        };
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        self.client.query_opt(&statement, &values).await
    }

    /// Runs [`cleanup`](sql::Statements): releases everything and gives the session back its
    /// own settings.
    async fn reset(&mut self, sql: &Statements) -> std::result::Result<(), tokio_postgres::Error> {
        self.client.query_typed(&sql.cleanup, &[]).await?;
        self.settled = true;
        Ok(())
    }

    /// When the pool should reset the settings a release left on this idle session: after
    /// [`SETTLE_AFTER`], or a quarter of its `idle_session_timeout` if that is sooner.
    fn settle_at(&self) -> Option<Instant> {
        let ttl = Duration::from_millis(self.grant_ttl_ms.load(Ordering::Relaxed).max(0) as u64);
        (!self.settled).then(|| self.idle_since + SETTLE_AFTER.min(ttl / 4))
    }

    /// Whether the server may have ended this idle session: a release left the grant's
    /// `idle_session_timeout` on it, and the settler did not reset it in time (the process
    /// was paused, say) before half of that passed.
    fn may_have_timed_out(&self) -> bool {
        let ttl_ms = self.grant_ttl_ms.load(Ordering::Relaxed);
        !self.settled && self.idle_since.elapsed().as_millis() as i64 >= ttl_ms / 2
    }
}

/// How long a session that a release gave back stands idle in the pool before the pool
/// resets its settings: a session taken again sooner, as under steady use, is not reset at
/// all, and its next grant sets them anew.
const SETTLE_AFTER: Duration = Duration::from_millis(100);

/// The pool's settler: resets idle sessions' settings as [`Shared::settle`] says. Woken by
/// [`Shared::checkin`] when a session that needs it comes back and the settler is not
/// armed, it stays armed until it has found nothing to reset for [`SETTLE_AFTER`]: under
/// steady use, where sessions come back and go out again at once, it wakes a few times per
/// [`SETTLE_AFTER`], not on every release. Ends when the backend is dropped.
async fn settle_idle_sessions(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let mut busy_at = Instant::now();
        loop {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let quiet = busy_at.elapsed() >= SETTLE_AFTER;
            let next = match strong.settle(quiet).await {
                Some(next) => {
                    busy_at = Instant::now();
                    next
                }
                None if quiet => break,
                None => Instant::now() + SETTLE_AFTER / 4,
            };
            drop(strong);
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(settler) = self.settler.lock().unwrap().take() {
            settler.abort();
        }
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Nobody is told about a session we close on purpose.
        self.watch.signal.lock().unwrap().take();
        // Close the socket now: the server frees every lock of the session when it sees EOF.
        self.task.abort();
    }
}

impl PostgresBackend {
    /// Parses `url`, opens one session to check it and returns the backend.
    ///
    /// Errors: [`ErrorKind::InvalidUrl`] for a URL that does not parse, [`ErrorKind::Backend`]
    /// when the server refuses the login (a wrong password, an unknown role or database),
    /// [`ErrorKind::Connection`] when the server cannot be reached. No error contains the
    /// password.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the session being opened.
    pub async fn connect(url: &str) -> Result<PostgresBackend> {
        let config = PostgresConfig::from_url(url)?;
        Self::with_config(config).await
    }

    /// Builds the backend from a parsed configuration and opens one session to check it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the session being opened.
    pub async fn with_config(mut config: PostgresConfig) -> Result<PostgresBackend> {
        if !config.transaction_mode {
            // (PgBouncer refuses the `options` startup parameter; transaction mode sets this
            // in the waiting transaction instead.)
            let check_ms = config.client_check.as_millis().max(1);
            // lock_timeout 0 from the start: an unbounded wait does not set it (see
            // `Statements::wait_exclusive`), whatever the server's or role's default.
            let options = format!(
                "{} -c client_connection_check_interval={check_ms} -c lock_timeout=0",
                config.pg.get_options().unwrap_or("")
            );
            config.pg.options(options.trim_start());
        }
        let tls = make_tls(&config)?;
        let sql = Statements::new(&config);
        let rows = config.holder_info.then(|| {
            rows::start(
                config.pg.clone(),
                tls.clone(),
                &config.qualify("distlock_holders"),
            )
        });
        let settle_wake = Arc::new(Notify::new());
        let backend = PostgresBackend {
            shared: Arc::new(Shared {
                permits: Arc::new(Semaphore::new(config.max_connections)),
                rows,
                config,
                tls,
                sql,
                idle: StdMutex::new(Vec::new()),
                returned: Notify::new(),
                settle_wake: Arc::clone(&settle_wake),
                settler_armed: AtomicBool::new(false),
                settler: StdMutex::new(None),
            }),
        };
        let settler = tokio::spawn(settle_idle_sessions(
            Arc::downgrade(&backend.shared),
            settle_wake,
        ));
        *backend.shared.settler.lock().unwrap() = Some(settler);
        let conn = backend.shared.checkout().await?;
        if backend.shared.config.holder_info {
            backend.shared.prune_holder_rows(&conn).await?;
        }
        backend.shared.checkin(conn);
        Ok(backend)
    }

    /// The configuration (its `Debug` hides the password).
    pub fn config(&self) -> &PostgresConfig {
        &self.shared.config
    }

    /// The SQL that creates distlock's sequence and holder table, for a DBA to run where the
    /// connecting role may not create objects.
    pub fn setup_sql(&self) -> &str {
        &self.shared.sql.setup
    }
}

fn make_tls(config: &PostgresConfig) -> Result<Tls> {
    use tokio_postgres::config::SslMode;
    let wants_tls = config.pg.get_ssl_mode() == SslMode::Require;
    #[cfg(feature = "tls")]
    {
        if config.pg.get_ssl_mode() == SslMode::Disable {
            return Ok(Tls::None);
        }
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &config.ssl_root_cert {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    BACKEND,
                    format!("sslrootcert {path:?}: {e}"),
                )
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        BACKEND,
                        format!("sslrootcert {path:?}: {e}"),
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        BACKEND,
                        format!("sslrootcert {path:?}: {e}"),
                    )
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Config, BACKEND, format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let _ = wants_tls;
        Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
            client,
        )))
    }
    #[cfg(not(feature = "tls"))]
    {
        if wants_tls || config.ssl_root_cert.is_some() {
            return Err(Error::new(
                ErrorKind::Config,
                BACKEND,
                format!(
                    "{}: sslmode=require needs distlock-postgres built with its `tls` feature \
                     (distlock: `postgres-tls`)",
                    config.redacted_url()
                ),
            ));
        }
        Ok(Tls::None)
    }
}

/// Describes a driver error without the password: the server's message and SQLSTATE.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|c| c.code())
}

/// The session is gone: the connection closed, or the server ended it (an administrator's
/// `pg_terminate_backend`, a shutdown, a crash of another backend).
fn session_ended(error: &tokio_postgres::Error) -> bool {
    error.is_closed() || matches!(sqlstate(error), Some("57P01" | "57P02" | "57P03"))
}

/// What an acquisition has already retried once (see `PostgresBackend::set_up_or_fail`).
#[derive(Default)]
struct Retried {
    /// It created distlock's sequence and holder table.
    setup: bool,
    /// It replaced a session that had ended.
    ended_session: bool,
}

impl Shared {
    /// Removes any occurrence of the password from a message (belt and braces: the driver's
    /// messages do not contain it).
    fn scrub(&self, text: String) -> String {
        match self.config.pg.get_password() {
            Some(pw) if pw.len() >= 3 => {
                let pw = String::from_utf8_lossy(pw);
                text.replace(pw.as_ref(), "***")
            }
            _ => text,
        }
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, BACKEND, self.scrub(message.into()))
    }

    /// Maps a driver error during `what`.
    fn pg_error(&self, what: &str, error: &tokio_postgres::Error) -> Error {
        let kind = match sqlstate(error) {
            // The server refused the login (wrong password, unknown role or database): the
            // backend is unavailable to this configuration; a retry does not help.
            Some(code) if code.starts_with("28") || code == "3D000" => ErrorKind::Backend,
            Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                ErrorKind::Connection
            }
            Some("42501") => ErrorKind::Config,
            Some(_) => ErrorKind::Backend,
            None => ErrorKind::Connection,
        };
        self.error(kind, format!("{what}: {}", describe(error)))
    }

    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<PgConn> {
        let watch = Arc::new(ConnWatch::default());
        let connecting = |e: tokio_postgres::Error| {
            let mut error = self.pg_error(
                &format!("could not connect to {}", self.config.redacted_url()),
                &e,
            );
            if sqlstate(&e) == Some("3D000") {
                error = self.error(
                    ErrorKind::Backend,
                    format!(
                        "could not connect to {}: the database does not exist ({})",
                        self.config.redacted_url(),
                        describe(&e)
                    ),
                );
            }
            error
        };
        let (client, task) = connect_client(&self.config.pg, &self.tls, Arc::clone(&watch))
            .await
            .map_err(connecting)?;
        let pid = match &self.rows {
            Some(_) => simple_token(&client, "SELECT pg_backend_pid()")
                .await
                .map_err(connecting)?
                .unwrap_or(0) as u32,
            None => 0,
        };
        Ok(PgConn {
            client,
            prepared: (!self.config.transaction_mode).then(Default::default),
            grant_ttl_ms: AtomicI64::new(-1),
            settled: true,
            idle_since: Instant::now(),
            pid,
            task,
            watch,
            _permit: permit,
        })
    }

    /// A session from the pool, or a new one (waiting while `max_connections` are in use).
    async fn checkout(&self) -> Result<PgConn> {
        loop {
            loop {
                let conn = self.idle.lock().unwrap().pop();
                match conn {
                    Some(conn) if !conn.client.is_closed() && !conn.may_have_timed_out() => {
                        return Ok(conn);
                    }
                    Some(_closed) => continue,
                    None => break,
                }
            }
            let permits = Arc::clone(&self.permits);
            tokio::select! {
                permit = permits.acquire_owned() => {
                    return self.open(permit.expect("never closed")).await;
                }
                _ = self.returned.notified() => {}
            }
        }
    }

    /// Has the writer record that `conn`'s session holds `keys` with `token`, or waits for
    /// them (no token), as `request` and `spec` say.
    fn record(
        &self,
        conn: &PgConn,
        request: &distlock_core::AcquireRequest,
        spec: &Spec,
        keys: &[i64],
        token: Option<u64>,
    ) {
        let Some(rows) = &self.rows else { return };
        rows.upsert(
            conn.pid,
            HolderRow {
                name: request.name.as_str().to_owned(),
                mode: spec.mode,
                permits: spec.permits,
                limit: spec.limit,
                keys: keys.to_vec(),
                owner: request.owner.clone(),
                since: match token {
                    Some(_) => SystemTime::now(),
                    None => request.owner.since,
                },
                ttl: request.options.ttl,
                token,
            },
        );
    }

    /// Has the writer delete the row of `conn`'s session, which holds and waits no more.
    fn forget_row(&self, conn: &PgConn) {
        if let Some(rows) = &self.rows {
            rows.delete(conn.pid);
        }
    }

    /// Returns a session whose locks are all released to the pool.
    fn checkin(&self, mut conn: PgConn) {
        conn.watch.signal.lock().unwrap().take();
        if conn.client.is_closed() {
            return;
        }
        conn.idle_since = Instant::now();
        let unsettled = !conn.settled;
        let mut idle = self.idle.lock().unwrap();
        idle.push(conn);
        // Under the pool's lock, as the settler's "nothing left to do" is: no wake is lost.
        let wake_settler = unsettled && !self.settler_armed.swap(true, Ordering::Relaxed);
        drop(idle);
        self.returned.notify_one();
        if wake_settler {
            self.settle_wake.notify_one();
        }
    }

    /// Resets the settings of the idle sessions that a release gave back at least
    /// [`SETTLE_AFTER`] ago (see [`Statements::cleanup`](sql::Statements)), and returns when
    /// the next one is due. When none is left to reset and `may_disarm`, clears
    /// `settler_armed`, so that the next such session wakes the settler.
    async fn settle(&self, may_disarm: bool) -> Option<Instant> {
        let now = Instant::now();
        let due: Vec<PgConn> = self
            .idle
            .lock()
            .unwrap()
            .extract_if(.., |conn| conn.settle_at().is_some_and(|at| at <= now))
            .collect();
        for mut conn in due {
            // A session that cannot be reset is closed (dropped).
            if conn.reset(&self.sql).await.is_ok() {
                self.checkin(conn);
            }
        }
        let idle = self.idle.lock().unwrap();
        let next = idle.iter().filter_map(PgConn::settle_at).min();
        if next.is_none() && may_disarm {
            self.settler_armed.store(false, Ordering::Relaxed);
        }
        next
    }

    /// Deletes the holder rows of sessions that are gone, once per backend. A session keeps
    /// its row across releases and only its next acquisition overwrites it, so the row of a
    /// session that ended (its process died, or the server cut it off) would stay forever:
    /// readers skip it, but the table would only grow.
    async fn prune_holder_rows(&self, conn: &PgConn) -> Result<()> {
        match conn.client.batch_execute(&self.sql.prune).await {
            // Not created yet: nothing to prune.
            Err(e) if sqlstate(&e) == Some("42P01") => Ok(()),
            result => {
                result.map_err(|e| self.pg_error("deleting the holder rows of closed sessions", &e))
            }
        }
    }

    /// Creates the sequence and the holder table, serialised by a transaction-level advisory
    /// lock so concurrent first users do not race.
    async fn setup(&self) -> Result<()> {
        let conn = self.checkout().await?;
        let script = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7160243914190931968); {} COMMIT;",
            self.sql.setup
        );
        match conn.client.batch_execute(&script).await {
            Ok(()) => {
                self.checkin(conn);
                Ok(())
            }
            Err(e) => Err(self.error(
                ErrorKind::Config,
                format!(
                    "distlock's token sequence and holder table do not exist and could not be \
                     created ({}). Have an administrator run:\n{}\nor set distlock_schema= to a \
                     schema this role may create objects in",
                    describe(&e),
                    self.sql.setup
                ),
            )),
        }
    }
}

/// Opens a session and spawns the task that drives its connection; `watch` hears when it
/// ends.
async fn connect_client(
    pg: &tokio_postgres::Config,
    tls: &Tls,
    watch: Arc<ConnWatch>,
) -> std::result::Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    Ok(match tls {
        Tls::None => {
            let (client, connection) = pg.connect(NoTls).await?;
            (client, spawn_connection(connection, watch))
        }
        #[cfg(feature = "tls")]
        Tls::Rustls(tls) => {
            let (client, connection) = pg.connect(tls.clone()).await?;
            (client, spawn_connection(connection, watch))
        }
    })
}

fn spawn_connection<F>(connection: F, watch: Arc<ConnWatch>) -> JoinHandle<()>
where
    F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let outcome = connection.await;
        let signal = watch.signal.lock().unwrap().take();
        if let Some(signal) = signal {
            let why = match outcome {
                Ok(()) => "the PostgreSQL session was closed".to_owned(),
                Err(e) => format!("the PostgreSQL session ended: {}", describe(&e)),
            };
            signal.lost(why);
        }
    })
}

/// What one acquisition asks the server for.
struct Spec {
    /// Candidate keys (one for exclusive/shared; the slots for a semaphore).
    keys: Vec<i64>,
    /// How many of them to take.
    count: usize,
    shared: bool,
    mode: &'static str,
    permits: i32,
    limit: i32,
}

impl Spec {
    fn new(name: &str, mode: LockMode) -> Spec {
        match mode {
            LockMode::Shared => Spec {
                keys: vec![lock_key(name)],
                count: 1,
                shared: true,
                mode: "shared",
                permits: 1,
                limit: 0,
            },
            LockMode::Permits { count, limit } => Spec {
                keys: slot_keys(name, limit),
                count: count as usize,
                shared: false,
                mode: "permits",
                permits: count as i32,
                limit: limit as i32,
            },
            _ => Spec {
                keys: vec![lock_key(name)],
                count: 1,
                shared: false,
                mode: "exclusive",
                permits: 1,
                limit: 0,
            },
        }
    }
}

/// An acquisition in progress: owns its session until it is granted or given back. Dropped
/// midway (the caller's future was cancelled), it cancels the server-side wait and closes the
/// session, so nothing stays held or queued.
struct Attempt<'a> {
    shared: &'a Shared,
    conn: Option<PgConn>,
    waiting: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        self.shared.forget_row(&conn);
        if self.waiting {
            let token = conn.client.cancel_token();
            let tls = self.shared.tls.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = match tls {
                        Tls::None => token.cancel_query(NoTls).await,
                        #[cfg(feature = "tls")]
                        Tls::Rustls(tls) => token.cancel_query(tls).await,
                    };
                });
            }
        }
        drop(conn);
    }
}

impl Attempt<'_> {
    fn conn(&self) -> &PgConn {
        self.conn.as_ref().expect("session present")
    }

    /// Gives the session back to the pool after removing every lock and row of this attempt.
    async fn clean_up_and_return(&mut self) {
        self.waiting = false;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.shared.forget_row(&conn);
        if conn.reset(&self.shared.sql).await.is_ok() {
            self.shared.checkin(conn);
        }
    }
}

type Row = (Vec<i64>, Option<i64>);

/// Runs a simple-protocol query and returns the first column of its first row as a number
/// (`None` for SQL NULL).
async fn simple_token(
    client: &Client,
    sql: &str,
) -> std::result::Result<Option<i64>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some(row.get(0).and_then(|v| v.parse().ok()))
            }
            _ => None,
        })
        .flatten())
}

/// Transaction mode: ends the attempt's transaction (and any lock in it) and gives the session
/// back; a session that cannot roll back is closed.
async fn rollback_and_return(attempt: &mut Attempt<'_>) {
    attempt.waiting = false;
    let Some(conn) = attempt.conn.take() else {
        return;
    };
    if conn.client.batch_execute("ROLLBACK").await.is_ok() {
        attempt.shared.checkin(conn);
    }
}

impl PostgresBackend {
    async fn acquire_impl(
        &self,
        request: &distlock_core::AcquireRequest,
        signal: LeaseSignal,
    ) -> Result<Box<dyn HeldLock>> {
        let started = Instant::now();
        let shared = &*self.shared;
        let name = request.name.as_str();
        let spec = Spec::new(name, request.options.mode);
        let ttl = request.options.ttl;
        let wait = request.options.wait;
        let deadline = match wait {
            Wait::Bounded(bound) => Some(started + bound),
            _ => None,
        };
        let mut retried = Retried::default();
        let mut attempt = Attempt {
            shared,
            conn: Some(shared.checkout().await?),
            waiting: false,
        };
        let mut held = Vec::new();
        // 1. Try without waiting: grants and takes a token in one trip. A single key that may
        // wait goes straight to the server's wait instead: a try first would cost a contended
        // acquisition a round trip and its place in the server's queue.
        if wait == Wait::NoWait || spec.keys.len() > 1 {
            let sent = Instant::now();
            let token;
            (held, token) = loop {
                match self
                    .try_keys(&attempt, request, &spec.keys, spec.count, &[], &spec)
                    .await
                {
                    Ok(row) => break row,
                    Err(e) => self.set_up_or_fail(&mut attempt, e, &mut retried).await?,
                }
            };
            if let Some(token) = token {
                return Ok(self.granted(attempt, request, &spec, held, token, sent, signal));
            }
            if wait == Wait::NoWait {
                if held.is_empty() {
                    let conn = attempt.conn.take().expect("session present");
                    shared.checkin(conn);
                } else {
                    attempt.clean_up_and_return().await;
                }
                return Err(shared.error(ErrorKind::WouldBlock, "held by another session"));
            }
        }
        // 2. Wait in the server.
        shared.record(attempt.conn(), request, &spec, &spec.keys, None);
        loop {
            if !held.is_empty() {
                // A semaphore that got only some of its slots: give them back before waiting.
                self.unlock_all(&mut attempt).await?;
                held.clear();
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                attempt.clean_up_and_return().await;
                return Err(self.timeout(wait));
            }
            let (key, slice, finish) = if spec.keys.len() == 1 {
                // Leave the client-side bound a little room to see the server's answer.
                let lock_timeout = remaining.map(|r| r.saturating_sub((r / 20).min(ms(25))));
                (spec.keys[0], lock_timeout, true)
            } else {
                let busy = spec.keys[rand_index(spec.keys.len())];
                let slice = remaining.map_or(SLOT_WAIT_SLICE, |r| r.min(SLOT_WAIT_SLICE));
                (busy, Some(slice), false)
            };
            let timeout_ms = slice.map_or(0, |s| s.as_millis().max(1) as i64);
            attempt.waiting = true;
            let sent = Instant::now();
            let outcome = self
                .wait_key(&attempt, request, &spec, key, timeout_ms, finish)
                .await;
            attempt.waiting = false;
            match outcome {
                Ok((got, Some(token))) => {
                    let granted_at = self.fresh_grant(&attempt, sent, ttl).await?;
                    return Ok(
                        self.granted(attempt, request, &spec, got, token, granted_at, signal)
                    );
                }
                Ok((got, None)) => {
                    // A semaphore slot: take the remaining permits from the other slots.
                    let others: Vec<i64> =
                        spec.keys.iter().copied().filter(|k| *k != key).collect();
                    let sent = Instant::now();
                    match self
                        .try_keys(&attempt, request, &others, spec.count - 1, &got, &spec)
                        .await
                    {
                        Ok((all, Some(token))) => {
                            let granted_at = self.fresh_grant(&attempt, sent, ttl).await?;
                            return Ok(self
                                .granted(attempt, request, &spec, all, token, granted_at, signal));
                        }
                        Ok((partial, None)) => held = partial,
                        Err(e) => {
                            attempt.conn = None;
                            return Err(shared.pg_error("acquire", &e));
                        }
                    }
                }
                Err(e) if matches!(sqlstate(&e), Some("55P03") | Some("57014")) => {
                    // lock_timeout fired (or the wait was cancelled). The lock may have been
                    // granted just as the timeout fired: a session lock survives the error,
                    // so release whatever this session holds before it is reused.
                    if spec.keys.len() == 1 {
                        attempt.clean_up_and_return().await;
                        if let Some(deadline) = deadline {
                            tokio::time::sleep_until(deadline.into()).await;
                        }
                        return Err(self.timeout(wait));
                    }
                    self.unlock_all(&mut attempt).await?;
                }
                Err(e) => {
                    self.set_up_or_fail(&mut attempt, e, &mut retried).await?;
                    // A new session: its waiter row is a new one.
                    shared.record(attempt.conn(), request, &spec, &spec.keys, None);
                }
            }
        }
    }

    /// After an acquire statement failed with `error`, gives the attempt a new session to
    /// run the statement again, once for each of two causes: distlock's sequence or holder
    /// table was missing (it creates them first), or the session had ended (a pooled session
    /// that the server closed while it stood idle, before the pool could see it go: a
    /// restart, `pg_terminate_backend`). Otherwise closes the session and returns the error.
    async fn set_up_or_fail(
        &self,
        attempt: &mut Attempt<'_>,
        error: tokio_postgres::Error,
        retried: &mut Retried,
    ) -> Result<()> {
        // Either way the session goes: it may have taken nothing (a statement that fails
        // at parse time), but closing it makes sure. An ended session's locks ended with it,
        // and its waiter row goes with it.
        if let Some(conn) = attempt.conn.take() {
            self.shared.forget_row(&conn);
        }
        if sqlstate(&error) == Some("42P01") && !retried.setup {
            retried.setup = true;
            self.shared.setup().await?;
        } else if session_ended(&error) && !retried.ended_session {
            retried.ended_session = true;
            tracing::debug!(backend = BACKEND, %error, "the session had ended; retrying on a new one");
        } else {
            return Err(self.shared.pg_error("acquire", &error));
        }
        attempt.conn = Some(self.shared.checkout().await?);
        Ok(())
    }

    /// Transaction mode: `BEGIN`, then `pg_[try_]advisory_xact_lock[_shared]` with the token
    /// and the transaction-local settings in the same statement; the transaction stays open
    /// for the lease (see `docs/postgres.md`). Every value in the SQL is a number, so the
    /// simple-query protocol carries `BEGIN` and the try in one round trip.
    async fn acquire_xact(
        &self,
        request: &distlock_core::AcquireRequest,
        signal: LeaseSignal,
    ) -> Result<Box<dyn HeldLock>> {
        let started = Instant::now();
        let shared = &*self.shared;
        let spec = Spec::new(request.name.as_str(), request.options.mode);
        if spec.keys.len() != 1 {
            return Err(shared.error(
                ErrorKind::Unsupported,
                "semaphores need session mode (distlock_mode=transaction takes one \
                 transaction-level advisory lock per lease)",
            ));
        }
        let key = spec.keys[0];
        let (try_fn, lock_fn) = if spec.shared {
            (
                "pg_try_advisory_xact_lock_shared",
                "pg_advisory_xact_lock_shared",
            )
        } else {
            ("pg_try_advisory_xact_lock", "pg_advisory_xact_lock")
        };
        let ttl = request.options.ttl;
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let seq = shared.config.qualify("distlock_token_seq");
        // Local to the transaction, so nothing outlives it on a pooled server connection.
        // `application_name` carries the holder's identity (`distlock <token> <pid> <owner>`)
        // for inspection, since no holder row can be written; `token` is a column of `n`.
        let settings = format!(
            "set_config('idle_in_transaction_session_timeout', '{ttl_ms}', true), \
             set_config('tcp_keepalives_idle', '{}', true), \
             set_config('tcp_keepalives_interval', '{}', true), \
             set_config('tcp_keepalives_count', '3', true), \
             set_config('tcp_user_timeout', '{ttl_ms}', true), \
             set_config('application_name', 'distlock ' || token || ' {} {}', true)",
            (ttl_ms / 3000).max(1),
            (ttl_ms / 9000).max(1),
            request.owner.pid,
            request.owner.owner,
        );
        let wait = request.options.wait;
        let deadline = match wait {
            Wait::Bounded(bound) => Some(started + bound),
            _ => None,
        };
        let try_sql = format!(
            "BEGIN; WITH g AS MATERIALIZED (SELECT {try_fn}({key}) AS ok), \
             n AS MATERIALIZED (SELECT nextval('{seq}') AS token FROM g WHERE ok), \
             t AS MATERIALIZED (SELECT token, {settings} FROM n) \
             SELECT (SELECT token FROM t)"
        );
        let mut attempt = Attempt {
            shared,
            conn: Some(shared.checkout().await?),
            waiting: false,
        };
        let mut retried = Retried::default();
        loop {
            let sent = Instant::now();
            match simple_token(&attempt.conn().client, &try_sql).await {
                Ok(Some(token)) => {
                    return Ok(self.granted(
                        attempt,
                        request,
                        &spec,
                        vec![key],
                        token,
                        sent,
                        signal,
                    ));
                }
                Ok(None) => break,
                Err(e) => self.set_up_or_fail(&mut attempt, e, &mut retried).await?,
            }
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if wait == Wait::NoWait || remaining == Some(Duration::ZERO) {
            rollback_and_return(&mut attempt).await;
            return Err(if wait == Wait::NoWait {
                shared.error(ErrorKind::WouldBlock, "held by another session")
            } else {
                self.timeout(wait)
            });
        }
        let lock_timeout = remaining.map_or(0, |r| {
            r.saturating_sub((r / 20).min(ms(25))).as_millis().max(1) as u64
        });
        let check_ms = shared.config.client_check.as_millis().max(1);
        let wait_sql = format!(
            "WITH w AS MATERIALIZED (SELECT set_config('lock_timeout', '{lock_timeout}', true), \
             set_config('client_connection_check_interval', '{check_ms}', true)), \
             l AS MATERIALIZED (SELECT {lock_fn}({key})::text AS v FROM w), \
             n AS MATERIALIZED (SELECT nextval('{seq}') AS token FROM l), \
             t AS MATERIALIZED (SELECT token, {settings}, \
             set_config('lock_timeout', '0', true) FROM n) \
             SELECT (SELECT token FROM t)"
        );
        attempt.waiting = true;
        let sent = Instant::now();
        let outcome = simple_token(&attempt.conn().client, &wait_sql).await;
        attempt.waiting = false;
        match outcome {
            Ok(Some(token)) => {
                let granted_at = self.fresh_grant(&attempt, sent, ttl).await?;
                Ok(self.granted(
                    attempt,
                    request,
                    &spec,
                    vec![key],
                    token,
                    granted_at,
                    signal,
                ))
            }
            Err(e) if matches!(sqlstate(&e), Some("55P03") | Some("57014")) => {
                // ROLLBACK ends the transaction and with it a lock granted just as the
                // timeout fired: no race is left.
                rollback_and_return(&mut attempt).await;
                if let Some(deadline) = deadline {
                    tokio::time::sleep_until(deadline.into()).await;
                }
                Err(self.timeout(wait))
            }
            Ok(None) => {
                attempt.conn = None;
                Err(shared.error(
                    ErrorKind::Backend,
                    "acquire: the lock statement returned no token",
                ))
            }
            Err(e) => {
                attempt.conn = None;
                Err(shared.pg_error("acquire", &e))
            }
        }
    }

    fn timeout(&self, wait: Wait) -> Error {
        let message = match wait {
            Wait::Bounded(bound) => {
                format!("not acquired within {}", humantime::format_duration(bound))
            }
            _ => "not acquired".to_owned(),
        };
        self.shared.error(ErrorKind::Timeout, message)
    }

    async fn unlock_all(&self, attempt: &mut Attempt<'_>) -> Result<()> {
        let conn = attempt.conn.as_mut().expect("session present");
        conn.reset(&self.shared.sql).await.map_err(|e| {
            attempt.conn = None;
            self.shared.pg_error("acquire", &e)
        })
    }

    /// After a wait, the session's idle timer (the server-side lease) starts when the granting
    /// statement ends, which may be long after it was sent. If the wait was long, one ping
    /// gives a send time close to the timer's start.
    async fn fresh_grant(
        &self,
        attempt: &Attempt<'_>,
        sent: Instant,
        ttl: Duration,
    ) -> Result<Instant> {
        if sent.elapsed() < ttl / 10 {
            return Ok(sent);
        }
        let ping = Instant::now();
        attempt
            .conn()
            .client
            .simple_query("")
            .await
            .map_err(|e| self.shared.pg_error("acquire", &e))?;
        Ok(ping)
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_keys(
        &self,
        attempt: &Attempt<'_>,
        request: &distlock_core::AcquireRequest,
        candidates: &[i64],
        count: usize,
        held: &[i64],
        spec: &Spec,
    ) -> std::result::Result<Row, tokio_postgres::Error> {
        let statements = &self.shared.sql;
        if let ([key], 1, []) = (candidates, count, held) {
            let sql = if spec.shared {
                &statements.try_one_shared
            } else {
                &statements.try_one_exclusive
            };
            return self
                .run_acquire(attempt, sql, request, Some(*key), &[(key, Type::INT8)])
                .await;
        }
        let sql = if spec.shared {
            &statements.try_shared
        } else {
            &statements.try_exclusive
        };
        let count = count as i32;
        self.run_acquire(
            attempt,
            sql,
            request,
            None,
            &[
                (&candidates, Type::INT8_ARRAY),
                (&count, Type::INT4),
                (&held, Type::INT8_ARRAY),
            ],
        )
        .await
    }

    async fn wait_key(
        &self,
        attempt: &Attempt<'_>,
        request: &distlock_core::AcquireRequest,
        spec: &Spec,
        key: i64,
        lock_timeout_ms: i64,
        finish: bool,
    ) -> std::result::Result<Row, tokio_postgres::Error> {
        let statements = &self.shared.sql;
        let sql = match (spec.shared, lock_timeout_ms != 0) {
            (false, false) => &statements.wait_exclusive,
            (true, false) => &statements.wait_shared,
            (false, true) => &statements.wait_exclusive_bounded,
            (true, true) => &statements.wait_shared_bounded,
        };
        self.run_acquire(
            attempt,
            sql,
            request,
            Some(key),
            &[
                (&key, Type::INT8),
                (&lock_timeout_ms, Type::INT8),
                (&finish, Type::BOOL),
            ],
        )
        .await
    }

    /// Runs an acquire statement: the parameters every one takes (see
    /// [`AcquireSql`](sql::AcquireSql)), then `lock_params` from `$4`. A statement for the
    /// one key `single` answers with the token alone, or no row; the others with the keys got
    /// and the token.
    async fn run_acquire(
        &self,
        attempt: &Attempt<'_>,
        sql: &AcquireSql,
        request: &distlock_core::AcquireRequest,
        single: Option<i64>,
        lock_params: &[(&(dyn ToSql + Sync), Type)],
    ) -> std::result::Result<Row, tokio_postgres::Error> {
        // ` <pid> <owner id>`, pushed rather than `format!`ed: this runs at every acquisition.
        let mut holder_name = String::with_capacity(44);
        holder_name.push(' ');
        holder_name.push_str(itoa::Buffer::new().format(request.owner.pid));
        holder_name.push(' ');
        request.owner.owner.push_hex(&mut holder_name);
        let ttl = request.options.ttl.as_millis() as i64;
        let conn = attempt.conn();
        // A released session keeps its grant's settings until the pool resets it
        // (`settled`); the keepalives stay even then.
        let same_ttl = conn.grant_ttl_ms.load(Ordering::Relaxed) == ttl;
        let set_keepalives = !same_ttl;
        let sql = sql.pick(conn.settled || !same_ttl);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> =
            Vec::with_capacity(3 + lock_params.len());
        params.extend_from_slice(&[
            (&holder_name, Type::TEXT),
            (&ttl, Type::INT8),
            (&set_keepalives, Type::BOOL),
        ]);
        params.extend_from_slice(lock_params);
        let (keys, token): Row = match (single, conn.query_opt(sql, &params).await?) {
            (_, None) => (Vec::new(), None),
            (Some(key), Some(row)) => (vec![key], row.try_get(0)?),
            (None, Some(row)) => (row.try_get(0)?, row.try_get(1)?),
        };
        if token.is_some() {
            conn.grant_ttl_ms.store(ttl, Ordering::Relaxed);
        }
        Ok((keys, token))
    }

    #[allow(clippy::too_many_arguments)]
    fn granted(
        &self,
        mut attempt: Attempt<'_>,
        request: &distlock_core::AcquireRequest,
        spec: &Spec,
        keys: Vec<i64>,
        token: i64,
        granted_at: Instant,
        signal: LeaseSignal,
    ) -> Box<dyn HeldLock> {
        let conn = attempt.conn.take().expect("session present");
        self.shared
            .record(&conn, request, spec, &keys, Some(token as u64));
        *conn.watch.signal.lock().unwrap() = Some(signal.clone());
        if conn.client.is_closed() {
            signal.lost("the PostgreSQL session closed as the lock was granted");
        }
        Box::new(PgHeld {
            shared: Arc::clone(&self.shared),
            conn: tokio::sync::Mutex::new(Some(conn)),
            keys,
            shared_mode: spec.shared,
            token: FencingToken::new(token as u64),
            granted_at,
        })
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rand_index(len: usize) -> usize {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    (RandomState::new().hash_one(Instant::now()) % len as u64) as usize
}

/// A granted lock: its session, kept out of the pool until released.
struct PgHeld {
    shared: Arc<Shared>,
    conn: tokio::sync::Mutex<Option<PgConn>>,
    /// The keys held (several for a semaphore).
    keys: Vec<i64>,
    shared_mode: bool,
    token: FencingToken,
    granted_at: Instant,
}

impl Drop for PgHeld {
    fn drop(&mut self) {
        // Not released: the session closes with its lock, and its row goes with it.
        if let Some(conn) = self.conn.get_mut() {
            self.shared.forget_row(conn);
        }
    }
}

impl PgHeld {
    fn lost(&self, message: impl Into<String>) -> Error {
        self.shared.error(ErrorKind::Lost, message)
    }
}

impl HeldLock for PgHeld {
    fn token(&self) -> FencingToken {
        self.token
    }

    /// The send time of the statement that granted the lock: the server's idle timer, which
    /// is the lease, starts when that statement ends, so no earlier.
    fn granted_at(&self) -> Option<Instant> {
        Some(self.granted_at)
    }

    fn renew(&self, _ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let guard = self.conn.lock().await;
            let Some(conn) = guard.as_ref() else {
                return Err(self.lost("the lock was released"));
            };
            if conn.client.is_closed() {
                return Err(self.lost("the PostgreSQL session holding the lock has ended"));
            }
            match conn
                .query_opt(&self.shared.sql.renew, &[(&self.keys, Type::INT8_ARRAY)])
                .await
            {
                Ok(row) => {
                    let count: i64 = row.and_then(|r| r.try_get(0).ok()).unwrap_or(0);
                    if count == self.keys.len() as i64 {
                        Ok(())
                    } else {
                        Err(self.lost("the session no longer holds the advisory lock"))
                    }
                }
                Err(e) if e.is_closed() || conn.client.is_closed() => {
                    Err(self.lost(format!("the PostgreSQL session ended: {}", describe(&e))))
                }
                Err(e) => Err(self.shared.pg_error("renewal", &e)),
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(mut conn) = self.conn.lock().await.take() else {
                return Ok(());
            };
            if self.shared.config.transaction_mode {
                // The lock is the transaction's: COMMIT ends both (an aborted transaction's
                // COMMIT rolls back, which releases it too).
                return match conn.client.batch_execute("COMMIT").await {
                    Ok(()) => {
                        self.shared.checkin(conn);
                        Ok(())
                    }
                    Err(e) if e.is_closed() || conn.client.is_closed() => {
                        Err(self
                            .lost("the PostgreSQL session had ended before the release".to_owned()))
                    }
                    Err(e) => Err(self.shared.pg_error("release", &e)),
                };
            }
            let statements = &self.shared.sql;
            self.shared.forget_row(&conn);
            let released = match (self.shared_mode, self.keys.as_slice()) {
                (shared_mode, [key]) => {
                    let sql = if shared_mode {
                        &statements.release_one_shared
                    } else {
                        &statements.release_one_exclusive
                    };
                    conn.query_opt(sql, &[(key, Type::INT8)]).await.map(|row| {
                        let released = row.and_then(|r| r.try_get::<_, bool>(0).ok());
                        released == Some(true)
                    })
                }
                (shared_mode, keys) => {
                    let sql = if shared_mode {
                        &statements.release_shared
                    } else {
                        &statements.release_exclusive
                    };
                    conn.query_opt(sql, &[(&keys, Type::INT8_ARRAY)])
                        .await
                        .map(|row| {
                            let released = row.and_then(|r| r.try_get::<_, i64>(0).ok());
                            released == Some(keys.len() as i64)
                        })
                }
            };
            match released {
                Ok(all_released) => {
                    if all_released {
                        conn.settled = false;
                        self.shared.checkin(conn);
                    }
                    // Otherwise the session lost its lock somehow: close it (drop) for safety.
                    Ok(())
                }
                Err(e) if e.is_closed() => {
                    Err(self.lost("the PostgreSQL session had ended before the release".to_owned()))
                }
                Err(e) => Err(self.shared.pg_error("release", &e)),
            }
        })
    }
}

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        if self.shared.config.transaction_mode {
            // One transaction-level lock per lease; a semaphore's slot search would need
            // savepoints per slot and is not offered.
            Capabilities::EXCLUSIVE_ONLY.with_shared()
        } else {
            Capabilities::EXCLUSIVE_ONLY.with_shared().with_semaphore()
        }
    }

    fn acquire<'a>(
        &'a self,
        request: &'a distlock_core::AcquireRequest,
        signal: LeaseSignal,
    ) -> BoxFuture<'a, Result<Box<dyn HeldLock>>> {
        if self.shared.config.transaction_mode {
            Box::pin(self.acquire_xact(request, signal))
        } else {
            Box::pin(self.acquire_impl(request, signal))
        }
    }

    fn inspect<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>> {
        Box::pin(async move {
            self.flush_rows().await;
            let text = name.as_str();
            let key = lock_key(text);
            let sql = &self.shared.sql;
            let probe = SLOT_PROBE as i32;
            let rows = self
                .query_locks(
                    &sql.inspect,
                    &sql.inspect_without_rows,
                    &[
                        (&text, Type::TEXT),
                        (&key, Type::INT8),
                        (&probe, Type::INT4),
                    ],
                )
                .await?;
            // One lock: its sessions without a row come named by its key, not its name. Those
            // that hold semaphore slots (any other key) count once per session, with a permit
            // per slot.
            let mut info = LockInfo::new(text, BACKEND);
            let key = key.to_string();
            let mut slot_holders: BTreeMap<i32, (u32, &tokio_postgres::Row)> = BTreeMap::new();
            for row in &rows {
                let rowless = matches!(row.try_get::<_, Option<String>>(4), Ok(None));
                if rowless && row.try_get::<_, String>(0).is_ok_and(|k| k != key) {
                    if let (Ok(Some(pid)), Ok(Some(true))) = (
                        row.try_get::<_, Option<i32>>(15),
                        row.try_get::<_, Option<bool>>(11),
                    ) {
                        slot_holders.entry(pid).or_insert((0, row)).0 += 1;
                    }
                    continue;
                }
                add_session(&mut info, row, None);
            }
            // The limit the rows record (0 where none does: not known).
            let limit = info.permit_limit().unwrap_or(0);
            for (count, row) in slot_holders.into_values() {
                add_session(&mut info, row, Some(LockMode::Permits { count, limit }));
            }
            Ok(info)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            self.flush_rows().await;
            let sql = &self.shared.sql;
            let rows = self
                .query_locks(&sql.list, &sql.list_without_rows, &[(&prefix, Type::TEXT)])
                .await?;
            let mut infos: Vec<LockInfo> = Vec::new();
            for row in &rows {
                let Ok(name) = row.try_get::<_, String>(0) else {
                    continue;
                };
                let info = match infos.last_mut() {
                    Some(last) if last.name == name => last,
                    _ => {
                        infos.push(LockInfo::new(name, BACKEND));
                        infos.last_mut().expect("pushed")
                    }
                };
                add_session(info, row, None);
            }
            infos.retain(|i| !i.holders.is_empty() || !i.waiters.is_empty());
            Ok(infos)
        })
    }

    fn force_release<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            self.flush_rows().await;
            let conn = self.shared.checkout().await?;
            let key = lock_key(name.as_str());
            let text = name.as_str();
            let result = conn
                .client
                .query_typed_one(
                    &self.shared.sql.force_release,
                    &[(&key, Type::INT8), (&text, Type::TEXT)],
                )
                .await;
            match result {
                Ok(row) => {
                    self.shared.checkin(conn);
                    Ok(row.try_get::<_, i64>(0).unwrap_or(0) as usize)
                }
                Err(e) => Err(self.shared.pg_error("force release", &e)),
            }
        })
    }
}

impl PostgresBackend {
    /// Waits until this backend's holder rows are written, so that its own inspection sees
    /// its own holders and waiters.
    async fn flush_rows(&self) {
        if let Some(rows) = &self.shared.rows {
            rows.flush().await;
        }
    }

    /// Runs `with_rows` (or `without_rows` when there are no holder rows to read), one of
    /// the [`locks_sql`](sql) statements.
    async fn query_locks(
        &self,
        with_rows: &str,
        without_rows: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let conn = self.shared.checkout().await?;
        let sql = if self.shared.rows.is_some() {
            with_rows
        } else {
            without_rows
        };
        let mut result = conn.client.query_typed(sql, params).await;
        if matches!(&result, Err(e) if sqlstate(e) == Some("42P01")) {
            // No holder table: nothing was ever acquired through distlock here.
            result = conn.client.query_typed(without_rows, params).await;
        }
        match result {
            Ok(rows) => {
                self.shared.checkin(conn);
                Ok(rows)
            }
            Err(e) => Err(self.shared.pg_error("inspect", &e)),
        }
    }
}

/// Adds one row of a [`locks_sql`](sql) statement to `info`: a session with its holder row,
/// or a session without one (a distlock holder whose row is not written yet, named by its
/// `application_name`, or a session that locks without distlock, shown with owner id 0 and
/// token 0). `given_mode`, where given, replaces the row's mode.
fn add_session(info: &mut LockInfo, row: &tokio_postgres::Row, given_mode: Option<LockMode>) {
    type Columns = (
        String,
        i32,
        i32,
        Option<String>,
        Option<String>,
        Option<i32>,
        Option<String>,
        i64,
        Option<i64>,
        Option<i64>,
        Option<bool>,
        Option<bool>,
        Option<i64>,
        Option<String>,
        Option<i32>,
        Option<String>,
        Option<String>,
    );
    let parsed = (|| -> std::result::Result<Columns, tokio_postgres::Error> {
        Ok((
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
            row.try_get(7)?,
            row.try_get(8)?,
            row.try_get(9)?,
            row.try_get(10)?,
            row.try_get(11)?,
            row.try_get(12)?,
            row.try_get(13)?,
            row.try_get(14)?,
            row.try_get(15)?,
            row.try_get(16)?,
            row.try_get(17)?,
        ))
    })();
    let Ok((
        mode,
        permits,
        limit,
        owner,
        host,
        os_pid,
        description,
        since,
        ttl,
        token,
        granted,
        waiting,
        idle_since,
        state,
        pid,
        app,
        client,
    )) = parsed
    else {
        return;
    };
    let (granted, waiting) = (granted.unwrap_or(false), waiting.unwrap_or(false));
    let mode = given_mode.unwrap_or(match mode.as_str() {
        "shared" => LockMode::Shared,
        "permits" => LockMode::Permits {
            count: permits as u32,
            limit: limit as u32,
        },
        _ => LockMode::Exclusive,
    });
    if let Some(owner) = owner {
        let mut info_owner =
            OwnerInfo::current(owner.parse().unwrap_or(OwnerId::from_u128(0)), description);
        info_owner.host = host.unwrap_or_default();
        info_owner.pid = os_pid.unwrap_or(0) as u32;
        info_owner.since = from_millis(since);
        match token {
            Some(token) if granted => {
                let expires = match (state.as_deref(), idle_since, ttl) {
                    (Some("idle"), Some(idle), Some(ttl)) => Some(from_millis(idle + ttl)),
                    _ => None,
                };
                info.holders.push(Holder::new(
                    info_owner,
                    mode,
                    FencingToken::new(token as u64),
                    expires,
                ));
            }
            None if waiting => info.waiters.push(Waiter::new(info_owner, mode, 0)),
            _ => {}
        }
        return;
    }
    let (app, host) = (app.unwrap_or_default(), client.unwrap_or_default());
    if app == sql::WAITING_NAME {
        // A distlock waiter whose row is not written yet.
        return;
    }
    if let (true, Some((token, os_pid, owner_id))) = (granted, distlock_holder(&app)) {
        // A distlock holder whose row is not written yet (or a transaction-mode one, which
        // has none): its identity is in `application_name`.
        let mut owner = OwnerInfo::current(owner_id, None);
        owner.host = host;
        owner.pid = os_pid;
        owner.since = from_millis(since);
        info.holders
            .push(Holder::new(owner, mode, FencingToken::new(token), None));
        return;
    }
    let mut owner = OwnerInfo::current(
        OwnerId::from_u128(0),
        Some(format!(
            "PostgreSQL session {} without distlock (application_name {app:?})",
            pid.unwrap_or(0)
        )),
    );
    owner.host = host;
    owner.pid = 0;
    owner.since = from_millis(since);
    if granted {
        info.holders
            .push(Holder::new(owner, mode, FencingToken::new(0), None));
    } else {
        info.waiters.push(Waiter::new(owner, mode, 0));
    }
}

/// Parses the `application_name` a holder's session has from its grant on:
/// `distlock <token> <os pid> <owner id>` (token, pid, owner).
fn distlock_holder(app: &str) -> Option<(u64, u32, OwnerId)> {
    let mut parts = app.split(' ');
    if parts.next()? != "distlock" {
        return None;
    }
    let token = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let owner = parts.next()?;
    if owner.len() != 32 || parts.next().is_some() {
        return None;
    }
    Some((token, pid, owner.parse().ok()?))
}

fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}
