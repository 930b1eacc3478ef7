//! The mapping from lock names to Redis keys (documented in `docs/redis.md`).
//!
//! Every key of the lock named `N` is `distlock:{T}:E:S` where
//! - `T` is the hash tag: the first 16 hexadecimal digits of SHA-256(`N`). Hex never contains a
//!   brace, so the tag Redis Cluster hashes is always exactly `T`: all keys of one lock live in
//!   one slot (no CROSSSLOT), whatever braces the name itself contains;
//! - `E` is the name, escaped: ASCII letters, digits and `-._~/` stay as they are, every other
//!   byte becomes `%XX` (upper-case hex). The escaping is reversible, so two names never share
//!   a key even if their tags collide, and `E` never contains `:`, braces or glob characters;
//! - `S` is one letter naming the structure (see [`Suffix`]).

use sha2::{Digest, Sha256};

/// The prefix of every key distlock writes.
pub const PREFIX: &str = "distlock";

/// The structures of one lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suffix {
    /// hash: holder owner id → `expiry ms:kind:count:limit:token:owner info JSON`.
    Holders,
    /// zset (score 0, ordered by member): `prio(8 hex) seq(16 hex) owner(32 hex)`.
    Queue,
    /// hash: waiter owner id →
    /// `expiry ms|kind:count:limit|ttl_ms|queue member|channel|owner info JSON`.
    Waiters,
    /// string: the fencing-token counter.
    Counter,
    /// hash: unqueued (Redlock) waiter owner id → `expiry ms|channel`.
    Watchers,
}

impl Suffix {
    fn letter(self) -> char {
        match self {
            Suffix::Holders => 'l',
            Suffix::Queue => 'q',
            Suffix::Waiters => 'w',
            Suffix::Counter => 'c',
            Suffix::Watchers => 'n',
        }
    }
}

/// The order in which scripts receive the keys of a lock (`KEYS[1..5]`).
const ALL: [Suffix; 5] = [
    Suffix::Holders,
    Suffix::Queue,
    Suffix::Waiters,
    Suffix::Counter,
    Suffix::Watchers,
];

/// The keys of one lock, built once per acquisition: every script call passes them all.
#[derive(Debug, Clone)]
pub(crate) struct LockKeys {
    all: [String; ALL.len()],
}

impl LockKeys {
    pub(crate) fn new(name: &str) -> Self {
        // Built with pushes, not `format!`: this runs on every acquisition.
        let mut base = String::with_capacity(PREFIX.len() + 22 + 3 * name.len() + 2);
        base.push_str(PREFIX);
        base.push_str(":{");
        push_hash_tag(&mut base, name);
        base.push_str("}:");
        push_escaped(&mut base, name);
        base.push(':');
        LockKeys {
            all: ALL.map(|suffix| {
                let mut key = String::with_capacity(base.len() + 1);
                key.push_str(&base);
                key.push(suffix.letter());
                key
            }),
        }
    }

    pub(crate) fn key(&self, suffix: Suffix) -> &str {
        let index = ALL.iter().position(|s| *s == suffix);
        &self.all[index.expect("every suffix is in ALL")]
    }

    /// All keys, in script order.
    pub(crate) fn all(&self) -> &[String] {
        &self.all
    }
}

/// The hash tag of `name`: 16 hex digits of its SHA-256.
#[cfg(test)]
pub(crate) fn hash_tag(name: &str) -> String {
    let mut tag = String::with_capacity(16);
    push_hash_tag(&mut tag, name);
    tag
}

/// Appends the hash tag of `name` (16 lower-case hex digits of its SHA-256) to `out`.
fn push_hash_tag(out: &mut String, name: &str) {
    let mut tag = [0; 16];
    hex::encode_to_slice(&Sha256::digest(name.as_bytes())[..8], &mut tag)
        .expect("8 bytes, 16 digits");
    out.push_str(std::str::from_utf8(&tag).expect("hex digits are ASCII"));
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
}

/// Escapes `name` for use inside a key (see the module docs).
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    push_escaped(&mut out, name);
    out
}

/// Appends [`escape`]`(name)` to `out`.
fn push_escaped(out: &mut String, name: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in name.as_bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// Reverses [`escape`]; `None` for text that [`escape`] cannot have produced.
pub(crate) fn unescape(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `SCAN MATCH` pattern for the holder and waiter hashes of locks whose names start with
/// `prefix`: a lock with anyone holding or waiting has at least one of them.
pub(crate) fn scan_pattern(prefix: &str) -> String {
    // The escaped prefix has no glob characters (`*?[]\` are all escaped), so it is literal.
    format!("{PREFIX}:{{*}}:{}*:[lw]", escape(prefix))
}

/// The lock name encoded in a key from [`scan_pattern`].
pub(crate) fn name_of_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix(":{")?;
    let close = rest.find('}')?;
    let rest = rest[close + 1..].strip_prefix(':')?;
    let (escaped, suffix) = rest.rsplit_once(':')?;
    let suffix = match suffix {
        "l" => Suffix::Holders,
        "w" => Suffix::Waiters,
        _ => return None,
    };
    let name = unescape(escaped)?;
    (LockKeys::new(&name).key(suffix) == key).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_round_trip_and_share_one_tag() {
        for name in [
            "a/b",
            "{x}",
            "}{",
            "a:b",
            "with space",
            "ключ/🔒",
            "%41",
            "*?[]\\",
        ] {
            let keys = LockKeys::new(name);
            for key in [keys.key(Suffix::Holders), keys.key(Suffix::Waiters)] {
                assert_eq!(name_of_key(key).as_deref(), Some(name), "{key}");
            }
            assert_eq!(name_of_key(keys.key(Suffix::Queue)), None);
            let tags: std::collections::BTreeSet<String> = keys
                .all()
                .iter()
                .map(|k| {
                    let open = k.find('{').unwrap();
                    let close = open + k[open..].find('}').unwrap();
                    k[open + 1..close].to_owned()
                })
                .collect();
            assert_eq!(tags.len(), 1, "{name:?}");
            assert_eq!(tags.into_iter().next().unwrap(), hash_tag(name));
        }
        assert_ne!(escape("%41"), escape("A"));
        // The layout is an interface (docs/redis.md): processes of other versions share it.
        assert_eq!(
            LockKeys::new("a b/{x}").key(Suffix::Holders),
            "distlock:{e4ce0859f3aa9380}:a%20b/%7Bx%7D:l"
        );
        assert_eq!(escape("a b"), "a%20b");
    }
}
