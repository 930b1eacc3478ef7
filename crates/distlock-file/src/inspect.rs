//! Reading a lock file's live state: who holds, who waits; and revoking holders.
//!
//! Liveness comes from the kernel, not from the records: a record counts only while its lock
//! byte is locked (for the exclusive slot: while the main byte is write-locked through an OFD
//! lock). A crashed process's locks vanish with it, so its records are ignored from then on.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use distlock_core::{FencingToken, Holder, LockInfo, LockMode, OwnerId, OwnerInfo};

use crate::error::BACKEND;
use crate::layout::{
    self, EXCLUSIVE_SLOT_OFFSET, HEADER_SIZE, LOCK_BASE, LOCK_END, MAIN_BYTE, RECORD_LOCK_BASE,
    Record, SLOT_REVOKE, SLOT_SIZE, SLOTS,
};
use crate::sys::{self, LockType, SeenLock};

/// A holder whose record can carry a revocation mark.
pub(crate) struct Revocable {
    /// Offset of the holder's record slot.
    pub slot_offset: u64,
    /// The holder's owner id.
    pub owner: OwnerId,
}

/// What inspection found in one lock file.
pub(crate) struct Snapshot {
    pub info: LockInfo,
    pub revocable: Vec<Revocable>,
}

/// Reads the live holders and waiters of the lock file open as `file`, reported under `name`.
pub(crate) fn snapshot(file: &File, name: &str) -> io::Result<Snapshot> {
    let seen = sys::probe_all(file, LOCK_BASE, LOCK_END)?;
    snapshot_from(file, name, &seen)
}

fn snapshot_from(file: &File, name: &str, seen: &[SeenLock]) -> io::Result<Snapshot> {
    let mut info = LockInfo::new(name, BACKEND);
    let mut revocable = Vec::new();
    let main = seen
        .iter()
        .find(|l| l.start <= MAIN_BYTE && MAIN_BYTE < l.end);
    match main {
        Some(lock) if lock.pid.is_some() => info.holders.push(foreign_holder(lock)),
        Some(lock) if lock.kind == LockType::Write => {
            if let Some(Record::Holding(holder)) = read_slot(file, EXCLUSIVE_SLOT_OFFSET)? {
                revocable.push(Revocable {
                    slot_offset: EXCLUSIVE_SLOT_OFFSET,
                    owner: holder.owner.owner,
                });
                info.holders.push(holder);
            }
        }
        _ => {}
    }
    let table_end = RECORD_LOCK_BASE + u64::from(SLOTS);
    for lock in seen.iter().filter(|l| l.pid.is_none()) {
        let from = lock.start.max(RECORD_LOCK_BASE);
        let to = lock.end.min(table_end);
        for byte in from..to {
            let slot = (byte - RECORD_LOCK_BASE) as u32;
            let offset = layout::slot_offset(slot);
            match read_slot(file, offset)? {
                Some(Record::Holding(holder)) => {
                    revocable.push(Revocable {
                        slot_offset: offset,
                        owner: holder.owner.owner,
                    });
                    info.holders.push(holder);
                }
                Some(Record::Waiting(waiter)) => info.waiters.push(waiter),
                None => {}
            }
        }
    }
    info.holders.sort_by_key(|h| h.token);
    info.waiters.sort_by_key(|w| w.owner.since);
    Ok(Snapshot { info, revocable })
}

fn read_slot(file: &File, offset: u64) -> io::Result<Option<Record>> {
    let mut buf = [0u8; SLOT_SIZE];
    let read = sys::read_full_at(file, &mut buf, offset)?;
    Ok(layout::parse_slot(&buf[..read]))
}

/// A classic POSIX lock (`lockf`, `fcntl(F_SETLK)`) on the main byte, which has no record: it
/// is reported with what the kernel tells (pid, read or write), owner id 0 and token 0.
fn foreign_holder(lock: &SeenLock) -> Holder {
    let mut owner = OwnerInfo::current(
        OwnerId::from_u128(0),
        Some("classic POSIX lock (lockf/fcntl) without a distlock record".to_owned()),
    );
    owner.pid = lock.pid.unwrap_or(0);
    // The kernel does not say when it was taken; `since` is the time of inspection.
    owner.since = SystemTime::now();
    let mode = match lock.kind {
        LockType::Write => LockMode::Exclusive,
        LockType::Read => LockMode::Shared,
    };
    Holder::new(owner, mode, FencingToken::new(0), None)
}

/// Marks every live holder of the lock file open (read-write) as `file` revoked; returns how
/// many were marked.
pub(crate) fn revoke_all(file: &File, name: &str) -> io::Result<usize> {
    let snapshot = snapshot(file, name)?;
    for holder in &snapshot.revocable {
        // The mark names the owner, so it can only ever stop that acquisition: if the holder
        // released meanwhile and a new one took the slot, the new one ignores the mark.
        file.write_all_at(
            &holder.owner.as_u128().to_le_bytes(),
            holder.slot_offset + SLOT_REVOKE,
        )?;
    }
    Ok(snapshot.revocable.len())
}

/// The lock name stored in a lock file's header, if any.
pub(crate) fn header_name(file: &File) -> io::Result<Option<String>> {
    let mut header = vec![0u8; HEADER_SIZE];
    let read = sys::read_full_at(file, &mut header, 0)?;
    Ok(layout::stored_name(&header[..read]))
}

/// Whether anything at all is locked in the file's lock-byte space (one `F_OFD_GETLK`): lets
/// `list` skip idle files without reading them.
pub(crate) fn anything_locked(file: &File) -> io::Result<bool> {
    Ok(sys::probe(file, LOCK_BASE, LOCK_END - LOCK_BASE)?.is_some())
}

/// One-line description of who holds a lock, for `WouldBlock` messages.
pub(crate) fn describe_holders(info: &LockInfo) -> String {
    let Some(first) = info.holders.first() else {
        return "held by another owner".to_owned();
    };
    let who = if first.owner.owner.as_u128() == 0 && first.token.get() == 0 {
        format!(
            "a classic POSIX lock (lockf/fcntl) of pid {} on this host",
            first.owner.pid
        )
    } else {
        let mut who = format!(
            "pid {} on {} (owner {}",
            first.owner.pid, first.owner.host, first.owner.owner
        );
        if let Some(description) = &first.owner.description {
            who.push_str(&format!(", {description:?}"));
        }
        who.push_str(&format!(
            ", {}, token {}, since {})",
            first.mode,
            first.token,
            humantime::format_rfc3339_seconds(first.owner.since)
        ));
        who
    };
    match info.holders.len() {
        1 => format!("held by {who}"),
        n => format!("held by {n} holders, among them {who}"),
    }
}
