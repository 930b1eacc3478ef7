//! Fencing tokens and owner ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A number that strictly increases across successive acquisitions of one lock name.
///
/// Pass it to the resource the lock protects and have the resource reject any request whose
/// token is lower than the highest it has seen: that turns a holder that paused past its lease
/// into a harmless one. Each backend's source is listed in `docs/guarantees.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw token value.
    pub const fn new(value: u64) -> Self {
        FencingToken(value)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// 128 random bits that identify one acquisition.
///
/// Stored with the lock by every backend; every renewal, release and inspection checks it, so
/// a late or retried release can never free a newer holder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u128);

impl OwnerId {
    /// A fresh random owner id, straight from the operating system's random source.
    ///
    /// Not from a user-space generator: its one-time set-up costs more than the whole of a
    /// short-lived process's lock acquisition (`distlock run`).
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        match getrandom::fill(&mut bytes) {
            Ok(()) => OwnerId(u128::from_ne_bytes(bytes)),
            Err(_) => OwnerId(rand::random()),
        }
    }

    /// Wraps raw bits, as read back from a backend.
    pub const fn from_u128(bits: u128) -> Self {
        OwnerId(bits)
    }

    /// The raw bits.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerId({self})")
    }
}

/// The text was not 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an owner id is 32 hexadecimal digits")]
pub struct ParseOwnerIdError;

impl FromStr for OwnerId {
    type Err = ParseOwnerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(ParseOwnerIdError);
        }
        u128::from_str_radix(s, 16)
            .map(OwnerId)
            .map_err(|_| ParseOwnerIdError)
    }
}

impl Serialize for OwnerId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OwnerId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_round_trip_and_differ() {
        let a = OwnerId::random();
        let b = OwnerId::random();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<OwnerId>().unwrap(), a);
        assert!("xyz".parse::<OwnerId>().is_err());
    }
}
