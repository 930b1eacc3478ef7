//! Lock name → lock file name.
//!
//! Every byte of the UTF-8 name outside `[A-Za-z0-9._-]` becomes `%XX` (upper-case hex), and a
//! leading `.` becomes `%2E` so that no name maps to `.`, `..` or a hidden file. The result is
//! injective: decoding gives the name back. Encodings longer than [`HASH_THRESHOLD`] bytes would
//! break the 255-byte file name limit, so they are cut to [`HASHED_PREFIX`] bytes (never inside
//! a `%XX` triple) and followed by `~` and 32 hex digits of SHA-256 of the name. `~` is itself
//! encoded (`%7E`) in short names, so a hashed file name never equals a short one. The full
//! name is also stored in the lock file's header, which is where `list` reads it from.

use sha2::{Digest, Sha256};

/// Encodings longer than this many bytes are hashed.
pub(crate) const HASH_THRESHOLD: usize = 200;

/// How many bytes of the encoding a hashed file name keeps, for humans reading the directory.
pub(crate) const HASHED_PREFIX: usize = 120;

/// The suffix of every lock file.
pub(crate) const SUFFIX: &str = ".lock";

/// The separator between the kept prefix and the hash in a hashed file name.
const HASH_MARK: char = '~';

fn is_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Percent-encodes `text` as described in the module docs (without the hashing step).
pub(crate) fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() + 8);
    for (i, &byte) in text.as_bytes().iter().enumerate() {
        if is_safe(byte) && !(i == 0 && byte == b'.') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
    }
    out
}

/// The file name (no directory) that holds the lock `name`.
pub(crate) fn file_name(name: &str) -> String {
    let encoded = percent_encode(name);
    if encoded.len() <= HASH_THRESHOLD {
        return encoded + SUFFIX;
    }
    let cut = cut_on_triple(&encoded, HASHED_PREFIX);
    let digest = Sha256::digest(name.as_bytes());
    let mut out = String::with_capacity(cut + 1 + 32 + SUFFIX.len());
    out.push_str(&encoded[..cut]);
    out.push(HASH_MARK);
    for byte in &digest[..16] {
        out.push_str(&format!("{byte:02x}"));
    }
    out.push_str(SUFFIX);
    out
}

/// The largest cut position ≤ `limit` that does not split a `%XX` triple.
fn cut_on_triple(encoded: &str, limit: usize) -> usize {
    let bytes = encoded.as_bytes();
    let cut = limit.min(bytes.len());
    if cut >= 1 && bytes[cut - 1] == b'%' {
        cut - 1
    } else if cut >= 2 && bytes[cut - 2] == b'%' {
        cut - 2
    } else {
        cut
    }
}

/// Recovers the name from a file name, when it is not hashed. `None` for hashed or foreign
/// file names; `list` then relies on the header.
pub(crate) fn decode_file_name(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(SUFFIX)?;
    if stem.is_empty() || stem.contains(HASH_MARK) {
        return None;
    }
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = stem.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            byte if is_safe(byte) => {
                out.push(byte);
                i += 1;
            }
            _ => return None,
        }
    }
    let name = String::from_utf8(out).ok()?;
    // Only accept the canonical encoding, so a stray hand-made file cannot alias a lock.
    (percent_encode(&name) == stem).then_some(name)
}

