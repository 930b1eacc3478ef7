//! The lock file layout: where the data lives and which bytes are locked. `docs/file-backend.md`
//! carries the same table; keep them in step.
//!
//! Data (what `pread`/`pwrite` touch):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `DISTLCK1` |
//! | 8 | 8 | fencing counter, u64 LE: the last token handed out |
//! | 16 | 2048 | the exclusive holder's record slot (right after the counter, so a grant is one `pwrite`) |
//! | 2560 | 2 + ≤1024 | the lock name: u16 LE length, then UTF-8 bytes |
//! | 64 KiB + r·2048 | 2048 | record slot r of the table, r < 4096 |
//!
//! A record slot: state (u8: 0 empty, 1 waiting, 2 holding), a zero byte, the JSON length
//! (u16 LE), the revocation mark (16 bytes: the owner id, u128 LE, of a holder that
//! `force_release` revoked; zero when none), then the JSON of a [`Holder`] or a [`Waiter`].
//!
//! Lock bytes (what `F_OFD_SETLK` locks) all lie at or above [`LOCK_BASE`] = 2^40, far beyond
//! any data, so that file systems with mandatory byte-range locks (SMB) never refuse a read of
//! the header because a lock covers it.

use distlock_core::{Holder, Waiter};

/// The first bytes of every lock file.
pub(crate) const MAGIC: [u8; 8] = *b"DISTLCK1";
/// Offset of the fencing counter.
pub(crate) const COUNTER_OFFSET: u64 = 8;
/// Offset of the exclusive holder's record slot.
pub(crate) const EXCLUSIVE_SLOT_OFFSET: u64 = 16;
/// Offset of the stored name (u16 LE length, then the bytes).
pub(crate) const NAME_OFFSET: u64 = 2560;
/// The longest name stored (core's limit).
pub(crate) const NAME_CAPACITY: usize = distlock_core::MAX_NAME_BYTES;
/// Size of the header page; the record table starts well after it.
pub(crate) const HEADER_SIZE: usize = 4096;
/// Offset of record slot 0 of the table.
pub(crate) const TABLE_OFFSET: u64 = 64 * 1024;
/// Size of one record slot.
pub(crate) const SLOT_SIZE: usize = 2048;
/// Number of record slots in the table: the most waiters plus shared/permit holders that
/// inspection can see at once (more are served, just not shown).
pub(crate) const SLOTS: u32 = 4096;

/// Bytes before a slot's JSON: state, reserved, length, revocation mark.
pub(crate) const SLOT_HEADER: usize = 20;
/// Offset of the revocation mark inside a slot.
pub(crate) const SLOT_REVOKE: u64 = 4;
/// Largest JSON a slot can hold.
pub(crate) const SLOT_JSON_CAPACITY: usize = SLOT_SIZE - SLOT_HEADER;

/// Slot state: unused.
pub(crate) const STATE_EMPTY: u8 = 0;
/// Slot state: an acquisition waiting.
pub(crate) const STATE_WAITING: u8 = 1;
/// Slot state: a holder.
pub(crate) const STATE_HOLDING: u8 = 2;

/// All lock bytes lie at or above this offset.
pub(crate) const LOCK_BASE: u64 = 1 << 40;
/// Exclusive holders lock it `F_WRLCK`; shared and permit holders `F_RDLCK`.
pub(crate) const MAIN_BYTE: u64 = LOCK_BASE;
/// Held `F_WRLCK` for a few microseconds by `F_RDLCK` holders of the main byte while they bump
/// the counter (an exclusive holder excludes them all and needs no such lock).
pub(crate) const COUNTER_BYTE: u64 = LOCK_BASE + 1;
/// Held `F_WRLCK` by the one semaphore waiter collecting permits, so that two weighted waiters
/// never each hold part of what the other needs.
pub(crate) const GATE_BYTE: u64 = LOCK_BASE + 2;
/// Record slot r is alive while someone holds `F_WRLCK` on this byte + r.
pub(crate) const RECORD_LOCK_BASE: u64 = LOCK_BASE + 4096;
/// Semaphore permit i is taken while someone holds `F_WRLCK` on this byte + i.
pub(crate) const PERMIT_BASE: u64 = LOCK_BASE + (1 << 32);
/// The end of the lock-byte space (permit indices are u32).
pub(crate) const LOCK_END: u64 = PERMIT_BASE + (1 << 32);

