//! Lock names to etcd keys.
//!
//! The lock named `NAME` uses the key prefix `<root><escaped NAME>` and each acquisition the
//! key `<prefix>/<session lease id in lower-case hex>`, exactly as etcd's Go
//! `concurrency.Mutex` and `etcdctl lock NAME` lay out theirs. Escaping maps `%` to `%25` and
//! `/` to `%2F` and leaves every other character alone, so that no lock's keys lie under
//! another lock's prefix and a name without `/` or `%` is its own prefix.

/// Escapes a lock name (or a prefix of one) for use in a key.
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`]; `None` for text that `escape` cannot have produced.
pub(crate) fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['%', '/']) {
        out.push_str(&rest[..at]);
        if rest[at..].starts_with("%25") {
            out.push('%');
        } else if rest[at..].starts_with("%2F") {
            out.push('/');
        } else {
            return None;
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The key prefix of lock `name` under `root` (without the trailing `/`).
pub(crate) fn prefix(root: &str, name: &str) -> String {
    format!("{root}{}", escape(name))
}

/// The end of the key range of every key that starts with `prefix`: `prefix` with its last
/// byte below 0xff raised by one (what etcd's `--prefix` reads), or `\0` (every key) when
/// there is none.
pub(crate) fn range_end(prefix: &str) -> Vec<u8> {
    let bytes = prefix.as_bytes();
    match bytes.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = bytes[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// The lock name a key `<root><escaped name>/<id>` belongs to.
pub(crate) fn name_of(root: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(root)?;
    let (escaped, id) = rest.split_once('/')?;
    if id.is_empty() {
        return None;
    }
    unescape(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_covers_exactly_the_prefix() {
        assert_eq!(range_end("locks/a/"), b"locks/a0".to_vec());
        // UTF-8 never holds 0xff: the last byte is raised, whatever it is.
        assert_eq!(range_end("a\u{ff}"), vec![0x61, 0xc3, 0xc0]);
        assert_eq!(range_end(""), vec![0]);
    }

    #[test]
    fn escaping_round_trips_and_keeps_plain_names() {
        for name in ["orders-42", "a/b", "a%2Fb", "%", "/", "ключ/🔒", "a//b/"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
            assert!(!escape(name).contains('/'));
        }
        assert_eq!(prefix("", "orders-42"), "orders-42");
        assert_eq!(prefix("app/", "a/b"), "app/a%2Fb");
        assert_eq!(
            name_of("app/", "app/a%2Fb/694d7f0a1b2c"),
            Some("a/b".into())
        );
        assert_eq!(name_of("app/", "other/x/1"), None);
    }
}
