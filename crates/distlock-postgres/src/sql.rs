//! The SQL distlock sends. Every acquisition, renewal and release is one statement, so the
//! uncontended path is one round trip to acquire and one to release.

use crate::config::PostgresConfig;

/// Prebuilt statement texts for one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub try_exclusive: AcquireSql,
    pub try_shared: AcquireSql,
    /// [`try_exclusive`](Self::try_exclusive) for one key (`$4`, `int8`) and no slot search:
    /// the token alone, and no row when not granted.
    pub try_one_exclusive: AcquireSql,
    pub try_one_shared: AcquireSql,
    /// Waits for the key `$4` without bound; once it is granted, takes a token if `$6`. The
    /// token alone comes back (NULL without `$6`).
    pub wait_exclusive: AcquireSql,
    pub wait_shared: AcquireSql,
    /// The same with `lock_timeout` `$5` (ms) for the wait.
    pub wait_exclusive_bounded: AcquireSql,
    pub wait_shared_bounded: AcquireSql,
    pub renew: String,
    /// Releases the keys `$1`; the count released. The session's settings stay as the grant
    /// left them: see [`cleanup`](Self::cleanup).
    pub release_exclusive: String,
    pub release_shared: String,
    /// [`release_exclusive`](Self::release_exclusive) for one key `$1` (`int8`), without the
    /// array and the aggregate: whether it was released.
    pub release_one_exclusive: String,
    pub release_one_shared: String,
    /// Releases everything and puts the session's settings back to what it had before its
    /// first grant. Run on every session that comes back from a failed or cancelled attempt,
    /// and by the pool on a session a release gave back once it has stood idle a moment
    /// (see `Shared::settle`), not in the release itself: a statement that changes a setting
    /// costs the server a walk over every setting at its end, more than the unlock.
    pub cleanup: String,
    /// Holders and waiters of one name (`$1`, its key `$2`), with the sessions that hold a
    /// slot of a semaphore of that name without a row, looked for up to the largest limit a
    /// row of the name records, else up to `$3` slots; see [`locks_sql`].
    pub inspect: String,
    /// The same, reading no holder row (no holder table).
    pub inspect_without_rows: String,
    /// Holders and waiters of the names that start with `$1`; see [`locks_sql`].
    pub list: String,
    /// The same, reading no holder row.
    pub list_without_rows: String,
    pub force_release: String,
    pub setup: String,
    /// Deletes the holder rows of sessions that are gone (every role sees every session's pid
    /// in `pg_stat_activity`).
    pub prune: String,
}

/// One acquire statement, in two forms: with the lease's settings, and without them for a
/// session that has them already.
///
/// Parameters shared by every acquire statement, before the lock-specific ones (`$4` on):
/// `$1` the holder's name after its token (`' <os pid> <owner id>'`), `$2` the TTL (ms), `$3`
/// whether to send the TCP keepalive settings too. The settings stay on the session after a
/// release until the pool resets it, so a session taken again soon with the same TTL has them:
/// see `run_acquire`.
#[derive(Debug, Clone)]
pub(crate) struct AcquireSql {
    with_settings: String,
    lean: String,
}

impl AcquireSql {
    /// The statement `sql` makes with the settings, or without.
    fn new(sql: impl Fn(&str) -> String) -> AcquireSql {
        AcquireSql {
            with_settings: sql(&format!(", {LEASE_SETTINGS}")),
            lean: sql(""),
        }
    }

    /// The form that sets the lease's settings when `set_lease` holds, else the lean one.
    pub fn pick(&self, set_lease: bool) -> &str {
        if set_lease {
            &self.with_settings
        } else {
            &self.lean
        }
    }
}

/// The lease's server-side settings: the idle timer that ends a silent holder's session, and
/// the TCP keepalives ($3). They act only while the session idles, so a waiting statement
/// applies them before it waits, off the hand-off's path. Only in the statements that need
/// them: the server builds every expression of a statement each time it runs it, even one it
/// does not evaluate, and a statement that changes a setting costs it a walk over every
/// setting at its end.
const LEASE_SETTINGS: &str = "set_config('idle_session_timeout', $2::int8::text, false), \
     CASE WHEN $3::bool THEN \
     set_config('tcp_keepalives_idle', greatest(1, $2::int8 / 3000)::text, false) || \
     set_config('tcp_keepalives_interval', greatest(1, $2::int8 / 9000)::text, false) || \
     set_config('tcp_keepalives_count', '3', false) || \
     set_config('tcp_user_timeout', $2::int8::text, false) END";

