//! distlock backend on MySQL / MariaDB **`GET_LOCK`** user locks.
//!
//! - Each held (or waiting) lock has a connection of its own, from a small pool of plain
//!   connections (never a driver pool that resets connections on return: a reset silently
//!   drops user locks). A released connection goes back only once `RELEASE_ALL_LOCKS()` says
//!   its locks are gone.
//! - Exclusive locks only (`Unsupported` for shared locks and priorities); semaphores are N
//!   named slots. Names map to `GET_LOCK` names by [`lock_name`] and [`slot_names`].
//! - Fencing tokens come from the server's `UUID_SHORT()` counter, taken in the statement
//!   that takes the lock, plus an offset per server run kept in an InnoDB table
//!   (`distlock_tokens`) so that a server started with an earlier clock, or another server
//!   after a failover, never hands out a smaller token (see docs/mysql.md). A grant
//!   and a release touch no table. The tables are created on first use; where the user
//!   lacks `CREATE`, the error shows the DDL.
//! - Holder rows, for `inspect`, are in a `MEMORY` table (like the `GET_LOCK`s they
//!   describe, they need not survive a restart), written by a task of their own a moment
//!   after the grant, so that no grant or release waits for them.
//! - The lease is enforced by the server: the holder connection sets `wait_timeout` to the
//!   TTL (rounded up to whole seconds) and pings every TTL/3, so a paused or partitioned holder
//!   is disconnected by the server and its locks freed.
//! - Waiting happens in the server (`GET_LOCK(name, seconds)`); a dropped `acquire()` sends
//!   `KILL QUERY` from a side connection and closes its own.
//!
//! See `docs/mysql.md` for the full contract and what differs on MySQL 8.
//!
//! ```no_run
//! # async fn demo() -> distlock_core::Result<()> {
//! let locks = distlock_mysql::connect("mysql://app:secret@db/app").await?;
//! let lease = locks.mutex("orders/42").acquire().await?;
//! lease.release().await?;
//! # Ok(()) }
//! ```

mod key;
mod rows;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use distlock_core::{
    AcquireRequest, Backend, BoxFuture, Capabilities, Error, ErrorKind, FencingToken, HeldLock,
    Holder, LeaseSignal, LockInfo, LockMode, LockName, Locks, OwnerId, OwnerInfo, Result,
    SLOT_PROBE, Wait, Waiter, redact_url,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, Value};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use distlock_core::HolderRows;
use rows::HolderRow;

pub use key::{HASH_PREFIX, MAX_LOCK_NAME, hex_literal, lock_name, slot_names};

/// The backend's name in errors and metrics.
pub const BACKEND: &str = "mysql";

/// How long a semaphore waiter blocks on one busy slot before trying the others again.
const SLOT_WAIT_SLICE: Duration = Duration::from_millis(250);

/// The part of `UUID_SHORT()` a token uses: its low 56 bits, without the `server_id` byte
/// (which an administrator may lower; the offset covers other servers).
const TOKEN_MASK: u64 = (1 << 56) - 1;

/// How far above the recorded high-water mark a server run that is behind starts its
/// tokens: it covers the tokens handed out after the mark was last raised (the mark is
/// raised whenever a connection opens).
const TOKEN_MARGIN: u64 = 1 << 40;

/// Run on every new connection (one transaction, a few rows): answers the offset that this
/// server run adds to `UUID_SHORT() & TOKEN_MASK` to make its tokens.
///
/// `UUID_SHORT()` is a server-wide counter that starts at the server's start time in
/// seconds shifted left by 24 bits, so it rises across restarts as long as the clock does
/// not go back and fewer than 2^24 values a second were taken. `distlock_tokens` keeps a
/// high-water mark (`'high'`, raised here to the current token) and the offset
/// (`'offset'`, which only ever rises): a run whose tokens would not be above the mark (a
/// clock set back, another server after a failover, a lower `server_id`) raises the offset
/// to start [`TOKEN_MARGIN`] above it. The row with the empty key is the ceiling of the
/// counter of earlier versions, whose tokens were all below this scheme's.
fn token_offset_sql() -> String {
    let token = format!("(UUID_SHORT() & {TOKEN_MASK})");
    format!(
        "START TRANSACTION; \
         SELECT MAX(token) INTO @distlock_h FROM distlock_tokens \
         WHERE lock_key IN ('', 'high') FOR UPDATE; \
         UPDATE distlock_tokens SET token = IF({token} + token > @distlock_h, token, \
         @distlock_h + {TOKEN_MARGIN} - {token}) WHERE lock_key = 'offset'; \
         SELECT token INTO @distlock_f FROM distlock_tokens WHERE lock_key = 'offset'; \
         UPDATE distlock_tokens SET token = GREATEST(token, {token} + @distlock_f) \
         WHERE lock_key = 'high'; \
         COMMIT; \
         SELECT @distlock_f"
    )
}

/// `GET_LOCK`'s timeout when waiting without a bound (a year).
const FOREVER_SECS: f64 = 31_536_000.0;

/// Connects to the server at `url` (`mysql://` or `mariadb://`) and returns a lock client.
/// One connection is opened to check the URL and credentials.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future closes the connection being opened.
pub async fn connect(url: &str) -> Result<Locks> {
    MySqlBackend::connect(url).await.map(Locks::new)
}

/// Settings of a [`MySqlBackend`], parsed from its URL.
#[derive(Clone)]
#[non_exhaustive]
pub struct MySqlConfig {
    /// The driver's options (never shown: they hold the password).
    opts: Opts,
    /// Most connections this backend opens at once (`distlock_max_connections`, default 64).
    pub max_connections: usize,
    /// Record holder information in `distlock_holders` (`distlock_holder_info`, default true).
    pub holder_info: bool,
    display_url: String,
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("url", &self.display_url)
            .field("max_connections", &self.max_connections)
            .field("holder_info", &self.holder_info)
            .finish()
    }
}

