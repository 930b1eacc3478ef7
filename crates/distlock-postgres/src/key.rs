//! Lock names to advisory-lock keys (the spec is in `docs/postgres.md`).

use sha2::{Digest, Sha256};

/// The 64-bit advisory-lock key of a mutex or read-write lock named `name`.
///
/// - A name that is the canonical decimal form of an `i64` (`"42"`, `"-7"`, not `"042"` or
///   `"+7"`) is that number, so `pg_advisory_lock(42)` in another program and
///   `locks.mutex("42")` in distlock exclude each other.
/// - Any other name is the first 8 bytes of SHA-256 of its UTF-8 bytes, read as a big-endian
///   `i64`.
pub fn lock_key(name: &str) -> i64 {
    match name.parse::<i64>() {
        Ok(number) if number.to_string() == name => number,
        _ => hash_key(name.as_bytes()),
    }
}

/// The keys of the `limit` slots of a semaphore named `name`: slot `i` (0-based) is the first
/// 8 bytes of SHA-256 of `name`, a NUL byte, `"slot"` and `i` in decimal. Lock names cannot
/// contain NUL, so slot keys never equal the key of a mutex name.
pub fn slot_keys(name: &str, limit: u32) -> Vec<i64> {
    (0..limit)
        .map(|i| {
            let mut bytes = name.as_bytes().to_vec();
            bytes.extend_from_slice(format!("\0slot{i}").as_bytes());
            hash_key(&bytes)
        })
        .collect()
}

fn hash_key(bytes: &[u8]) -> i64 {
    let digest = Sha256::digest(bytes);
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The key split as `pg_locks` shows it: `(classid, objid)` = (high, low) 32 bits.
pub fn split_key(key: i64) -> (u32, u32) {
    ((key as u64 >> 32) as u32, key as u64 as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_names_map_to_themselves() {
        assert_eq!(lock_key("42"), 42);
        assert_eq!(lock_key("-7"), -7);
        assert_eq!(lock_key("0"), 0);
        assert_eq!(lock_key(&i64::MIN.to_string()), i64::MIN);
        assert_ne!(lock_key("042"), 42);
        assert_ne!(lock_key("+7"), 7);
        assert_ne!(lock_key("-0"), 0);
    }

    #[test]
    fn other_names_hash_and_differ_by_case() {
        // Fixed vector: SHA-256("orders/42") starts with these 8 bytes.
        let digest = Sha256::digest(b"orders/42");
        let expected = i64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(lock_key("orders/42"), expected);
        assert_ne!(lock_key("A"), lock_key("a"));
        let slots = slot_keys("gpu", 3);
        assert_eq!(slots.len(), 3);
        assert!(!slots.contains(&lock_key("gpu")));
        assert_eq!(slots, slot_keys("gpu", 3));
        assert_eq!(slots[..2], slot_keys("gpu", 2)[..]);
    }

    #[test]
    fn split_matches_pg_locks() {
        assert_eq!(split_key(42), (0, 42));
        assert_eq!(split_key(-1), (u32::MAX, u32::MAX));
        assert_eq!(split_key(1 << 32), (1, 0));
    }
}
