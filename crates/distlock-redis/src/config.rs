//! Connection URLs and options.

use std::fmt;
use std::time::Duration;

use distlock_core::{Error, ErrorKind, Result, redact_url};

use crate::BACKEND;

/// How the backend reaches Redis.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (TCP, TLS or a unix socket), or a primary behind a proxy.
    Single,
    /// A Redis Cluster, reached through any of the seed nodes.
    Cluster,
    /// Redlock over N independent masters: a lock is held when a majority grants it.
    Redlock,
}

/// Options of a Redis backend, parsed from its URL (see [`RedisConfig::from_url`]).
///
/// `Debug` never shows a password.
#[non_exhaustive]
#[derive(Clone)]
pub struct RedisConfig {
    /// Single, cluster or Redlock.
    pub topology: Topology,
    /// One connection URL per node as the `redis` crate understands it (credentials included;
    /// never printed).
    pub(crate) node_urls: Vec<String>,
    /// The URL as given, with its password redacted: safe for messages.
    pub display_url: String,
    /// How long one request may take before it fails with a connection error. Default 10 s:
    /// long enough for a slow script on a loaded server, unlike redis-rs' 500 ms default.
    pub response_timeout: Duration,
    /// How long establishing a connection may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a waiter's queue entry lives without being refreshed; a waiter refreshes it
    /// at least every second, so a dead waiter is skipped after at most this long. Default 5 s.
    pub waiter_ttl: Duration,
    /// Redlock only: extra clock drift allowance on top of the core's 1% + 2 ms. Default 0.
    pub extra_drift: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("url", &self.display_url)
            .field("nodes", &self.node_urls.len())
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("waiter_ttl", &self.waiter_ttl)
            .field("extra_drift", &self.extra_drift)
            .finish()
    }
}

/// The options distlock itself reads from the query string; others go to the `redis` crate.
const OWN_PARAMS: [&str; 4] = ["response_timeout", "connect_timeout", "waiter_ttl", "drift"];

