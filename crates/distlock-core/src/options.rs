//! What an acquisition asks for.

use std::fmt;
use std::io::Write;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::name::LockName;
use crate::token::OwnerId;

/// The TTL used when none is set: a lease is renewed every 10 s and survives a 30 s stall.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The shortest TTL accepted; below it renewal traffic and clock drift dominate.
pub const MIN_TTL: Duration = Duration::from_millis(10);

/// How the lock is held.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum LockMode {
    /// One holder at a time (a mutex, or the write side of a read-write lock).
    Exclusive,
    /// Any number of shared holders, excluding every exclusive holder (the read side).
    Shared,
    /// `count` of the `limit` permits of a counting semaphore.
    Permits {
        /// Permits this holder takes.
        count: u32,
        /// Permits the semaphore has in all.
        limit: u32,
    },
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockMode::Exclusive => f.write_str("exclusive"),
            LockMode::Shared => f.write_str("shared"),
            LockMode::Permits { count, limit } => write!(f, "{count}/{limit} permits"),
        }
    }
}

/// How long `acquire()` waits for a lock that someone else holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Fail at once with [`ErrorKind::WouldBlock`].
    NoWait,
    /// Wait at most this long, then fail with [`ErrorKind::Timeout`].
    Bounded(Duration),
    /// Wait until the lock is acquired (the default).
    #[default]
    Forever,
}

/// Options of one acquisition. Built through the lock builders of [`Locks`](crate::Locks).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcquireOptions {
    /// Lease length; renewed automatically at a third of it.
    pub ttl: Duration,
    /// How long to wait.
    pub wait: Wait,
    /// How the lock is held.
    pub mode: LockMode,
    /// Higher is served first, on backends with priority queues. 0 is the default.
    pub priority: i32,
    /// Free text shown by inspection, e.g. `"deploy of v1.2 by alice"`.
    pub description: Option<String>,
    /// Set by [`RwLockBuilder::write`](crate::RwLockBuilder::write): the exclusive side of a
    /// read-write lock rather than a mutex. Both exclude everything; a backend whose peers lay
    /// the two out differently (Curator's read-write lock on ZooKeeper) names the entry as
    /// they do, so that their readers see distlock's writers.
    pub write_side: bool,
}

impl Default for AcquireOptions {
    fn default() -> Self {
        AcquireOptions {
            ttl: DEFAULT_TTL,
            wait: Wait::Forever,
            mode: LockMode::Exclusive,
            priority: 0,
            description: None,
            write_side: false,
        }
    }
}

