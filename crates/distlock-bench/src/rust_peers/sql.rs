//! Rust peers of the sql backends (being written).

use super::RustPeer;

/// This module's peers.
pub fn peers() -> Vec<RustPeer> {
    Vec::new()
}