/// Applied with the token `token` of the grant: `application_name` set to the holder's identity
/// (`distlock <token> <os pid> <owner id>`), which every role can read in `pg_stat_activity`
/// the moment the grant is made. The client sends all of it but the token, which costs the
/// server less than building it. The holder row, with the rest of what `inspect` shows, is
/// written later by [`HolderRows`](distlock_core::HolderRows), and readers trust it only while
/// it names the token `application_name` names.
const HOLDER_NAME: &str =
    "set_config('application_name', 'distlock ' || token::text || $1::text, false)";

/// The 64-bit key of a `pg_locks` row `l` of an advisory lock taken with one `bigint`.
const LOCK_KEY: &str = "((l.classid::int8 << 32) | l.objid::int8)";

/// The filter of the `pg_locks` rows `l` of the lock named `$1` with key `$2`: the key, and
/// the first `slots` slot keys of a semaphore of that name, computed as
/// [`slot_keys`](crate::key::slot_keys) does.
fn name_keys(slots: &str) -> String {
    format!(
        "(l.key = $2::int8 OR l.key IN (SELECT ('x' || encode(substr(sha256(\
         convert_to($1::text, 'UTF8') || '\\x00'::bytea || convert_to('slot' || i, 'UTF8')), \
         1, 8), 'hex'))::bit(64)::int8 FROM generate_series(0, {slots} - 1) AS s(i)))"
    )
}

/// When a holder row is current for a `pg_locks` row `l` of its session: a waiter's row (no
/// token) while `l` waits, a holder's while the session's `application_name` names its
/// grant (see [`HOLDER_NAME`]). `h` is the row, `a` the session's `pg_stat_activity` row.
const CURRENT_ROW: &str = "(h.token IS NULL AND NOT l.granted OR a.application_name = \
     'distlock ' || h.token || ' ' || h.os_pid || ' ' || h.owner)";

/// The `application_name` of a session while it waits in the server. Its waiter row is
/// written by the writer, perhaps a little later: until then readers skip the session rather
/// than show it as a foreign one.
pub(crate) const WAITING_NAME: &str = "distlock waiting";