const _: () = assert!(EXCLUSIVE_SLOT_OFFSET as usize + SLOT_SIZE <= NAME_OFFSET as usize);
const _: () = assert!(NAME_OFFSET as usize + 2 + NAME_CAPACITY <= HEADER_SIZE);
const _: () = assert!(HEADER_SIZE as u64 <= TABLE_OFFSET);
const _: () = assert!(RECORD_LOCK_BASE + SLOTS as u64 <= PERMIT_BASE);

/// The file offset of table slot `slot`.
pub(crate) fn slot_offset(slot: u32) -> u64 {
    TABLE_OFFSET + u64::from(slot) * SLOT_SIZE as u64
}

/// What the first 16 bytes of a lock file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderState {
    /// Empty or zeroed: nobody has written a header yet (or it was lost with a power cut).
    New,
    /// A distlock header with this counter.
    Valid(u64),
    /// Something else lives in this file.
    Foreign,
}

/// Classifies the first bytes of a file, of which `read` were read.
pub(crate) fn header_state(bytes: &[u8]) -> HeaderState {
    if bytes.iter().all(|&b| b == 0) {
        return HeaderState::New;
    }
    if bytes.len() < 16 || bytes[..8] != MAGIC {
        return HeaderState::Foreign;
    }
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&bytes[8..16]);
    HeaderState::Valid(u64::from_le_bytes(counter))
}

/// A full header: magic, counter, the exclusive slot (may be empty) and the name.
pub(crate) fn full_header(counter: u64, exclusive_slot: &[u8], name: &str) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(NAME_CAPACITY)];
    let end = NAME_OFFSET as usize + 2 + name.len();
    let mut buf = vec![0u8; end];
    buf[..8].copy_from_slice(&MAGIC);
    buf[8..16].copy_from_slice(&counter.to_le_bytes());
    let slot = EXCLUSIVE_SLOT_OFFSET as usize;
    buf[slot..slot + exclusive_slot.len()].copy_from_slice(exclusive_slot);
    let at = NAME_OFFSET as usize;
    buf[at..at + 2].copy_from_slice(&(name.len() as u16).to_le_bytes());
    buf[at + 2..].copy_from_slice(name);
    buf
}

/// Reads the stored name out of a header page (or as much of it as was read).
pub(crate) fn stored_name(header: &[u8]) -> Option<String> {
    if header.len() < 16 || header[..8] != MAGIC {
        return None;
    }
    let at = NAME_OFFSET as usize;
    let len = usize::from(u16::from_le_bytes([*header.get(at)?, *header.get(at + 1)?]));
    if len == 0 || len > NAME_CAPACITY {
        return None;
    }
    let bytes = header.get(at + 2..at + 2 + len)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// A decoded record slot.
#[derive(Debug)]
pub(crate) enum Record {
    Holding(Holder),
    Waiting(Waiter),
}

/// Decodes a slot; `None` when it is empty or unreadable.
pub(crate) fn parse_slot(bytes: &[u8]) -> Option<Record> {
    if bytes.len() < SLOT_HEADER {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
    let json = bytes.get(SLOT_HEADER..SLOT_HEADER + len)?;
    match bytes[0] {
        STATE_HOLDING => serde_json::from_slice(json).ok().map(Record::Holding),
        STATE_WAITING => serde_json::from_slice(json).ok().map(Record::Waiting),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = full_header(42, &[], "a/b");
        assert_eq!(header_state(&header[..16]), HeaderState::Valid(42));
        assert_eq!(stored_name(&header).as_deref(), Some("a/b"));
        assert_eq!(header_state(&[]), HeaderState::New);
        assert_eq!(header_state(&[0u8; 16]), HeaderState::New);
        assert_eq!(header_state(b"hello world, not"), HeaderState::Foreign);
        assert_eq!(header_state(b"DISTLCK1"), HeaderState::Foreign);
    }
}