impl MySqlConfig {
    /// Parses a `mysql://` or `mariadb://` URL. Parameters starting with `distlock_` are
    /// distlock's (see `docs/mysql.md`); the rest go to the driver (`mysql_async`). Errors show
    /// the URL with its password replaced by `***`.
    pub fn from_url(url: &str) -> Result<MySqlConfig> {
        let invalid = |message: String| {
            Error::new(
                ErrorKind::InvalidUrl,
                BACKEND,
                format!("{}: {message}", redact_url(url)),
            )
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case("mysql")
                    || scheme.eq_ignore_ascii_case("mariadb") =>
            {
                rest
            }
            _ => return Err(invalid("expected mysql:// or mariadb://".into())),
        };
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut config = MySqlConfig {
            opts: Opts::default(),
            max_connections: 64,
            holder_info: true,
            display_url: redact_url(url),
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "distlock_max_connections" => {
                    config.max_connections =
                        value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            invalid("distlock_max_connections must be >= 1".into())
                        })?
                }
                "distlock_holder_info" => {
                    config.holder_info = match value {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => {
                            return Err(invalid(
                                "distlock_holder_info must be true or false".into(),
                            ));
                        }
                    }
                }
                other if other.starts_with("distlock_") => {
                    return Err(invalid(format!(
                        "unknown option {other:?}; distlock's options are \
                         distlock_max_connections, distlock_holder_info"
                    )));
                }
                _ => kept.push(pair),
            }
        }
        let driver_url = if kept.is_empty() {
            format!("mysql://{base}")
        } else {
            format!("mysql://{base}?{}", kept.join("&"))
        };
        let opts = Opts::from_url(&driver_url).map_err(|e| {
            // UrlError names parameters and their values, never the password (the authority
            // is not a parameter); scrub anyway.
            invalid(scrub(e.to_string(), url))
        })?;
        if opts.db_name().is_none() {
            return Err(invalid(
                "name a database (mysql://host/db): distlock keeps its tables there".into(),
            ));
        }
        config.opts = opts;
        Ok(config)
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.display_url
    }
}

/// Replaces the URL's password, if it appears, by `***`.
fn scrub(text: String, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return text;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return text;
    };
    match userinfo.split_once(':') {
        Some((_, pw)) if pw.len() >= 3 => text.replace(pw, "***"),
        _ => text,
    }
}

/// A lock service on one MySQL or MariaDB database.
#[derive(Clone)]
pub struct MySqlBackend {
    shared: Arc<Shared>,
}

impl fmt::Debug for MySqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlBackend")
            .field("config", &self.shared.config)
            .finish()
    }
}

struct Shared {
    config: MySqlConfig,
    idle: StdMutex<Vec<MyConn>>,
    returned: Notify,
    permits: Arc<Semaphore>,
    /// The holder row writer, unless `distlock_holder_info=false`.
    rows: Option<HolderRows<HolderRow>>,
    /// The prepared form of a mutex's grant ([`MySqlBackend::grant_one`]), built once.
    grant_one_sql: String,
}

struct MyConn {
    conn: Conn,
    /// What this server run adds to `UUID_SHORT()` for a token ([`token_offset_sql`]).
    token_offset: u64,
    /// The session's `wait_timeout` in seconds as distlock last set it; 0 while it is the
    /// server's default.
    wait_timeout: u64,
    /// When the connection was last given back to the idle list.
    idle_since: Instant,
    _permit: OwnedSemaphorePermit,
}

/// The DDL distlock runs on first use. The `distlock_tokens` rows are created here, not by
/// the first connections, because concurrent upserts of a missing row can deadlock in
/// InnoDB; and last, because a connection that finds them takes the set-up as done.
pub const SETUP_SQL: &str = "CREATE TABLE IF NOT EXISTS distlock_tokens (\n\
    \x20 lock_key VARBINARY(64) NOT NULL PRIMARY KEY,\n\
    \x20 token BIGINT UNSIGNED NOT NULL\n\
    ) ENGINE=InnoDB;\n\
    CREATE TABLE IF NOT EXISTS distlock_holders (\n\
    \x20 conn_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,\n\
    \x20 lock_key VARBINARY(64) NOT NULL, name VARBINARY(1024) NOT NULL,\n\
    \x20 mode VARCHAR(16) NOT NULL, permits INT NOT NULL, lim INT NOT NULL,\n\
    \x20 owner CHAR(32) NOT NULL, host VARBINARY(255) NOT NULL, os_pid INT UNSIGNED NOT NULL,\n\
    \x20 description VARBINARY(1024) NULL, since_ms BIGINT NOT NULL, ttl_ms BIGINT NOT NULL,\n\
    \x20 token BIGINT UNSIGNED NULL,\n\
    \x20 KEY distlock_holders_key (lock_key)\n\
    ) ENGINE=MEMORY;\n\
    INSERT IGNORE INTO distlock_tokens (lock_key, token) VALUES ('high', 0), ('offset', 0);";

fn server_code(error: &mysql_async::Error) -> Option<u16> {
    match error {
        mysql_async::Error::Server(e) => Some(e.code),
        _ => None,
    }
}

/// The connection itself failed (rather than the server answering with an error).
fn is_connection_failure(error: &mysql_async::Error) -> bool {
    matches!(
        error,
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
    ) || matches!(server_code(error), Some(2006 | 2013 | 1053 | 1927))
}

