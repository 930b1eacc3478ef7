//! What inspection reports: the holders and waiters of a lock.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::options::{LockMode, OwnerInfo};
use crate::token::FencingToken;

/// How many slots of a semaphore a SQL backend's inspection looks at for holders whose
/// record is not written yet, when no written record of the name tells the semaphore's limit
/// (such a holder is then shown with limit 0: not known).
pub const SLOT_PROBE: u32 = 16;

/// The state of one lock as the backend sees it.
///
/// Serialized by `distlock status --json` and `distlock list --json`; the field names are
/// stable (see `docs/cli.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock name.
    pub name: String,
    /// The backend (`"file"`, `"redis"`, ...).
    pub backend: String,
    /// Current holders: one for an exclusive lock, several for shared or semaphore locks.
    pub holders: Vec<Holder>,
    /// Acquisitions waiting, in the order the backend will serve them where it has one.
    pub waiters: Vec<Waiter>,
}

impl LockInfo {
    /// An empty report for `name`.
    pub fn new(name: impl Into<String>, backend: impl Into<String>) -> Self {
        LockInfo {
            name: name.into(),
            backend: backend.into(),
            holders: Vec::new(),
            waiters: Vec::new(),
        }
    }

    /// Whether anyone holds the lock.
    pub fn is_held(&self) -> bool {
        !self.holders.is_empty()
    }

    /// The largest semaphore limit its holders and waiters ask for, if any of them asks for
    /// permits.
    pub fn permit_limit(&self) -> Option<u32> {
        let modes = self.holders.iter().map(|h| h.mode);
        modes
            .chain(self.waiters.iter().map(|w| w.mode))
            .filter_map(|mode| match mode {
                LockMode::Permits { limit, .. } => Some(limit),
                _ => None,
            })
            .max()
    }
}

/// One holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Holder {
    /// Who holds it.
    #[serde(flatten)]
    pub owner: OwnerInfo,
    /// How it is held.
    #[serde(flatten)]
    pub mode: LockMode,
    /// The fencing token of this acquisition.
    pub token: FencingToken,
    /// When the lease runs out unless renewed; `None` where leases do not expire on their own
    /// (a file lock lasts as long as its holder process).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub expires: Option<SystemTime>,
}

impl Holder {
    /// Describes a holder.
    pub fn new(
        owner: OwnerInfo,
        mode: LockMode,
        token: FencingToken,
        expires: Option<SystemTime>,
    ) -> Self {
        Holder {
            owner,
            mode,
            token,
            expires,
        }
    }
}

/// One acquisition waiting for a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Waiter {
    /// Who waits; `since` is when the wait began.
    #[serde(flatten)]
    pub owner: OwnerInfo,
    /// How it wants the lock.
    #[serde(flatten)]
    pub mode: LockMode,
    /// Its priority (0 unless set).
    pub priority: i32,
}

impl Waiter {
    /// Describes a waiter.
    pub fn new(owner: OwnerInfo, mode: LockMode, priority: i32) -> Self {
        Waiter {
            owner,
            mode,
            priority,
        }
    }
}

/// Serializes a `SystemTime` as RFC 3339 text in UTC with millisecond precision.
pub(crate) mod rfc3339 {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let millis = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let rounded = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
        serializer.collect_str(&humantime::format_rfc3339_millis(rounded))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::rfc3339::serialize(time, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::OwnerId;

    #[test]
    fn json_shape_is_flat_and_round_trips() {
        let owner = OwnerInfo::current(OwnerId::random(), Some("deploy".into()));
        let mut info = LockInfo::new("a/b", "file");
        info.holders.push(Holder::new(
            owner.clone(),
            LockMode::Permits { count: 2, limit: 4 },
            FencingToken::new(7),
            None,
        ));
        info.waiters.push(Waiter::new(owner, LockMode::Shared, 3));
        let json = serde_json::to_value(&info).unwrap();
        let holder = &json["holders"][0];
        assert_eq!(holder["mode"], "permits");
        assert_eq!(holder["count"], 2);
        assert_eq!(holder["token"], 7);
        assert_eq!(holder["description"], "deploy");
        assert!(holder["since"].as_str().unwrap().ends_with('Z'));
        assert!(holder.get("expires").is_none());
        assert_eq!(json["waiters"][0]["mode"], "shared");
        let back: LockInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back.holders[0].token, FencingToken::new(7));
    }
}