/// `s` as an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Statements {
    pub fn new(config: &PostgresConfig) -> Statements {
        let seq = &config.qualify("distlock_token_seq");
        let holders = config.qualify("distlock_holders");
        // What `application_name` goes back to when the session holds nothing.
        let idle_name = literal(config.pg.get_application_name().unwrap_or(""));
        // $4 candidate keys, $5 how many of them to take, $6 keys already held.
        let try_sql = |try_fn: &'static str| {
            AcquireSql::new(move |settings| {
                format!(
                    "WITH g AS MATERIALIZED (SELECT $6::int8[] || coalesce((SELECT array_agg(k) FROM \
                 (SELECT k FROM unnest($4::int8[]) AS u(k) WHERE {try_fn}(k) LIMIT $5::int4) x), \
                 '{{}}') AS got), \
                 t AS MATERIALIZED (SELECT token, {HOLDER_NAME}{settings} FROM (SELECT \
                 nextval('{seq}') AS token \
                 FROM g WHERE cardinality(got) = cardinality($6::int8[]) + $5::int4) n) \
                 SELECT (SELECT got FROM g), (SELECT token FROM t)"
                )
            })
        };
        // The same for one key ($4), without the slot search: the statement of nearly every
        // acquisition, where the slot search's CTEs and arrays cost more than the lock itself.
        // Only the token comes back; no row when not granted.
        let try_one_sql = |try_fn: &'static str| {
            AcquireSql::new(move |settings| {
                format!(
                    "SELECT token, {HOLDER_NAME}{settings} FROM (SELECT nextval('{seq}') AS token \
                     WHERE {try_fn}($4::int8)) n"
                )
            })
        };
        // $4 the key to wait for, $5 lock_timeout (ms, bounded waits only), $6 whether to
        // finish the acquisition (take a token) once it is granted. Once the lock is granted
        // a waiter elsewhere may be waiting for this statement's answer, so it does only what
        // must follow the grant: the token, the holder's name, and putting back a bounded
        // wait's lock_timeout (distlock's sessions keep 0 between statements, from their start
        // on: see `PostgresBackend::with_config`; a wait that fails rolls its setting back).
        // Nested subqueries, each evaluated before the one around it, order the steps: they
        // cost the server less than CTEs.
        let wait_sql = |lock_fn: &'static str, bounded: bool| {
            let (set_timeout, reset_timeout) = if bounded {
                (
                    ", set_config('lock_timeout', $5::int8::text, false)",
                    ", set_config('lock_timeout', '0', false)",
                )
            } else {
                ("", "")
            };
            AcquireSql::new(move |settings| {
                format!(
                    "SELECT token, CASE WHEN $6::bool THEN {HOLDER_NAME} END{reset_timeout} \
                     FROM (SELECT CASE WHEN $6::bool THEN nextval('{seq}') END AS token \
                     FROM (SELECT {lock_fn}($4::int8) \
                     FROM (SELECT set_config('application_name', '{WAITING_NAME}', false)\
                     {set_timeout}{settings} OFFSET 0) w OFFSET 0) l OFFSET 0) n"
                )
            })
        };
        // The holder row stays (the writer deletes it soon), and so does the session's
        // `application_name`: readers join both with `pg_locks`, so they show nothing once
        // the lock is gone.
        let release_sql = |unlock_fn: &str| {
            format!("SELECT count(*) FILTER (WHERE {unlock_fn}(k)) FROM unnest($1::int8[]) AS u(k)")
        };
        let release_one_sql = |unlock_fn: &str| format!("SELECT {unlock_fn}($1::int8)");
        Statements {
            try_exclusive: try_sql("pg_try_advisory_lock"),
            try_shared: try_sql("pg_try_advisory_lock_shared"),
            try_one_exclusive: try_one_sql("pg_try_advisory_lock"),
            try_one_shared: try_one_sql("pg_try_advisory_lock_shared"),
            wait_exclusive: wait_sql("pg_advisory_lock", false),
            wait_shared: wait_sql("pg_advisory_lock_shared", false),
            wait_exclusive_bounded: wait_sql("pg_advisory_lock", true),
            wait_shared_bounded: wait_sql("pg_advisory_lock_shared", true),
            renew: format!(
                "SELECT count(*) FROM pg_locks l WHERE pid = pg_backend_pid() \
                 AND locktype = 'advisory' AND granted AND objsubid = 1 \
                 AND {LOCK_KEY} = ANY($1::int8[])"
            ),
            release_exclusive: release_sql("pg_advisory_unlock"),
            release_shared: release_sql("pg_advisory_unlock_shared"),
            release_one_exclusive: release_one_sql("pg_advisory_unlock"),
            release_one_shared: release_one_sql("pg_advisory_unlock_shared"),
            cleanup: format!(
                "SELECT pg_advisory_unlock_all(), set_config('lock_timeout', '0', false), \
                 set_config('idle_session_timeout', '0', false), \
                 set_config('application_name', {idle_name}, false)"
            ),
            inspect: locks_sql(
                Some(&holders),
                "h.name = $1::text",
                &name_keys(&format!(
                    "coalesce((SELECT max(h.lim) FROM {holders} h \
                     WHERE h.name = $1::text AND h.mode = 'permits'), $3::int4)"
                )),
            ),
            inspect_without_rows: locks_sql(None, "", &name_keys("$3::int4")),
            list: locks_sql(
                Some(&holders),
                "starts_with(h.name, $1::text)",
                "starts_with(l.key::text, $1::text)",
            ),
            list_without_rows: locks_sql(None, "", "starts_with(l.key::text, $1::text)"),
            force_release: format!(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(x.pid)) FROM (\
                 SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.objsubid = 1 \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND {LOCK_KEY} = $1::int8 \
                 AND l.pid <> pg_backend_pid() {}) x",
                if config.holder_info {
                    format!(
                        "UNION SELECT h.pid FROM {holders} h JOIN pg_locks l ON l.pid = h.pid \
                         AND l.locktype = 'advisory' AND l.granted \
                         LEFT JOIN pg_stat_activity a ON a.pid = h.pid \
                         WHERE h.name = $2::text AND h.token IS NOT NULL \
                         AND {LOCK_KEY} = ANY(h.keys) \
                         AND {CURRENT_ROW}"
                    )
                } else {
                    "AND $2::text IS NOT NULL".to_owned()
                }
            ),
            prune: format!(
                "DELETE FROM {holders} WHERE pid NOT IN \
                 (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)"
            ),
            setup: format!(
                "CREATE SEQUENCE IF NOT EXISTS {seq};\n\
                 CREATE UNLOGGED TABLE IF NOT EXISTS {holders} (\n\
                 \x20   pid int4 PRIMARY KEY, name text NOT NULL, mode text NOT NULL,\n\
                 \x20   permits int4 NOT NULL, lim int4 NOT NULL, keys int8[] NOT NULL,\n\
                 \x20   owner text NOT NULL, host text NOT NULL, os_pid int4 NOT NULL,\n\
                 \x20   description text, since timestamptz NOT NULL, ttl_ms int8 NOT NULL,\n\
                 \x20   token int8);\n\
                 CREATE INDEX IF NOT EXISTS distlock_holders_name ON {holders} (name);"
            ),
        }
    }
}