impl Shared {
    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(
            kind,
            BACKEND,
            scrub(message.into(), &self.config.display_url),
        )
    }

    fn my_error(&self, what: &str, error: &mysql_async::Error) -> Error {
        let kind = match server_code(error) {
            // The server refused the login (access denied, unknown database): a retry does
            // not help, but the URL itself is well-formed.
            Some(1044 | 1045 | 1049 | 1698) => ErrorKind::Backend,
            // Missing privileges for distlock's DDL or KILL: fix the configuration.
            Some(1142 | 1227) => ErrorKind::Config,
            Some(_) if is_connection_failure(error) => ErrorKind::Connection,
            Some(_) => ErrorKind::Backend,
            None => ErrorKind::Connection,
        };
        self.error(kind, format!("{what}: {error}"))
    }

    /// Opens a connection and reads its server run's token offset, creating distlock's
    /// tables first when they (or their rows) are missing.
    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<MyConn> {
        let mut conn = self.connect().await?;
        let token_offset = match token_offset(&mut conn).await {
            Ok(Some(offset)) => offset,
            _ => {
                // The tables or rows are missing. A statement that failed may have left its
                // reply unread and the transaction open (see `run`): start over on a new
                // connection.
                drop(conn);
                conn = self.connect().await?;
                self.create_tables(&mut conn).await?;
                match token_offset(&mut conn).await {
                    Ok(Some(offset)) => offset,
                    Ok(None) => {
                        return Err(self.error(
                            ErrorKind::Backend,
                            "distlock_tokens lacks its 'offset' row after it was created",
                        ));
                    }
                    Err(e) => return Err(self.my_error("reading the fencing token offset", &e)),
                }
            }
        };
        Ok(MyConn {
            conn,
            token_offset,
            wait_timeout: 0,
            idle_since: Instant::now(),
            _permit: permit,
        })
    }

    /// Opens a plain connection.
    async fn connect(&self) -> Result<Conn> {
        Conn::new(self.config.opts.clone()).await.map_err(|e| {
            let what = format!("could not connect to {}", self.config.display_url);
            if server_code(&e) == Some(1049) {
                self.error(
                    ErrorKind::Backend,
                    format!("{what}: the database does not exist ({e})"),
                )
            } else {
                self.my_error(&what, &e)
            }
        })
    }

    async fn checkout(&self) -> Result<MyConn> {
        loop {
            let conn = self.idle.lock().unwrap().pop();
            if let Some(conn) = conn {
                // A session whose wait_timeout distlock shortened may be about to be closed by
                // the server: leave it (closing it) rather than race that.
                if conn.wait_timeout > 0
                    && conn.idle_since.elapsed() >= Duration::from_secs(conn.wait_timeout) / 2
                {
                    continue;
                }
                return Ok(conn);
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

    fn checkin(&self, mut conn: MyConn) {
        conn.idle_since = Instant::now();
        self.idle.lock().unwrap().push(conn);
        self.returned.notify_one();
    }

    /// Deletes the holder rows that connections which are gone left behind, once per
    /// backend: a holder or waiter whose process died, or whose connection the server cut
    /// off, never deletes its row, and `distlock_holders` is a `MEMORY` table of bounded size
    /// that would otherwise fill up (every grant would then fail).
    async fn prune_holder_rows(&self, conn: &mut MyConn) -> Result<()> {
        conn.conn
            .query_drop(PRUNE_HOLDERS_SQL)
            .await
            .map_err(|e| self.my_error("deleting the holder rows of closed connections", &e))
    }

    /// Creates distlock's tables and rows where they are missing (one statement at a time:
    /// see [`run`]).
    async fn create_tables(&self, conn: &mut Conn) -> Result<()> {
        for statement in SETUP_SQL.split(';').filter(|s| !s.trim().is_empty()) {
            if let Err(e) = conn.query_drop(statement).await {
                return Err(self.error(
                    ErrorKind::Config,
                    format!(
                        "distlock's tables do not exist and could not be created ({e}). Have an \
                     administrator run, in the database of the URL:\n{SETUP_SQL}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Reads the token offset of the server run ([`token_offset_sql`]): `None` when
/// `distlock_tokens` lacks its rows.
async fn token_offset(conn: &mut Conn) -> std::result::Result<Option<u64>, mysql_async::Error> {
    let rows = run(conn, &token_offset_sql()).await?;
    Ok(rows
        .first()
        .and_then(|r| int(r, 0))
        .map(|offset| offset as u64))
}

/// Deletes the holder rows of connections that are gone (see [`Shared::prune_holder_rows`]):
/// rows whose connection the server does not list. A user without the `PROCESS` privilege
/// sees only its own connections, so for it a row it cannot see may be a live connection of
/// another user; it deletes only the stale rows it can prove so: a holder's row whose
/// connection does not hold its acquisition's [`owner_lock`].
const PRUNE_HOLDERS_SQL: &str = "DELETE FROM distlock_holders \
    WHERE conn_id NOT IN (SELECT ID FROM information_schema.PROCESSLIST) \
    AND (EXISTS (SELECT 1 FROM information_schema.USER_PRIVILEGES \
    WHERE PRIVILEGE_TYPE = 'PROCESS' AND GRANTEE = CONCAT('''', \
    SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
    SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')) \
    OR (token IS NOT NULL \
    AND NOT (IS_USED_LOCK(CONCAT('distlock#o:', owner)) <=> conn_id)))";

/// Runs a multi-statement text query and returns the rows of its last result set that has
/// rows.
///
/// Every distlock statement ends with a `SELECT` that returns one row. When a statement in
/// the middle fails, `mysql_async` may stop before reading the error (it then surfaces on the
/// next query); a missing final row is therefore reported as a broken connection, which the
/// caller closes.
async fn run(conn: &mut Conn, sql: &str) -> std::result::Result<Vec<Row>, mysql_async::Error> {
    let rows = query_rows(conn, sql).await?;
    if rows.is_empty() {
        return Err(broken_reply());
    }
    Ok(rows)
}

/// Like [`run`], for one prepared statement (prepared once per connection, by mysql_async's
/// statement cache, so the server does not parse it again): its one row.
async fn exec_row(
    conn: &mut Conn,
    sql: &str,
    params: impl Into<mysql_async::Params> + Send,
) -> std::result::Result<Row, mysql_async::Error> {
    conn.exec_first(sql, params).await?.ok_or_else(broken_reply)
}

/// The error for a reply that lacks distlock's final row (see [`run`]).
fn broken_reply() -> mysql_async::Error {
    mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed)
}

/// Like [`run`], for a single statement that may return no rows.
async fn query_rows(
    conn: &mut Conn,
    sql: &str,
) -> std::result::Result<Vec<Row>, mysql_async::Error> {
    let mut result = conn.query_iter(sql).await?;
    let mut last = Vec::new();
    while !result.is_empty() {
        let rows: Vec<Row> = result.collect().await?;
        if !rows.is_empty() {
            last = rows;
        }
    }
    drop(result);
    Ok(last)
}

fn int(row: &Row, index: usize) -> Option<i64> {
    match row.as_ref(index)? {
        Value::Int(v) => Some(*v),
        Value::UInt(v) => Some(*v as i64),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        Value::Double(v) => Some(*v as i64),
        Value::Float(v) => Some(*v as i64),
        _ => None,
    }
}

fn text(row: &Row, index: usize) -> Option<String> {
    match row.as_ref(index)? {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::NULL => None,
        other => Some(other.as_sql(true)),
    }
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The `GET_LOCK` name a holder takes for its acquisition (owner id in hex), which tells
/// readers whose holder row is current; 43 characters, within MySQL 8's limit of 64.
fn owner_lock(owner: OwnerId) -> String {
    let mut name = String::with_capacity(OWNER_LOCK_PREFIX.len() + 32);
    name.push_str(OWNER_LOCK_PREFIX);
    owner.push_hex(&mut name);
    name
}

/// What every [`owner_lock`] starts with (a [`HASH_PREFIX`] name: no user name maps to it).
const OWNER_LOCK_PREFIX: &str = "distlock#o:";

/// The grant's `SELECT`: `lock` (1 when granted) and, with holder rows, the owner lock named
/// `owner`, then the token (`UUID_SHORT()` plus `offset`) only once both are held. Each part
/// is SQL: literals for the text form, `?` for the prepared one.
fn grant_select(lock: &str, owner: Option<&str>, offset: &str) -> String {
    let owner = owner.map_or(String::new(), |o| format!(" AND GET_LOCK({o}, 0) = 1"));
    format!("SELECT IF({lock} = 1{owner}, (UUID_SHORT() & {TOKEN_MASK}) + {offset}, NULL)")
}

/// The `FROM .. WHERE` of the owner locks that connection `thread` (an SQL expression)
/// holds, in `METADATA_LOCK_INFO` as `o`: the connections that are distlock holders, even
/// before their rows are written.
fn owner_locks_of(thread: &str) -> String {
    format!(
        "FROM information_schema.METADATA_LOCK_INFO o WHERE o.THREAD_ID = {thread} \
         AND o.LOCK_TYPE = 'User lock' AND LEFT(o.TABLE_SCHEMA, {len}) = {prefix}",
        len = OWNER_LOCK_PREFIX.len(),
        prefix = hex_literal(OWNER_LOCK_PREFIX.as_bytes()),
    )
}

/// `wait_timeout` for a TTL: whole seconds, rounded up, at least 1.
fn wait_timeout_secs(ttl: Duration) -> u64 {
    ttl.as_millis().div_ceil(1000).max(1) as u64
}

/// An acquisition in progress. Dropped midway, it kills the server-side wait with
/// `KILL QUERY` from a side connection and closes its own connection.
struct Attempt<'a> {
    shared: &'a Arc<Shared>,
    conn: Option<MyConn>,
    waiting: bool,
    /// A waiter row was sent to the holder row writer.
    waiter_recorded: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let id = conn.conn.id();
        // The connection is never used again (it closes here or below), so its row can go
        // at once: no grant statement writes a row.
        if self.waiter_recorded
            && let Some(rows) = &self.shared.rows
        {
            rows.delete(id);
        }
        if !self.waiting {
            return;
        }
        let shared = Arc::clone(self.shared);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Kill the wait first, then let the connection close (its disconnect reads
                // the interrupted reply); the server frees whatever it still held.
                let Ok(mut side) = shared.checkout().await else {
                    return;
                };
                let killed = side.conn.query_drop(format!("KILL QUERY {id}")).await;
                drop(conn);
                if killed.is_ok() {
                    shared.checkin(side);
                }
            });
        }
    }
}

impl Attempt<'_> {
    fn conn(&mut self) -> &mut Conn {
        &mut self.conn.as_mut().expect("connection present").conn
    }

    /// Frees every lock and row of this attempt and gives the connection back.
    async fn clean_up_and_return(&mut self) {
        self.waiting = false;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Some(rows) = &self.shared.rows {
            rows.delete(conn.conn.id());
        }
        if conn.conn.query_drop("DO RELEASE_ALL_LOCKS()").await.is_ok() {
            self.shared.checkin(conn);
        }
    }
}

/// What the acquire statements record about the acquisition.
struct Record<'a> {
    request: &'a AcquireRequest,
    mode: &'static str,
    permits: u32,
    limit: u32,
}

impl MySqlBackend {
    /// Parses `url`, opens one connection to check it and returns the backend.
    ///
    /// Errors: [`ErrorKind::InvalidUrl`] for a URL that does not parse, [`ErrorKind::Backend`]
    /// when the server refuses the login (a wrong password, an unknown database),
    /// [`ErrorKind::Connection`] when the server cannot be reached. No error contains the
    /// password.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the connection being opened.
    pub async fn connect(url: &str) -> Result<MySqlBackend> {
        Self::with_config(MySqlConfig::from_url(url)?).await
    }

    /// Builds the backend from a parsed configuration and opens one connection to check it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the connection being opened.
    pub async fn with_config(config: MySqlConfig) -> Result<MySqlBackend> {
        let backend = MySqlBackend {
            shared: Arc::new(Shared {
                permits: Arc::new(Semaphore::new(config.max_connections)),
                idle: StdMutex::new(Vec::new()),
                returned: Notify::new(),
                rows: config.holder_info.then(|| rows::start(config.opts.clone())),
                grant_one_sql: grant_select(
                    "GET_LOCK(?, ?)",
                    config.holder_info.then_some("?"),
                    "?",
                ),
                config,
            }),
        };
        let mut conn = backend.shared.checkout().await?;
        if backend.shared.config.holder_info {
            backend.shared.prune_holder_rows(&mut conn).await?;
        }
        backend.shared.checkin(conn);
        Ok(backend)
    }

    /// The configuration (its `Debug` hides the password).
    pub fn config(&self) -> &MySqlConfig {
        &self.shared.config
    }

    /// The SQL of the grant: `lock` (`GET_LOCK(..)`, or 1/0 when the locks were taken
    /// before) and, when it is 1, the token, in one `SELECT`: `IF` evaluates the token only
    /// after the lock is granted, so it is above every token of the holders before. A bare
    /// function call costs the server far less than a statement that touches a table, so
    /// nothing else is done here: the holder row is written by [`HolderRows`], and the
    /// session's `wait_timeout` is set (by a `SET` before the `SELECT`) only when the TTL
    /// asks for another value than the session has.
    ///
    /// With holder rows, a granted connection also takes its acquisition's [`owner_lock`]:
    /// a row counts as a holder only while its connection holds that, so a row left from an
    /// earlier acquisition on the same connection (the writer is a moment behind) is never
    /// shown as the holder.
    fn grant_sql(&self, conn: &MyConn, record: &Record<'_>, lock: &str) -> String {
        let wait_timeout = wait_timeout_secs(record.request.options.ttl);
        let set = if conn.wait_timeout == wait_timeout {
            String::new()
        } else {
            format!("SET SESSION wait_timeout = {wait_timeout}; ")
        };
        let owner = self
            .shared
            .rows
            .as_ref()
            .map(|_| hex_literal(owner_lock(record.request.owner.owner).as_bytes()));
        let offset = conn.token_offset.to_string();
        format!("{set}{}", grant_select(lock, owner.as_deref(), &offset))
    }

    /// Runs the grant with `lock` (see [`MySqlBackend::grant_sql`]) and returns its token
    /// when granted.
    async fn grant(
        &self,
        attempt: &mut Attempt<'_>,
        record: &Record<'_>,
        lock: &str,
    ) -> std::result::Result<Option<i64>, mysql_async::Error> {
        let conn = attempt.conn.as_mut().expect("connection present");
        let sql = self.grant_sql(conn, record, lock);
        let rows = run(&mut conn.conn, &sql).await?;
        self.granted(conn, record, rows.first())
    }

    /// [`grant`](Self::grant) with `GET_LOCK(key, seconds)`, as a prepared statement when
    /// the session's `wait_timeout` needs no `SET`: the server then binds the statement
    /// parsed once per connection instead of parsing a new text, which cost it more than
    /// the lock (`scripts/profile mysql`).
    async fn grant_one(
        &self,
        attempt: &mut Attempt<'_>,
        record: &Record<'_>,
        key: &str,
        seconds: f64,
    ) -> std::result::Result<Option<i64>, mysql_async::Error> {
        let conn = attempt.conn.as_mut().expect("connection present");
        if conn.wait_timeout != wait_timeout_secs(record.request.options.ttl) {
            let lock = format!("GET_LOCK({}, {seconds:.3})", hex_literal(key.as_bytes()));
            return self.grant(attempt, record, &lock).await;
        }
        let offset = conn.token_offset;
        let sql = self.shared.grant_one_sql.as_str();
        let row = if self.shared.rows.is_some() {
            let owner = owner_lock(record.request.owner.owner);
            let params = (key.as_bytes(), seconds, owner.as_bytes(), offset);
            exec_row(&mut conn.conn, sql, params).await?
        } else {
            exec_row(&mut conn.conn, sql, (key.as_bytes(), seconds, offset)).await?
        };
        self.granted(conn, record, Some(&row))
    }

    /// After a grant statement answered `row`: the session's `wait_timeout` is the TTL's
    /// now, and a granted lock (a token) gets its holder row.
    fn granted(
        &self,
        conn: &mut MyConn,
        record: &Record<'_>,
        row: Option<&Row>,
    ) -> std::result::Result<Option<i64>, mysql_async::Error> {
        conn.wait_timeout = wait_timeout_secs(record.request.options.ttl);
        let token = row.and_then(|r| int(r, 0));
        if let Some(token) = token {
            self.record_row(conn, record, SystemTime::now(), Some(token as u64));
        }
        Ok(token)
    }

    /// Has the holder row writer record `conn` as a holder (with `token`) or a waiter.
    fn record_row(
        &self,
        conn: &MyConn,
        record: &Record<'_>,
        since: SystemTime,
        token: Option<u64>,
    ) {
        let Some(rows) = &self.shared.rows else {
            return;
        };
        let request = record.request;
        rows.upsert(
            conn.conn.id(),
            HolderRow {
                name: request.name.as_str().to_owned(),
                mode: record.mode,
                permits: record.permits,
                limit: record.limit,
                owner: request.owner.clone(),
                since,
                ttl: request.options.ttl,
                token,
            },
        );
    }

    /// Records the attempt's connection as a waiter, once, before it waits.
    fn record_waiter(&self, attempt: &mut Attempt<'_>, record: &Record<'_>) {
        if !attempt.waiter_recorded {
            attempt.waiter_recorded = true;
            let conn = attempt.conn.as_ref().expect("connection present");
            self.record_row(conn, record, record.request.owner.since, None);
        }
    }

    async fn acquire_impl(
        &self,
        request: &AcquireRequest,
        signal: LeaseSignal,
    ) -> Result<Box<dyn HeldLock>> {
        let started = Instant::now();
        let shared = &self.shared;
        let name = request.name.as_str();
        let wait = request.options.wait;
        let deadline = match wait {
            Wait::Bounded(bound) => Some(started + bound),
            _ => None,
        };
        let (keys, count, record) = match request.options.mode {
            LockMode::Permits { count, limit } => (
                slot_names(name, limit),
                count as usize,
                Record {
                    request,
                    mode: "permits",
                    permits: count,
                    limit,
                },
            ),
            _ => (
                vec![lock_name(name)],
                1,
                Record {
                    request,
                    mode: "exclusive",
                    permits: 1,
                    limit: 0,
                },
            ),
        };
        let mut replaced = false;
        let (mut attempt, outcome) = loop {
            let mut attempt = Attempt {
                shared,
                conn: Some(shared.checkout().await?),
                waiting: false,
                waiter_recorded: false,
            };
            let outcome = if keys.len() == 1 {
                self.mutex(&mut attempt, &record, &keys[0], deadline, wait)
                    .await
            } else {
                self.semaphore(&mut attempt, &record, &keys, count, deadline, wait)
                    .await
            };
            match outcome {
                // A pooled connection that the server closed while it stood idle (a restart,
                // a `KILL`), before the pool could see it go: once, the attempt runs again
                // on a new connection. The old one closes with the attempt; whatever it held
                // went with it (or, if only the network broke, goes at its wait_timeout).
                Err(e) if is_connection_failure(&e) && !replaced => {
                    replaced = true;
                    attempt.waiting = false;
                    tracing::debug!(backend = BACKEND, error = %e, "the connection had closed; retrying on a new one");
                }
                outcome => break (attempt, outcome),
            }
        };
        match outcome {
            Ok(Some((token, granted_at, held))) => {
                let conn = attempt.conn.take().expect("connection present");
                Ok(Box::new(MyHeld {
                    shared: Arc::clone(shared),
                    conn: tokio::sync::Mutex::new(Some(conn)),
                    held_locks: held.len() as i64 + i64::from(shared.rows.is_some()),
                    keys: held,
                    token: FencingToken::new(token as u64),
                    granted_at,
                    _signal: signal,
                }))
            }
            Ok(None) => {
                attempt.clean_up_and_return().await;
                if wait == Wait::NoWait {
                    return Err(shared.error(ErrorKind::WouldBlock, "held by another session"));
                }
                if let Some(deadline) = deadline {
                    tokio::time::sleep_until(deadline.into()).await;
                }
                Err(self.timeout(wait))
            }
            Err(e) => {
                attempt.waiting = false;
                attempt.conn = None;
                Err(shared.my_error("acquire", &e))
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

    /// One key: a try, or one `GET_LOCK` that waits in the server (and returns at once when
    /// the lock is free: no try is needed first). `Ok(None)`: not acquired.
    async fn mutex(
        &self,
        attempt: &mut Attempt<'_>,
        record: &Record<'_>,
        key: &str,
        deadline: Option<Instant>,
        wait: Wait,
    ) -> std::result::Result<Option<(i64, Instant, Vec<String>)>, mysql_async::Error> {
        if wait == Wait::NoWait {
            let sent = Instant::now();
            let granted = self.grant_one(attempt, record, key, 0.0).await?;
            return Ok(granted.map(|token| (token, sent, vec![key.to_owned()])));
        }
        let seconds = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                left.saturating_sub((left / 20).min(Duration::from_millis(25)))
                    .as_secs_f64()
            }
            None => FOREVER_SECS,
        };
        // A grant that comes at once replaces this row before the writer writes either.
        self.record_waiter(attempt, record);
        attempt.waiting = true;
        let sent = Instant::now();
        let granted = self.grant_one(attempt, record, key, seconds).await?;
        attempt.waiting = false;
        match granted {
            Some(token) => {
                let granted_at = self.fresh_grant(attempt, sent, record).await?;
                Ok(Some((token, granted_at, vec![key.to_owned()])))
            }
            None => Ok(None),
        }
    }

    /// After a long wait, the server's idle timer starts when the granting statement ends:
    /// one ping gives a send time close to it.
    async fn fresh_grant(
        &self,
        attempt: &mut Attempt<'_>,
        sent: Instant,
        record: &Record<'_>,
    ) -> std::result::Result<Instant, mysql_async::Error> {
        if sent.elapsed() < record.request.options.ttl / 10 {
            return Ok(sent);
        }
        let ping = Instant::now();
        attempt.conn().ping().await?;
        Ok(ping)
    }

    /// N named slots: take `count` free ones; wait on a busy one when none is free.
    async fn semaphore(
        &self,
        attempt: &mut Attempt<'_>,
        record: &Record<'_>,
        keys: &[String],
        count: usize,
        deadline: Option<Instant>,
        wait: Wait,
    ) -> std::result::Result<Option<(i64, Instant, Vec<String>)>, mysql_async::Error> {
        let start = (rand::random::<u64>() % keys.len() as u64) as usize;
        let mut held: Vec<String> = Vec::new();
        loop {
            for i in 0..keys.len() {
                if held.len() == count {
                    break;
                }
                let key = &keys[(start + i) % keys.len()];
                if held.contains(key) {
                    continue;
                }
                let rows = run(
                    attempt.conn(),
                    &format!("SELECT GET_LOCK({}, 0)", hex_literal(key.as_bytes())),
                )
                .await?;
                if rows.first().and_then(|r| int(r, 0)) == Some(1) {
                    held.push(key.clone());
                }
            }
            let sent = Instant::now();
            let all_held = if held.len() == count { "1" } else { "0" };
            if let Some(token) = self.grant(attempt, record, all_held).await? {
                return Ok(Some((token, sent, held)));
            }
            // Not enough: give the slots back and wait on one that is busy.
            attempt.conn().query_drop("DO RELEASE_ALL_LOCKS()").await?;
            held.clear();
            if wait == Wait::NoWait {
                return Ok(None);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let slice = left.map_or(SLOT_WAIT_SLICE, |l| l.min(SLOT_WAIT_SLICE));
            let key = &keys[(rand::random::<u64>() % keys.len() as u64) as usize];
            self.record_waiter(attempt, record);
            attempt.waiting = true;
            let rows = run(
                attempt.conn(),
                &format!(
                    "SELECT GET_LOCK({}, {:.3})",
                    hex_literal(key.as_bytes()),
                    slice.as_secs_f64()
                ),
            )
            .await?;
            attempt.waiting = false;
            if rows.first().and_then(|r| int(r, 0)) == Some(1) {
                held.push(key.clone());
            }
        }
    }
}

/// A granted lock: its connection, kept out of the pool until released.
struct MyHeld {
    /// `GET_LOCK`s the connection holds: the keys, and the owner lock with holder rows.
    held_locks: i64,
    shared: Arc<Shared>,
    conn: tokio::sync::Mutex<Option<MyConn>>,
    keys: Vec<String>,
    token: FencingToken,
    granted_at: Instant,
    _signal: LeaseSignal,
}

impl MyHeld {
    fn lost(&self, message: impl Into<String>) -> Error {
        self.shared.error(ErrorKind::Lost, message)
    }

    /// Has the writer delete the row of `conn`: at a release, before the connection can be
    /// used again; or when the connection is closed.
    fn forget_row(&self, conn: &MyConn) {
        if let Some(rows) = &self.shared.rows {
            rows.delete(conn.conn.id());
        }
    }
}

impl Drop for MyHeld {
    /// A lease dropped without a release closes its connection (freeing its locks); its
    /// row goes too.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().take() {
            self.forget_row(&conn);
        }
    }
}

impl HeldLock for MyHeld {
    fn token(&self) -> FencingToken {
        self.token
    }

    /// The send time of the statement that granted the lock: the server's idle timer
    /// (`wait_timeout`) starts when that statement ends, so no earlier.
    fn granted_at(&self) -> Option<Instant> {
        Some(self.granted_at)
    }

    fn renew(&self, _ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut guard = self.conn.lock().await;
            let Some(conn) = guard.as_mut() else {
                return Err(self.lost("the lock was released"));
            };
            let checks: Vec<String> = self
                .keys
                .iter()
                .map(|k| {
                    format!(
                        "COALESCE(IS_USED_LOCK({}) = CONNECTION_ID(), 0)",
                        hex_literal(k.as_bytes())
                    )
                })
                .collect();
            let sql = format!("SELECT {}", checks.join(" + "));
            match run(&mut conn.conn, &sql).await {
                Ok(rows) => {
                    if rows.first().and_then(|r| int(r, 0)) == Some(self.keys.len() as i64) {
                        Ok(())
                    } else {
                        Err(self.lost("the connection no longer holds the lock"))
                    }
                }
                Err(e) if is_connection_failure(&e) => {
                    // The session cannot be resumed: its locks are gone or will be freed by
                    // the server's wait_timeout.
                    if let Some(conn) = guard.take() {
                        self.forget_row(&conn);
                    }
                    Err(self.lost(format!("the MySQL connection holding the lock broke: {e}")))
                }
                Err(e) => Err(self.shared.my_error("renewal", &e)),
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(mut conn) = self.conn.lock().await.take() else {
                return Ok(());
            };
            self.forget_row(&conn);
            // The session keeps the TTL's wait_timeout: the next grant on this connection
            // most likely asks for the same, and `checkout` leaves it before the server
            // could close it for idling.
            match exec_row(&mut conn.conn, "SELECT RELEASE_ALL_LOCKS()", ()).await {
                Ok(row) => {
                    if int(&row, 0) == Some(self.held_locks) {
                        self.shared.checkin(conn);
                        Ok(())
                    } else {
                        Err(self.lost("the lock had been lost before the release"))
                    }
                }
                Err(e) if is_connection_failure(&e) => Err(self.lost(format!(
                    "the MySQL connection had broken before the release: {e}"
                ))),
                Err(e) => Err(self.shared.my_error("release", &e)),
            }
        })
    }
}

impl Backend for MySqlBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::EXCLUSIVE_ONLY.with_semaphore()
    }

    fn acquire<'a>(
        &'a self,
        request: &'a AcquireRequest,
        signal: LeaseSignal,
    ) -> BoxFuture<'a, Result<Box<dyn HeldLock>>> {
        Box::pin(self.acquire_impl(request, signal))
    }

    fn inspect<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>> {
        Box::pin(async move {
            self.flush_rows().await;
            let key = hex_literal(lock_name(name.as_str()).as_bytes());
            let mut found = self.holder_infos(&format!("h.lock_key = {key}")).await?;
            let mut info = found
                .infos
                .pop()
                .unwrap_or_else(|| LockInfo::new(name.as_str(), BACKEND));
            self.add_rowless(&mut info, &found.holder_connections)
                .await?;
            Ok(info)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            self.flush_rows().await;
            let filter = if prefix.is_empty() {
                "TRUE".to_owned()
            } else {
                format!(
                    "LEFT(h.name, {}) = {}",
                    prefix.len(),
                    hex_literal(prefix.as_bytes())
                )
            };
            let mut infos = self.holder_infos(&filter).await?.infos;
            self.add_foreign_list(&mut infos, prefix).await?;
            Ok(infos)
        })
    }

    fn force_release<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            self.flush_rows().await;
            let mut conn = self.shared.checkout().await?;
            let key = hex_literal(lock_name(name.as_str()).as_bytes());
            let holders = if self.shared.config.holder_info {
                format!(
                    " UNION SELECT conn_id FROM distlock_holders WHERE lock_key = {key} \
                     AND token IS NOT NULL"
                )
            } else {
                String::new()
            };
            let sql = format!(
                "SELECT DISTINCT id FROM (SELECT IS_USED_LOCK({key}) AS id{holders}) x \
                 WHERE id IS NOT NULL AND id <> CONNECTION_ID()"
            );
            let rows = match query_rows(&mut conn.conn, &sql).await {
                Ok(rows) => rows,
                Err(e) if server_code(&e) == Some(1146) => query_rows(
                    &mut conn.conn,
                    &format!(
                        "SELECT IS_USED_LOCK({key}) FROM DUAL WHERE IS_USED_LOCK({key}) IS NOT NULL"
                    ),
                )
                .await
                .map_err(|e| self.shared.my_error("force release", &e))?,
                Err(e) => return Err(self.shared.my_error("force release", &e)),
            };
            let mut killed = 0;
            for id in rows.iter().filter_map(|r| int(r, 0)) {
                if conn
                    .conn
                    .query_drop(format!("KILL CONNECTION {id}"))
                    .await
                    .is_ok()
                {
                    killed += 1;
                }
            }
            self.shared.checkin(conn);
            Ok(killed)
        })
    }
}

