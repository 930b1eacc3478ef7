//! Rust peers of the redis backends (being written).

use super::RustPeer;

/// This module's peers.
pub fn peers() -> Vec<RustPeer> {
    Vec::new()
}