/// One statement that reads who holds and waits, so that everything it shows is of one
/// moment: `pg_locks` and `pg_stat_activity` are each read once, into `l` and `a`.
///
/// Rows, by name, then holders first: first the sessions with a current holder row in
/// `holders` (where `holder_filter` holds for the row `h`), one per session; then, one per
/// advisory lock, the sessions without one (where `lock_filter` holds for the lock `l`):
/// plain `pg_advisory_lock(<number>)` users, named by the key's decimal form, and distlock
/// sessions whose row is not written yet, named by their `application_name`. Columns:
/// name, mode, permits, limit, owner, host, os pid, description, since (ms), ttl (ms),
/// token, granted, waiting, idle since (ms), state, then for sessions without a row their
/// server pid, `application_name` and client host. Without `holders`, only the second part.
fn locks_sql(holders: Option<&str>, holder_filter: &str, lock_filter: &str) -> String {
    let mut sql = format!(
        "WITH l AS MATERIALIZED (SELECT pid, granted, mode, {LOCK_KEY} AS key FROM pg_locks l \
         WHERE locktype = 'advisory' AND objsubid = 1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND pid <> pg_backend_pid()), \
         a AS MATERIALIZED (SELECT pid, application_name, state, state_change, client_addr \
         FROM pg_stat_activity WHERE pid IS NOT NULL) "
    );
    let mut without_row = String::new();
    if let Some(holders) = holders {
        sql.push_str(&format!(
            "SELECT h.name, h.mode, h.permits, h.lim, h.owner, h.host, h.os_pid, \
             h.description, (extract(epoch FROM h.since) * 1000)::int8, h.ttl_ms, h.token, \
             bool_or(l.granted AND l.key = ANY(h.keys)), bool_or(NOT l.granted), \
             (extract(epoch FROM min(a.state_change)) * 1000)::int8, min(a.state), \
             NULL::int4, NULL::text, NULL::text \
             FROM {holders} h JOIN l ON l.pid = h.pid LEFT JOIN a ON a.pid = h.pid \
             WHERE {holder_filter} AND {CURRENT_ROW} GROUP BY h.pid \
             UNION ALL "
        ));
        without_row = format!(
            "AND NOT EXISTS (SELECT 1 FROM {holders} h WHERE h.pid = l.pid AND {CURRENT_ROW})"
        );
    }
    sql.push_str(&format!(
        "SELECT l.key::text, CASE WHEN l.mode = 'ShareLock' THEN 'shared' ELSE 'exclusive' END, \
         1, 0, NULL::text, NULL::text, NULL::int4, NULL::text, \
         (extract(epoch FROM coalesce(a.state_change, now())) * 1000)::int8, NULL::int8, \
         NULL::int8, l.granted, NOT l.granted, \
         (extract(epoch FROM a.state_change) * 1000)::int8, a.state, \
         l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local') \
         FROM l LEFT JOIN a ON a.pid = l.pid WHERE {lock_filter} {without_row} \
         ORDER BY 1, 12 DESC, 9"
    ));
    sql
}