/// `information_schema.METADATA_LOCK_INFO` (MariaDB's `metadata_lock_info` plugin) is not
/// there: error 1109, unknown table.
fn is_unknown_table(error: &mysql_async::Error) -> bool {
    matches!(server_code(error), Some(1109))
}

impl MySqlBackend {
    /// Waits until this backend's holder rows are written, so that its inspection shows its
    /// own holders and waiters.
    async fn flush_rows(&self) {
        if let Some(rows) = &self.shared.rows {
            rows.flush().await;
        }
    }

    /// distlock's holders and waiters matching `filter`, from the holder table. A holder row
    /// counts only while its connection holds the acquisition's [`owner_lock`] (the table
    /// alone would trust a row the server no longer backs, or a row of an earlier
    /// acquisition on the same connection that the writer has not replaced yet).
    async fn holder_infos(&self, filter: &str) -> Result<HolderRecords> {
        let mut found = HolderRecords::default();
        if self.shared.rows.is_none() {
            return Ok(found);
        }
        let mut conn = self.shared.checkout().await?;
        let sql = format!(
            "SELECT h.conn_id, h.name, h.mode, h.permits, h.lim, h.owner, h.host, h.os_pid, \
             h.description, h.since_ms, h.ttl_ms, h.token, p.COMMAND, p.TIME \
             FROM distlock_holders h JOIN information_schema.PROCESSLIST p ON p.ID = h.conn_id \
             WHERE {filter} AND (h.token IS NULL \
             OR IS_USED_LOCK(CONCAT({prefix}, h.owner)) <=> h.conn_id) \
             ORDER BY h.name, h.since_ms",
            prefix = hex_literal(OWNER_LOCK_PREFIX.as_bytes()),
        );
        let rows = match query_rows(&mut conn.conn, &sql).await {
            Ok(rows) => rows,
            Err(e) if server_code(&e) == Some(1146) => Vec::new(),
            Err(e) => return Err(self.shared.my_error("inspect", &e)),
        };
        self.shared.checkin(conn);
        let now = SystemTime::now();
        let infos = &mut found.infos;
        for row in rows {
            let (Some(name), Some(mode), Some(owner)) =
                (text(&row, 1), text(&row, 2), text(&row, 5))
            else {
                continue;
            };
            let mut info_owner = OwnerInfo::current(
                owner.parse().unwrap_or(OwnerId::from_u128(0)),
                text(&row, 8),
            );
            info_owner.host = text(&row, 6).unwrap_or_default();
            info_owner.pid = int(&row, 7).unwrap_or(0) as u32;
            info_owner.since = from_millis(int(&row, 9).unwrap_or(0));
            let mode = match mode.as_str() {
                "permits" => LockMode::Permits {
                    count: int(&row, 3).unwrap_or(1) as u32,
                    limit: int(&row, 4).unwrap_or(1) as u32,
                },
                _ => LockMode::Exclusive,
            };
            let slot = match infos.last_mut() {
                Some(last) if last.name == name => last,
                _ => {
                    infos.push(LockInfo::new(name, BACKEND));
                    infos.last_mut().expect("pushed")
                }
            };
            match int(&row, 11) {
                Some(token) => {
                    found.holder_connections.extend(int(&row, 0));
                    let ttl = Duration::from_millis(int(&row, 10).unwrap_or(0).max(0) as u64);
                    let idle = Duration::from_secs(int(&row, 13).unwrap_or(0).max(0) as u64);
                    let expires = (text(&row, 12).as_deref() == Some("Sleep"))
                        .then(|| now + ttl.saturating_sub(idle));
                    slot.holders.push(Holder::new(
                        info_owner,
                        mode,
                        FencingToken::new(token as u64),
                        expires,
                    ));
                }
                None => slot.waiters.push(Waiter::new(info_owner, mode, 0)),
            }
        }
        Ok(found)
    }

