//! Lock names and the rules they follow.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};

/// The longest lock name accepted, in bytes of UTF-8.
///
/// Every backend can store a name of this length (each maps long names to a prefix plus a
/// hash where its own limit is shorter); see `docs/names.md`.
pub const MAX_NAME_BYTES: usize = 1024;

/// A validated lock name.
///
/// The rules, checked by [`LockName::new`]:
/// - not empty;
/// - at most [`MAX_NAME_BYTES`] bytes of UTF-8;
/// - no NUL and no other control character (Unicode category Cc: U+0000–U+001F, U+007F–U+009F).
///
/// Everything else is allowed, including `/`, spaces, braces, `%` and any non-ASCII text.
/// Names are compared byte for byte: `"A"` and `"a"` are different locks on every backend.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockName(String);

/// The rule a rejected name broke.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`].
    TooLong,
    /// The name contains NUL.
    Nul,
    /// The name contains a control character other than NUL.
    ControlCharacter,
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRule::Empty => f.write_str("a lock name must not be empty"),
            NameRule::TooLong => write!(f, "a lock name must be at most {MAX_NAME_BYTES} bytes"),
            NameRule::Nul => f.write_str("a lock name must not contain NUL"),
            NameRule::ControlCharacter => {
                f.write_str("a lock name must not contain control characters")
            }
        }
    }
}

impl LockName {
    /// Validates `name`; `backend` is named in the error.
    pub fn new(name: impl Into<String>, backend: &'static str) -> Result<LockName> {
        let name = name.into();
        match Self::check(&name) {
            Ok(()) => Ok(LockName(name)),
            Err(rule) => {
                Err(Error::new(ErrorKind::InvalidName, backend, rule.to_string()).with_lock(&name))
            }
        }
    }

    /// Returns the first rule `name` breaks, if any.
    pub fn check(name: &str) -> std::result::Result<(), NameRule> {
        if name.is_empty() {
            return Err(NameRule::Empty);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(NameRule::TooLong);
        }
        if name.contains('\0') {
            return Err(NameRule::Nul);
        }
        if name.chars().any(char::is_control) {
            return Err(NameRule::ControlCharacter);
        }
        Ok(())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_name(&self.0))
    }
}

/// Quotes a possibly hostile name for messages: control characters escaped, long names cut.
pub(crate) fn display_name(name: &str) -> String {
    const SHOWN_CHARS: usize = 80;
    let mut shown: String = name.chars().take(SHOWN_CHARS).collect();
    let cut = shown.len() < name.len();
    shown = format!("{shown:?}");
    if cut {
        shown.push_str(&format!("… ({} bytes)", name.len()));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slashes_unicode_and_punctuation() {
        for name in [
            "a",
            "orders/42",
            "ключ/🔒",
            "{tag} with space",
            "%2F",
            "..",
            "/",
        ] {
            LockName::new(name, "test").unwrap();
        }
        LockName::new("x".repeat(MAX_NAME_BYTES), "test").unwrap();
    }

    #[test]
    fn rejects_each_rule_and_names_it() {
        let cases = [
            ("", NameRule::Empty),
            ("a\0b", NameRule::Nul),
            ("a\nb", NameRule::ControlCharacter),
            ("a\u{7f}", NameRule::ControlCharacter),
            ("a\u{85}", NameRule::ControlCharacter),
        ];
        for (name, rule) in cases {
            assert_eq!(LockName::check(name), Err(rule), "{name:?}");
            let err = LockName::new(name, "file").unwrap_err();
            assert!(err.is_invalid_name());
            assert!(err.to_string().contains(&rule.to_string()), "{err}");
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(LockName::check(&long), Err(NameRule::TooLong));
        let shown = LockName::new(long, "file").unwrap_err().to_string();
        assert!(shown.len() < 300, "long names are cut in messages: {shown}");
    }
}
