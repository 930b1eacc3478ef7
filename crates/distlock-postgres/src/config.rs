//! Connection settings: a libpq-style URL plus distlock's own `distlock_*` query parameters.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use distlock_core::{Error, ErrorKind, Result, redact_url};

use crate::BACKEND;

/// Settings of a [`PostgresBackend`](crate::PostgresBackend).
///
/// Built from a URL by [`PostgresConfig::from_url`]: everything libpq-style that
/// `tokio_postgres::Config` understands (`user`, `password`, `host`, `port`, `dbname`,
/// `sslmode`, `connect_timeout`, `application_name`, `options`, ...) passes through; distlock's
/// own parameters start with `distlock_` and are removed first (see `docs/postgres.md`).
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// The driver's configuration (its `Debug` hides the password).
    pub pg: tokio_postgres::Config,
    /// Schema holding distlock's token sequence and holder table (`distlock_schema`); `None`
    /// uses the first schema of the session's `search_path`.
    pub schema: Option<String>,
    /// Most sessions this backend opens at once (`distlock_max_connections`, default 64). Each
    /// held or waiting lock needs its own session; further acquisitions wait in the process.
    pub max_connections: usize,
    /// Record holder information (owner, host, pid, description, token) in the unlogged
    /// holder table (`distlock_holder_info`, default true), written off the lock's path by a
    /// task of the backend's own. Without it inspection shows the sessions of `pg_locks`
    /// with what their `application_name` says (owner id, pid, token), and no row is written.
    pub holder_info: bool,
    /// How often a waiting session checks that its client is still connected
    /// (`client_connection_check_interval`, `distlock_client_check`, default 1 s).
    pub client_check: Duration,
    /// Path of a PEM file of CA certificates to trust (`sslrootcert`), for TLS.
    pub ssl_root_cert: Option<String>,
    /// Transaction-scoped locks (`distlock_mode=transaction`), for PgBouncer's transaction
    /// pooling: each lease is a `pg_advisory_xact_lock` inside a transaction held open for the
    /// lease's life and ended by `COMMIT`. No holder rows are written (another session could
    /// not see them before the commit) and semaphores are not offered. See `docs/postgres.md`.
    pub transaction_mode: bool,
    pub(crate) display_url: String,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.display_url)
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("holder_info", &self.holder_info)
            .field("client_check", &self.client_check)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("transaction_mode", &self.transaction_mode)
            .finish()
    }
}

fn invalid(url: &str, message: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidUrl,
        BACKEND,
        format!("{}: {message}", redact_url(url)),
    )
}

impl PostgresConfig {
    /// Parses a `postgres://` or `postgresql://` URL.
    ///
    /// Errors name the URL with its password replaced by `***`.
    pub fn from_url(url: &str) -> Result<PostgresConfig> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut kept = Vec::new();
        let mut config = PostgresConfig {
            pg: tokio_postgres::Config::new(),
            schema: None,
            max_connections: 64,
            holder_info: true,
            client_check: Duration::from_secs(1),
            ssl_root_cert: None,
            transaction_mode: false,
            display_url: redact_url(url),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "distlock_schema" => {
                    if value.is_empty()
                        || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(invalid(
                            url,
                            "distlock_schema must be a plain identifier (letters, digits, _)",
                        ));
                    }
                    config.schema = Some(value.to_owned());
                }
                "distlock_max_connections" => {
                    config.max_connections = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| invalid(url, "distlock_max_connections must be >= 1"))?;
                }
                "distlock_holder_info" => {
                    config.holder_info = match value {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => {
                            return Err(invalid(url, "distlock_holder_info must be true or false"));
                        }
                    }
                }
                "distlock_client_check" => {
                    config.client_check = humantime::parse_duration(value)
                        .map_err(|e| invalid(url, format!("distlock_client_check: {e}")))?;
                }
                "distlock_mode" => {
                    config.transaction_mode = match value {
                        "session" => false,
                        "transaction" => true,
                        _ => {
                            return Err(invalid(
                                url,
                                "distlock_mode must be session or transaction",
                            ));
                        }
                    }
                }
                "sslrootcert" => config.ssl_root_cert = Some(value.to_owned()),
                other if other.starts_with("distlock_") => {
                    return Err(invalid(
                        url,
                        format!(
                            "unknown option {other:?}; distlock's options are distlock_schema, \
                             distlock_max_connections, distlock_holder_info, \
                             distlock_client_check, distlock_mode"
                        ),
                    ));
                }
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        config.pg = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            // The driver's messages name options, never values, but be safe anyway.
            let text = e.to_string();
            invalid(url, text.replace(url, &redact_url(url)))
        })?;
        if config.pg.get_hosts().is_empty() {
            config.pg.host("localhost");
        }
        if config.pg.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".to_owned());
            config.pg.user(user);
        }
        if config.pg.get_application_name().is_none() {
            config.pg.application_name("distlock");
        }
        if config.pg.get_connect_timeout().is_none() {
            config.pg.connect_timeout(Duration::from_secs(10));
        }
        if config.transaction_mode {
            // A holder row written in the lock's open transaction is invisible to everyone
            // else until the commit that releases the lock.
            config.holder_info = false;
        }
        Ok(config)
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.display_url
    }

    /// `schema.` or nothing.
    pub(crate) fn qualify(&self, object: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".{object}"),
            None => object.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_distlock_options_and_hides_passwords() {
        let config = PostgresConfig::from_url(
            "postgres://bob:hunter2@db.example:5433/app?sslmode=disable&distlock_schema=locks&distlock_max_connections=5",
        )
        .unwrap();
        assert_eq!(config.schema.as_deref(), Some("locks"));
        assert_eq!(config.max_connections, 5);
        assert_eq!(config.pg.get_dbname(), Some("app"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("bob:***@db.example"), "{shown}");

        assert!(!config.transaction_mode);
        let config = PostgresConfig::from_url("postgres://h/db?distlock_mode=transaction").unwrap();
        assert!(config.transaction_mode && !config.holder_info);
        let err = PostgresConfig::from_url("postgres://h/db?distlock_mode=xact").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);

        let err =
            PostgresConfig::from_url("postgres://bob:hunter2@h/db?distlock_bogus=1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert!(!err.to_string().contains("hunter2") && !format!("{err:?}").contains("hunter2"));
        let err = PostgresConfig::from_url("postgres://bob:hunter2@h/db?nonsense=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().starts_with("postgres: "), "{err}");
    }
}