    /// Adds to `list`'s report the user locks that connections hold without distlock, from
    /// `METADATA_LOCK_INFO` where the plugin is loaded (else there is no inventory of user
    /// locks and nothing is added). Only `GET_LOCK` names that distlock uses unchanged (see
    /// [`lock_name`]) are listed: they are the names `distlock status` can address.
    async fn add_foreign_list(&self, infos: &mut Vec<LockInfo>, prefix: &str) -> Result<()> {
        let mut conn = self.shared.checkout().await?;
        // distlock holders are the connections that hold an owner lock (their rows may be
        // a moment behind).
        let mine = format!(
            "AND NOT EXISTS (SELECT 1 {})",
            owner_locks_of("m.THREAD_ID")
        );
        let sql = |filter: &str| {
            format!(
                "SELECT m.THREAD_ID, m.TABLE_SCHEMA, p.USER, p.HOST, p.TIME \
                 FROM information_schema.METADATA_LOCK_INFO m \
                 LEFT JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID \
                 WHERE m.LOCK_TYPE = 'User lock' AND m.THREAD_ID <> CONNECTION_ID() {filter} \
                 ORDER BY m.TABLE_SCHEMA, m.THREAD_ID"
            )
        };
        let filter = if self.shared.config.holder_info {
            mine
        } else {
            String::new()
        };
        let rows = match query_rows(&mut conn.conn, &sql(&filter)).await {
            Ok(rows) => rows,
            Err(e) if is_unknown_table(&e) => {
                self.shared.checkin(conn);
                return Ok(());
            }
            Err(e) => return Err(self.shared.my_error("list", &e)),
        };
        self.shared.checkin(conn);
        let now = SystemTime::now();
        for row in rows {
            let Some(name) = text(&row, 1) else { continue };
            if !name.starts_with(prefix) || lock_name(&name) != name {
                continue;
            }
            let id = int(&row, 0).unwrap_or(0);
            let user = text(&row, 2).unwrap_or_default();
            let mut owner = OwnerInfo::current(
                OwnerId::from_u128(0),
                Some(format!(
                    "MySQL connection {id} (user {user:?}) without distlock"
                )),
            );
            owner.host = text(&row, 3).unwrap_or_default();
            owner.pid = 0;
            owner.since = now - Duration::from_secs(int(&row, 4).unwrap_or(0).max(0) as u64);
            let index = match infos.iter().position(|i| i.name == name) {
                Some(index) => index,
                None => {
                    infos.push(LockInfo::new(name, BACKEND));
                    infos.len() - 1
                }
            };
            infos[index].holders.push(Holder::new(
                owner,
                LockMode::Exclusive,
                FencingToken::new(0),
                None,
            ));
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Adds the connections that hold the name's `GET_LOCK` name, or slots of its semaphore,
    /// but have no holder row: a connection without distlock (interop), or a distlock holder
    /// whose row the writer of its process has not written yet. Slots are looked for up to
    /// the largest `limit` a row of the name records, else up to [`SLOT_PROBE`] (and the
    /// limit shown is 0: not known).
    /// Where `METADATA_LOCK_INFO` lists the connection's [`owner_lock`], the holder is
    /// reported with that owner id (token 0: not known yet).
    async fn add_rowless(
        &self,
        info: &mut LockInfo,
        holder_connections: &HashSet<i64>,
    ) -> Result<()> {
        // A mutex holder with a row leaves nothing to look for. The two statements are not
        // one moment: looking anyway could find the next holder too, if the lock passed on
        // between them, and show two.
        if info.holders.iter().any(|h| h.mode == LockMode::Exclusive) {
            return Ok(());
        }
        let limit = info.permit_limit();
        // (slot, GET_LOCK name): slot -1 is the mutex.
        let mut keys = vec![(-1, lock_name(&info.name))];
        keys.extend((0..).zip(slot_names(&info.name, limit.unwrap_or(SLOT_PROBE))));
        let limit = limit.unwrap_or(0);
        let users = keys
            .iter()
            .map(|(slot, key)| {
                format!(
                    "SELECT {slot} AS slot, IS_USED_LOCK({}) AS id",
                    hex_literal(key.as_bytes())
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        // With the plugin, the owner id of a distlock holder whose row is pending.
        let sql = |owner: &str| {
            format!(
                "SELECT p.ID, MIN(x.slot), COUNT(*), p.USER, p.HOST{owner} \
                 FROM ({users}) x JOIN information_schema.PROCESSLIST p ON p.ID = x.id \
                 WHERE p.ID <> CONNECTION_ID() GROUP BY p.ID, p.USER, p.HOST ORDER BY p.ID"
            )
        };
        let owner = format!(
            ", (SELECT SUBSTRING(o.TABLE_SCHEMA, {start}) {locks} LIMIT 1)",
            start = OWNER_LOCK_PREFIX.len() + 1,
            locks = owner_locks_of("p.ID"),
        );
        let mut conn = self.shared.checkout().await?;
        let rows = match query_rows(&mut conn.conn, &sql(&owner)).await {
            Err(e) if is_unknown_table(&e) => query_rows(&mut conn.conn, &sql("")).await,
            result => result,
        }
        .map_err(|e| self.shared.my_error("inspect", &e))?;
        self.shared.checkin(conn);
        for row in rows {
            let id = int(&row, 0).unwrap_or(0);
            if holder_connections.contains(&id) {
                continue;
            }
            let mode = match int(&row, 1) {
                Some(-1) => LockMode::Exclusive,
                _ => LockMode::Permits {
                    count: int(&row, 2).unwrap_or(1) as u32,
                    limit,
                },
            };
            let user = text(&row, 3).unwrap_or_default();
            let distlock_owner = text(&row, 5).and_then(|o| o.parse::<OwnerId>().ok());
            let description = match distlock_owner {
                Some(_) => format!(
                    "distlock holder on MySQL connection {id} (user {user:?}); its holder row \
                     is not written yet"
                ),
                None => format!("MySQL connection {id} (user {user:?}) without distlock"),
            };
            let mut owner = OwnerInfo::current(
                distlock_owner.unwrap_or(OwnerId::from_u128(0)),
                Some(description),
            );
            owner.host = text(&row, 4).unwrap_or_default();
            owner.pid = 0;
            info.holders
                .push(Holder::new(owner, mode, FencingToken::new(0), None));
        }
        Ok(())
    }
}

/// What the holder table says of the names an inspection asked about.
#[derive(Default)]
struct HolderRecords {
    /// One per name, holders and waiters that have a row.
    infos: Vec<LockInfo>,
    /// The connections of those holders.
    holder_connections: HashSet<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prune_statement_names_the_owner_locks_the_grants_take() {
        assert!(PRUNE_HOLDERS_SQL.contains(&format!("'{OWNER_LOCK_PREFIX}'")));
        assert!(OWNER_LOCK_PREFIX.starts_with(HASH_PREFIX));
        assert_eq!(owner_lock(OwnerId::from_u128(u128::MAX)).len(), 43);
    }
}
