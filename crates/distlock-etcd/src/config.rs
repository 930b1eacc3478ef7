//! `etcd://` URLs and the connection settings they carry.

use std::fmt;
use std::time::Duration;

use distlock_core::{Error, ErrorKind, Result, redact_url};

use crate::BACKEND;

/// Where and how to connect, parsed from an `etcd://` or `etcds://` URL.
///
/// ```text
/// etcd://[user:password@]host:port[,host:port...]/[root][?timeout=5s&connect_timeout=5s]
/// etcds://...            (TLS; feature `tls`)
/// ```
///
/// `root` is a key prefix put before every lock's key prefix (see `docs/etcd.md`); without
/// one, the lock named `NAME` uses the prefix `NAME`, as `etcdctl lock NAME` does.
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Client endpoints, `http://host:port` (or `https://` with TLS).
    pub endpoints: Vec<String>,
    /// Key prefix root: empty, or ending with `/`.
    pub root: String,
    /// User name for etcd authentication.
    pub user: Option<String>,
    password: Option<String>,
    /// Whether to use TLS (`etcds://`).
    pub tls: bool,
    /// Bound for reaching the cluster at connect time.
    pub connect_timeout: Duration,
    /// Bound for every single request (a transaction, a keep-alive, a read).
    pub request_timeout: Duration,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl EtcdConfig {
    /// A configuration for plain-text `endpoints` (`host:port`) with no root and no auth.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints
                .into_iter()
                .map(|e| format!("http://{}", e.into()))
                .collect(),
            root: String::new(),
            user: None,
            password: None,
            tls: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Sets user name and password for etcd authentication.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// The password, if any (never shown by `Debug`).
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Parses `etcd://[user:password@]h1:p1[,h2:p2]/[root][?timeout=..&connect_timeout=..]`.
    ///
    /// Errors are [`InvalidUrl`](ErrorKind::InvalidUrl); messages show the URL without its
    /// password.
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
            .ok_or_else(|| invalid("expected etcd://host:port/"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "etcd" => false,
            "etcds" => true,
            _ => return Err(invalid("the scheme must be etcd or etcds")),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let scheme = if tls { "https" } else { "http" };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(invalid("expected at least one host:port"));
            }
            let host = if host
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                host.to_owned()
            } else {
                format!("{host}:2379")
            };
            endpoints.push(format!("{scheme}://{host}"));
        }
        let mut config = EtcdConfig {
            endpoints,
            tls,
            ..EtcdConfig::new(Vec::<String>::new())
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            config.user = Some(percent_decode(user).ok_or_else(|| invalid("bad user"))?);
            config.password =
                Some(percent_decode(password).ok_or_else(|| invalid("bad password"))?);
        }
        let root = percent_decode(path.trim_matches('/')).ok_or_else(|| invalid("bad root"))?;
        config.root = if root.is_empty() {
            root
        } else {
            format!("{root}/")
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let duration =
                || humantime_like(value).ok_or_else(|| invalid("durations look like 500ms or 5s"));
            match key {
                "timeout" => config.request_timeout = duration()?,
                "connect_timeout" => config.connect_timeout = duration()?,
                _ => return Err(invalid(&format!("unknown parameter {key:?}"))),
            }
        }
        Ok(config)
    }
}

fn humantime_like(text: &str) -> Option<Duration> {
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

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_root_and_credentials() {
        let c = EtcdConfig::from_url("etcd://bob:s%40cret@a:1,b:2/app/locks/?timeout=2s").unwrap();
        assert_eq!(c.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(c.root, "app/locks/");
        assert_eq!(c.user.as_deref(), Some("bob"));
        assert_eq!(c.password(), Some("s@cret"));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert!(!format!("{c:?}").contains("s@cret"));
        let c = EtcdConfig::from_url("etcd://h").unwrap();
        assert_eq!(c.endpoints, ["http://h:2379"]);
        assert_eq!(c.root, "");
    }

    #[test]
    fn errors_hide_the_password() {
        let err = EtcdConfig::from_url("etcd://u:hunter2@h:1/?bogus=1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
