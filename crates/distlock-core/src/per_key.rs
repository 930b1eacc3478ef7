//! State a process keeps per lock while some task uses it.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// A map from key (a lock name or path) to a `T` that exists only while some caller holds an
/// [`entry`](PerKey::entry) for it: the first caller creates it with `T::default()`, the last
/// one to let go removes it, so a process that touches millions of names keeps state only
/// for the ones in use.
pub(crate) struct PerKey<T> {
    map: Mutex<HashMap<String, Arc<T>>>,
}

impl<T> PerKey<T> {
    /// An empty map.
    pub fn new() -> Self {
        PerKey {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How many keys are in use.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl<T: Default> PerKey<T> {
    /// The state of `key`, created if no one holds it; kept until the returned entry and every
    /// other entry for `key` are dropped.
    pub fn entry(&self, key: &str) -> KeyEntry<'_, T> {
        let value = Arc::clone(self.map.lock().unwrap().entry(key.to_owned()).or_default());
        KeyEntry {
            owner: self,
            key: key.to_owned(),
            value,
        }
    }
}

impl<T> Default for PerKey<T> {
    fn default() -> Self {
        PerKey::new()
    }
}

impl<T> std::fmt::Debug for PerKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerKey").field("keys", &self.len()).finish()
    }
}

/// A caller's use of one key's state in a [`PerKey`]; dereferences to the state.
pub(crate) struct KeyEntry<'a, T> {
    owner: &'a PerKey<T>,
    key: String,
    value: Arc<T>,
}

impl<T> Deref for KeyEntry<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for KeyEntry<'_, T> {
    fn drop(&mut self) {
        let mut map = self.owner.map.lock().unwrap();
        // Clones are taken under this lock, so the count is exact: the map's and ours.
        if Arc::strong_count(&self.value) == 2 {
            map.remove(&self.key);
        }
    }
}

impl<T> std::fmt::Debug for KeyEntry<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry").field("key", &self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_lives_while_an_entry_holds_it() {
        let keys = PerKey::<Mutex<u32>>::new();
        let first = keys.entry("a");
        *first.lock().unwrap() = 7;
        {
            let second = keys.entry("a");
            assert_eq!(*second.lock().unwrap(), 7, "entries of one key share state");
            let _other = keys.entry("b");
            assert_eq!(keys.len(), 2);
        }
        assert_eq!(keys.len(), 1, "b went with its last entry; a is still held");
        drop(first);
        assert_eq!(keys.len(), 0);
        assert_eq!(*keys.entry("a").lock().unwrap(), 0, "state starts afresh");
    }
}
