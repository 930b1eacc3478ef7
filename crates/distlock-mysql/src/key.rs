//! Lock names to `GET_LOCK` names (the spec is in `docs/mysql.md`).

use sha2::{Digest, Sha256};

/// The prefix of hashed names.
pub const HASH_PREFIX: &str = "distlock#";

/// The longest `GET_LOCK` name MySQL 8 accepts, in characters.
pub const MAX_LOCK_NAME: usize = 64;

/// The `GET_LOCK` name of a mutex named `name`.
///
/// `GET_LOCK` names are compared case-insensitively (and, on some collations, accent- and
/// trailing-space-insensitively) and MySQL 8 limits them to 64 characters. A name is used as
/// it is when it is *safe*: at most 64 bytes of printable ASCII (`' '`..=`'~'`), no uppercase
/// letter, no trailing space, and not starting with [`HASH_PREFIX`]. Every other name becomes
/// `distlock#` followed by the first 24 bytes of SHA-256 of its UTF-8 bytes in lowercase hex
/// (57 characters). So `"orders/42"` stays `orders/42` (and a plain
/// `GET_LOCK('orders/42', 0)` excludes it), while `"A"` and `"a"` stay different locks.
pub fn lock_name(name: &str) -> String {
    let safe = name.len() <= MAX_LOCK_NAME
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !b.is_ascii_uppercase())
        && !name.ends_with(' ')
        && !name.starts_with(HASH_PREFIX);
    if safe {
        name.to_owned()
    } else {
        hashed(name.as_bytes())
    }
}

/// The `GET_LOCK` names of the `limit` slots of a semaphore named `name`: slot `i` is
/// [`HASH_PREFIX`] + hex SHA-256 (first 24 bytes) of `name`, a NUL byte, `"slot"` and `i`.
pub fn slot_names(name: &str, limit: u32) -> Vec<String> {
    (0..limit)
        .map(|i| {
            let mut bytes = name.as_bytes().to_vec();
            bytes.extend_from_slice(format!("\0slot{i}").as_bytes());
            hashed(&bytes)
        })
        .collect()
}

fn hashed(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(HASH_PREFIX.len() + 48);
    out.push_str(HASH_PREFIX);
    for b in &digest[..24] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `X'…'`: a string literal that needs no escaping, whatever the SQL mode.
pub fn hex_literal(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "''".to_owned();
    }
    let mut literal = vec![b'\''; bytes.len() * 2 + 3];
    literal[0] = b'X';
    let digits = 2..literal.len() - 1;
    hex::encode_to_slice(bytes, &mut literal[digits]).expect("sized for two digits a byte");
    String::from_utf8(literal).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_stay_and_others_hash() {
        assert_eq!(lock_name("orders/42"), "orders/42");
        assert_eq!(lock_name("42"), "42");
        assert_ne!(lock_name("A"), lock_name("a"));
        assert!(lock_name("A").starts_with(HASH_PREFIX));
        assert_eq!(lock_name("A").len(), 57);
        assert!(lock_name("é").starts_with(HASH_PREFIX));
        assert!(lock_name("a ").starts_with(HASH_PREFIX));
        assert!(lock_name(&"x".repeat(65)).starts_with(HASH_PREFIX));
        assert_eq!(lock_name(&"x".repeat(64)), "x".repeat(64));
        let spoof = lock_name("A");
        assert_ne!(lock_name(&spoof), spoof, "hashed names cannot be spoofed");
        let slots = slot_names("gpu", 2);
        assert_eq!(slots.len(), 2);
        assert_ne!(slots[0], slots[1]);
        assert!(
            slots
                .iter()
                .all(|s| s.len() <= MAX_LOCK_NAME && *s == s.to_lowercase())
        );
    }

    #[test]
    fn hex_literals() {
        assert_eq!(hex_literal(b"a'b"), "X'612762'");
        assert_eq!(hex_literal(&[0xab, 0x01]), "X'ab01'");
        assert_eq!(hex_literal(b""), "''");
    }
}
