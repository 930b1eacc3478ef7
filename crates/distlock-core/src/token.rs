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

/// 128 bits that identify one acquisition, unique across processes and hosts.
///
/// Stored with the lock by every backend; every renewal, release and inspection checks it, so
/// a late or retried release can never free a newer holder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u128);

impl OwnerId {
    /// A fresh owner id: unique across acquisitions, processes and hosts (with overwhelming
    /// probability), though not secret.
    ///
    /// The first call in a process, and the first after a `fork`, reads 128 bits from the
    /// operating system's random source; every other call derives its id from those bits and
    /// a process-wide counter, so an acquisition costs no system call. Not from a user-space
    /// generator either: its one-time set-up costs more than the whole of a short-lived
    /// process's lock acquisition (`distlock run`).
    pub fn random() -> Self {
        fresh::next()
    }

    /// Wraps raw bits, as read back from a backend.
    pub const fn from_u128(bits: u128) -> Self {
        OwnerId(bits)
    }

    /// The raw bits.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The id as 32 lower-case hex digits (ASCII), as [`Display`](fmt::Display) writes it,
    /// without the formatting machinery: this runs several times per lock operation (script
    /// arguments, owner records), where `{:032x}` on a `u128` costs more.
    pub fn hex(self) -> [u8; 32] {
        let mut digits = [0; 32];
        hex::encode_to_slice(self.0.to_be_bytes(), &mut digits).expect("16 bytes, 32 digits");
        digits
    }

    /// Appends [`hex`](Self::hex) to `out`.
    pub fn push_hex(self, out: &mut String) {
        out.push_str(std::str::from_utf8(&self.hex()).expect("hex digits are ASCII"));
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).expect("hex digits are ASCII"))
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

/// The generator behind [`OwnerId::random`]. Every id is the seed's high half, beside a
/// bijective mix of the seed's low half plus a counter: ids of one process never repeat, and
/// ids of two processes collide only if their random seeds share a high half.
mod fresh {
    use std::sync::Once;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    static SEEDED: AtomicBool = AtomicBool::new(false);
    static SEED_HIGH: AtomicU64 = AtomicU64::new(0);
    static SEED_LOW: AtomicU64 = AtomicU64::new(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static WATCH_FORK: Once = Once::new();

    pub(super) fn next() -> super::OwnerId {
        if !SEEDED.load(Ordering::Acquire) {
            seed();
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let high = SEED_HIGH.load(Ordering::Relaxed);
        let low = mix(SEED_LOW.load(Ordering::Relaxed).wrapping_add(n));
        super::OwnerId(((high as u128) << 64) | low as u128)
    }

    /// Threads that race here each store random halves; any mix of them is as good, so no
    /// lock is needed (a lock held across a `fork` would stay held in the child).
    fn seed() {
        WATCH_FORK.call_once(|| {
            // A forked child starts with its parent's seed and counter: make it draw its own.
            // SAFETY: registers a handler that only stores to an atomic, which is
            // async-signal-safe, as a handler run in a forked child must be.
            unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        });
        let mut bytes = [0u8; 16];
        let bits = match getrandom::fill(&mut bytes) {
            Ok(()) => u128::from_ne_bytes(bytes),
            Err(_) => rand::random(),
        };
        SEED_HIGH.store((bits >> 64) as u64, Ordering::Relaxed);
        SEED_LOW.store(bits as u64, Ordering::Relaxed);
        SEEDED.store(true, Ordering::Release);
    }

    extern "C" fn forked_child() {
        SEEDED.store(false, Ordering::Relaxed);
    }

    /// The SplitMix64 finaliser: a bijection on `u64`, so distinct counters give distinct ids.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_print_as_32_hex_digits() {
        for bits in [
            0,
            1,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(OwnerId::from_u128(bits).to_string(), format!("{bits:032x}"));
        }
    }

    #[test]
    fn owner_ids_round_trip_and_differ() {
        let a = OwnerId::random();
        let b = OwnerId::random();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<OwnerId>().unwrap(), a);
        assert!("xyz".parse::<OwnerId>().is_err());
    }

    #[test]
    fn owner_ids_never_repeat_across_threads() {
        let ids: Vec<OwnerId> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..10_000).map(|_| OwnerId::random()).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn a_forked_child_draws_its_own_owner_ids() {
        let parent = OwnerId::random();
        let mut fds = [0; 2];
        // SAFETY: a plain pipe; the child only generates an id, writes it and exits.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let bits = OwnerId::random().as_u128().to_ne_bytes();
            unsafe {
                libc::write(fds[1], bits.as_ptr().cast(), bits.len());
                libc::_exit(0);
            }
        }
        let mut bits = [0u8; 16];
        let read = unsafe { libc::read(fds[0], bits.as_mut_ptr().cast(), bits.len()) };
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(read, 16);
        let child = OwnerId::from_u128(u128::from_ne_bytes(bits));
        let next = OwnerId::random();
        // Without a fresh seed the child's id would share the parent's high half.
        assert_ne!(child.as_u128() >> 64, parent.as_u128() >> 64);
        assert_eq!(next.as_u128() >> 64, parent.as_u128() >> 64);
        assert_ne!(child, next);
    }
}