/// Whether a lock file called `file_name` can hold a name starting with `prefix`; a cheap
/// filter before opening the file. May say yes for files that do not match (the caller checks
/// the real name), never no for one that does.
pub(crate) fn may_match_prefix(file_name: &str, encoded_prefix: &str) -> bool {
    let Some(stem) = file_name.strip_suffix(SUFFIX) else {
        return false;
    };
    match stem.split_once(HASH_MARK) {
        // A hashed name keeps only the start of its encoding: compare what both sides have.
        Some((kept, _)) => {
            let common = kept.len().min(encoded_prefix.len());
            kept.as_bytes()[..common] == encoded_prefix.as_bytes()[..common]
        }
        None => stem.starts_with(encoded_prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_bytes_pass_and_others_are_escaped() {
        assert_eq!(file_name("orders-42_x.y"), "orders-42_x.y.lock");
        assert_eq!(file_name("a/b"), "a%2Fb.lock");
        assert_eq!(file_name("a%2Fb"), "a%252Fb.lock");
        assert_eq!(file_name("a b~"), "a%20b%7E.lock");
        assert_eq!(file_name("ключ"), "%D0%BA%D0%BB%D1%8E%D1%87.lock");
    }

    #[test]
    fn dot_names_do_not_become_special_files() {
        assert_eq!(file_name("."), "%2E.lock");
        assert_eq!(file_name(".."), "%2E..lock");
        assert_eq!(file_name(".hidden"), "%2Ehidden.lock");
        assert_eq!(file_name("a.b"), "a.b.lock");
        for name in [".", "..", "/", "../etc/passwd", ".lock"] {
            let file = file_name(name);
            assert!(!file.starts_with('.'), "{file}");
            assert!(!file.contains('/'), "{file}");
        }
    }

    #[test]
    fn encoding_round_trips_and_does_not_collide() {
        let names = [
            "a/b",
            "a%2Fb",
            "a%2fb",
            ".",
            "..",
            "%2E",
            "%",
            "%%",
            "a~b",
            "~",
            "A",
            "a",
            "ключ/🔒",
            " ",
            "{tag}",
        ];
        let mut files = std::collections::HashSet::new();
        for name in names {
            let file = file_name(name);
            assert_eq!(decode_file_name(&file).as_deref(), Some(name), "{file}");
            assert!(files.insert(file.clone()), "collision on {file}");
        }
    }

    #[test]
    fn long_names_are_hashed_within_file_name_limits() {
        let long = "x".repeat(1024);
        let file = file_name(&long);
        assert!(file.len() <= 255);
        assert!(file.starts_with(&"x".repeat(HASHED_PREFIX)));
        assert_eq!(file.len(), HASHED_PREFIX + 1 + 32 + SUFFIX.len());
        assert_eq!(decode_file_name(&file), None);
        // Names differing only after the kept prefix still get different files.
        let other = format!("{}y", "x".repeat(1023));
        assert_ne!(file_name(&other), file);
        // The longest non-hashed encoding and the shortest hashed one.
        assert_eq!(
            file_name(&"a".repeat(200)),
            format!("{}.lock", "a".repeat(200))
        );
        assert!(file_name(&"a".repeat(201)).contains('~'));
    }

    #[test]
    fn the_hashed_prefix_never_splits_an_escape() {
        for shift in 0..3 {
            let name = format!("{}{}", "a".repeat(shift), "/".repeat(300));
            let file = file_name(&name);
            let kept = file.split_once('~').unwrap().0;
            assert!(kept.len() <= HASHED_PREFIX && kept.len() >= HASHED_PREFIX - 2);
            let escapes = kept.trim_start_matches('a');
            assert_eq!(escapes.len() % 3, 0, "{kept}");
            assert!(escapes.as_bytes().chunks(3).all(|c| c == b"%2F"), "{kept}");
        }
        // Every byte is 4-byte UTF-8 escaped: 12 encoded bytes per character.
        let emoji = "🔒".repeat(100);
        let file = file_name(&emoji);
        assert!(file.len() <= 255);
        assert_eq!(file.split_once('~').unwrap().0.len() % 3, 0);
    }

    #[test]
    fn non_canonical_or_foreign_files_do_not_decode() {
        assert_eq!(decode_file_name("a%2fb.lock"), None); // lower-case hex is not ours
        assert_eq!(decode_file_name(".x.lock"), None);
        assert_eq!(decode_file_name("a b.lock"), None);
        assert_eq!(decode_file_name("a%2.lock"), None);
        assert_eq!(decode_file_name("%FF.lock"), None); // not UTF-8
        assert_eq!(decode_file_name("x.txt"), None);
        assert_eq!(decode_file_name(".lock"), None);
    }

    #[test]
    fn prefix_filter_never_rejects_a_match() {
        let long = format!("jobs/{}", "z".repeat(400));
        for (name, prefix) in [
            ("jobs/1", "jobs/"),
            ("jobs/1", ""),
            (".x", "."),
            (long.as_str(), "jobs/"),
            (long.as_str(), &long[..300]),
        ] {
            assert!(
                may_match_prefix(&file_name(name), &percent_encode(prefix)),
                "{name} / {prefix}"
            );
        }
        assert!(!may_match_prefix(
            &file_name("other/1"),
            &percent_encode("jobs/")
        ));
        assert!(!may_match_prefix("README", ""));
    }
}