impl AcquireOptions {
    /// Checks the options make sense, whatever the backend.
    pub fn validate(&self, backend: &'static str, name: &LockName) -> Result<()> {
        let config =
            |message: String| Err(Error::new(ErrorKind::Config, backend, message).with_lock(name));
        if self.ttl < MIN_TTL {
            return config(format!(
                "ttl must be at least {}, got {}",
                humantime::format_duration(MIN_TTL),
                humantime::format_duration(self.ttl)
            ));
        }
        if let LockMode::Permits { count, limit } = self.mode {
            if limit == 0 {
                return config("a semaphore needs at least 1 permit".into());
            }
            if count == 0 || count > limit {
                return config(format!(
                    "permits to take must be between 1 and {limit}, got {count}"
                ));
            }
        }
        if let Some(description) = &self.description
            && description.len() > MAX_DESCRIPTION_BYTES
        {
            return config(format!(
                "a description must be at most {MAX_DESCRIPTION_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

/// The longest owner description accepted, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 256;

/// Who holds or waits for a lock: recorded by the backend and shown by inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OwnerInfo {
    /// The acquisition's random id.
    pub owner: OwnerId,
    /// The caller's free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Host name of the process.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the acquisition started (holders: when it was granted).
    #[serde(with = "crate::inspect::rfc3339")]
    pub since: SystemTime,
}

impl OwnerInfo {
    /// Describes an acquisition by this process, starting now.
    pub fn current(owner: OwnerId, description: Option<String>) -> Self {
        OwnerInfo {
            owner,
            description,
            host: local_host().to_owned(),
            pid: current_pid(),
            since: SystemTime::now(),
        }
    }

    /// This record as a JSON object, as its serde form writes it.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(160 + self.host.len());
        out.push(b'{');
        self.write_json_members(&mut out, self.since, usize::MAX);
        out.push(b'}');
        String::from_utf8(out).expect("JSON of UTF-8 text is UTF-8")
    }

    /// Appends this record's JSON members (`"owner":…,"since":"…"`, without braces) to `out`,
    /// with `since` in place of [`since`](Self::since) and the free text (description and
    /// host) cut to at most `keep` bytes on a character boundary. Serde's form of the same
    /// record reads them back.
    ///
    /// Backends write this at every grant: a direct writer costs a fraction of serde's
    /// (which formats through `fmt` the owner id, the pid and the time).
    pub fn write_json_members(&self, out: &mut Vec<u8>, since: SystemTime, keep: usize) {
        out.extend_from_slice(b"\"owner\":\"");
        out.extend_from_slice(&self.owner.hex());
        out.push(b'"');
        if let Some(description) = &self.description {
            out.extend_from_slice(b",\"description\":");
            write_json_str(out, cut(description, keep));
        }
        out.extend_from_slice(b",\"host\":");
        write_json_str(out, cut(&self.host, keep));
        out.extend_from_slice(b",\"pid\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.pid).as_bytes());
        out.extend_from_slice(b",\"since\":\"");
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}", humantime::format_rfc3339_millis(since));
        out.push(b'"');
    }
}

/// `text` cut to at most `keep` bytes on a character boundary.
fn cut(text: &str, keep: usize) -> &str {
    if text.len() <= keep {
        return text;
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` as a JSON string literal, escaped as serde_json escapes it.
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// This process's id, without a system call after the first: glibc does not cache `getpid`,
/// and a lock cycle asks for it several times. A `pthread_atfork` child handler clears the
/// cache, so a forked child reads its own id.
pub fn current_pid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};

    static PID: AtomicU32 = AtomicU32::new(0);
    static FORK_HANDLER: std::sync::Once = std::sync::Once::new();

    extern "C" fn forget_pid_in_child() {
        PID.store(0, Ordering::Relaxed);
    }

    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // Registered before the first store, so a fork racing the store leaves the child at 0.
    FORK_HANDLER.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic, which is async-signal-safe
        // as a fork child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// This machine's host name, read once.
pub fn local_host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// Everything a backend needs to acquire one lock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcquireRequest {
    /// The validated name.
    pub name: LockName,
    /// The caller's options, already validated.
    pub options: AcquireOptions,
    /// Who is acquiring; the backend stores it for inspection and owner checks.
    pub owner: OwnerInfo,
}

impl AcquireRequest {
    /// Builds a request; `owner` is usually [`OwnerInfo::current`].
    pub fn new(name: LockName, options: AcquireOptions, owner: OwnerInfo) -> Self {
        AcquireRequest {
            name,
            options,
            owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written JSON is what serde writes, and serde reads it back, whatever the free
    /// text holds.
    #[test]
    fn owner_json_matches_serde() {
        for description in [None, Some(""), Some("deploy \"v2\" \\ ünï\u{1}\n")] {
            let mut owner = OwnerInfo::current(OwnerId::random(), description.map(str::to_owned));
            owner.host = "host-1\t\u{7f}".to_owned();
            owner.since = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
            let json = owner.to_json();
            assert_eq!(json, serde_json::to_string(&owner).unwrap());
            let back: OwnerInfo = serde_json::from_str(&json).unwrap();
            let millis = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
            assert_eq!(
                back,
                OwnerInfo {
                    since: millis,
                    ..owner
                }
            );
        }
    }

    #[test]
    fn owner_json_cuts_free_text_on_a_character_boundary() {
        let mut owner = OwnerInfo::current(OwnerId::random(), Some("ééé".to_owned()));
        owner.host = "abcdef".to_owned();
        let mut out = b"{".to_vec();
        owner.write_json_members(&mut out, owner.since, 3);
        out.push(b'}');
        let back: OwnerInfo = serde_json::from_slice(&out).unwrap();
        assert_eq!(back.description.as_deref(), Some("é"));
        assert_eq!(back.host, "abc");
    }

    #[test]
    fn the_cached_pid_follows_fork() {
        let parent = current_pid();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child only calls async-signal-safe functions and _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let ok = current_pid() == unsafe { libc::getpid() } as u32;
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child saw a stale pid"
        );
        assert_eq!(current_pid(), parent);
    }
}