impl RedisConfig {
    /// Parses a URL:
    ///
    /// - `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS, `tls` feature);
    /// - `redis+unix:///path/to/redis.sock[?db=N]` (also `unix:///path`);
    /// - `redis+cluster://[user:password@]host:port,host:port[/]`, `rediss+cluster://...`;
    /// - `redlock://[user:password@]host:port,host:port,host:port[/db]`, `redlocks://...`.
    ///
    /// TLS URLs may end in `#insecure` to skip certificate verification (self-signed test
    /// servers only); otherwise the system's trusted roots are used.
    ///
    /// Query options: `response_timeout`, `connect_timeout`, `waiter_ttl` and (Redlock)
    /// `drift`, as durations such as `5s` or `250ms`. Other query parameters go to the `redis`
    /// crate. Errors are [`ErrorKind::InvalidUrl`] and never contain the password.
    pub fn from_url(url: &str) -> Result<RedisConfig> {
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::InvalidUrl,
                BACKEND,
                format!("invalid URL {:?}: {why}", redact_url(url)),
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected redis://host:port"))?;
        let scheme = scheme.to_ascii_lowercase();
        let (topology, node_scheme) = match scheme.as_str() {
            "redis" => (Topology::Single, "redis"),
            "rediss" => (Topology::Single, "rediss"),
            "redis+unix" | "unix" => (Topology::Single, "redis+unix"),
            "redis+cluster" => (Topology::Cluster, "redis"),
            "rediss+cluster" => (Topology::Cluster, "rediss"),
            "redlock" => (Topology::Redlock, "redis"),
            "redlocks" => (Topology::Redlock, "rediss"),
            _ => {
                return Err(invalid(
                    "unknown scheme; known: redis, rediss, redis+unix, redis+cluster, \
                     rediss+cluster, redlock, redlocks",
                ));
            }
        };
        if node_scheme == "rediss" && !cfg!(feature = "tls") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                BACKEND,
                format!(
                    "{:?}: TLS needs distlock-redis' `tls` cargo feature",
                    redact_url(url)
                ),
            ));
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let fragment = match fragment {
            None => "",
            // redis-rs' way to skip certificate verification (tests, self-signed servers).
            Some("insecure") if node_scheme == "rediss" => "#insecure",
            Some(_) => return Err(invalid("the only fragment accepted is #insecure, with TLS")),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let mut config = RedisConfig {
            topology,
            node_urls: Vec::new(),
            display_url: redact_url(url),
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            waiter_ttl: Duration::from_secs(5),
            extra_drift: Duration::ZERO,
        };
        let mut passed = vec!["protocol=resp3".to_owned()];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !OWN_PARAMS.contains(&key) {
                if key == "protocol" {
                    return Err(invalid(
                        "distlock always speaks RESP3 (it needs push messages); drop `protocol`",
                    ));
                }
                passed.push(pair.to_owned());
                continue;
            }
            let duration = humantime::parse_duration(value)
                .map_err(|e| invalid(&format!("{key}={value:?}: {e}")))?;
            match key {
                "response_timeout" => config.response_timeout = duration,
                "connect_timeout" => config.connect_timeout = duration,
                "waiter_ttl" => config.waiter_ttl = duration,
                _ => config.extra_drift = duration,
            }
        }
        for (key, value) in [
            ("response_timeout", config.response_timeout),
            ("connect_timeout", config.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(&format!("{key} must be more than zero")));
            }
        }
        if config.waiter_ttl < Duration::from_secs(2) {
            return Err(invalid(
                "waiter_ttl must be at least 2s (waiters refresh their entry every second)",
            ));
        }
        let query = passed.join("&");
        if node_scheme == "redis+unix" {
            if rest.is_empty() || !rest.starts_with('/') {
                return Err(invalid("expected redis+unix:///absolute/path/to/socket"));
            }
            config
                .node_urls
                .push(format!("redis+unix://{rest}?{query}"));
            return Ok(config);
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(invalid(
                "expected host[:port], comma-separated for several nodes",
            ));
        }
        match topology {
            Topology::Single if hosts.len() > 1 => {
                return Err(invalid(
                    "several hosts: use redis+cluster:// for a cluster or redlock:// for \
                     independent masters",
                ));
            }
            Topology::Redlock if hosts.len() < 3 || hosts.len().is_multiple_of(2) => {
                return Err(invalid(
                    "Redlock needs an odd number of at least 3 independent masters",
                ));
            }
            _ => {}
        }
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        for host in hosts {
            let node = format!("{node_scheme}://{userinfo}{host}{path}?{query}{fragment}");
            url::Url::parse(&node).map_err(|e| invalid(&e.to_string()))?;
            config.node_urls.push(node);
        }
        Ok(config)
    }

    /// How many masters must grant a Redlock lock (always 1 for other topologies).
    pub fn quorum(&self) -> usize {
        match self.topology {
            Topology::Redlock => self.node_urls.len() / 2 + 1,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms_and_hides_passwords() {
        let c = RedisConfig::from_url("redis://u:hunter2@127.0.0.1:7000/2?response_timeout=3s")
            .unwrap();
        assert_eq!(c.topology, Topology::Single);
        assert_eq!(c.response_timeout, Duration::from_secs(3));
        assert_eq!(c.node_urls.len(), 1);
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = RedisConfig::from_url("redis+cluster://h1:1,h2:2,h3:3/").unwrap();
        assert_eq!((c.topology, c.node_urls.len()), (Topology::Cluster, 3));
        let c = RedisConfig::from_url("redlock://:pw@h1:1,h2:2,h3:3?drift=5ms").unwrap();
        assert_eq!((c.topology, c.quorum()), (Topology::Redlock, 2));
        assert!(c.node_urls[2].starts_with("redis://:pw@h3:3?"));
        let c = RedisConfig::from_url("redis+unix:///tmp/r.sock?db=1").unwrap();
        assert_eq!(
            c.node_urls[0],
            "redis+unix:///tmp/r.sock?protocol=resp3&db=1"
        );
        for bad in [
            "redis://u:hunter2@h1,h2",
            "redlock://u:hunter2@h1,h2",
            "redis://u:hunter2@h?connect_timeout=soon",
            "redis://u:hunter2@h?protocol=2",
            "http://u:hunter2@h",
            "redis+unix://relative",
        ] {
            let err = RedisConfig::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{bad}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
