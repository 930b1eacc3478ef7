//! Writing holder and waiter records.
//!
//! Records are the JSON of distlock-core's [`Holder`](distlock_core::Holder) and
//! [`Waiter`](distlock_core::Waiter) (inspection parses them back with serde), but they are
//! written by hand: the exclusive fast path writes one on every acquisition, and a direct
//! writer into the final buffer costs a fraction of serde's flattened-map serialization.

use std::io::Write;
use std::time::SystemTime;

use distlock_core::{LockMode, OwnerInfo};

use crate::layout::{SLOT_HEADER, SLOT_JSON_CAPACITY};

/// What follows the owner fields.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tail {
    /// A holder: its token.
    Token(u64),
    /// A waiter: its priority.
    Priority(i32),
}

/// Appends a full record slot (header + JSON) in `state` to `out`. Free text too long for a
/// slot (only possible with hostile descriptions or host names) is shortened.
pub(crate) fn append_slot(
    out: &mut Vec<u8>,
    state: u8,
    owner: &OwnerInfo,
    since: SystemTime,
    mode: LockMode,
    tail: Tail,
) {
    let start = out.len();
    let mut keep = usize::MAX;
    loop {
        out.truncate(start);
        out.push(state);
        out.push(0);
        out.extend_from_slice(&[0, 0]); // JSON length, patched below
        out.extend_from_slice(&[0u8; 16]); // revocation mark: none
        let json_start = out.len();
        write_json(out, owner, since, mode, tail, keep);
        let len = out.len() - json_start;
        if len <= SLOT_JSON_CAPACITY || keep == 0 {
            let len = len.min(SLOT_JSON_CAPACITY);
            out.truncate(json_start + len);
            out[start + 2..start + 4].copy_from_slice(&(len as u16).to_le_bytes());
            debug_assert_eq!(json_start - start, SLOT_HEADER);
            return;
        }
        keep = if keep == usize::MAX { 128 } else { keep / 2 };
    }
}

fn write_json(
    out: &mut Vec<u8>,
    owner: &OwnerInfo,
    since: SystemTime,
    mode: LockMode,
    tail: Tail,
    keep: usize,
) {
    out.push(b'{');
    owner.write_json_members(out, since, keep);
    let mut digits = itoa::Buffer::new();
    match mode {
        LockMode::Exclusive => out.extend_from_slice(b",\"mode\":\"exclusive\""),
        LockMode::Shared => out.extend_from_slice(b",\"mode\":\"shared\""),
        LockMode::Permits { count, limit } => {
            let _ = write!(
                out,
                ",\"mode\":\"permits\",\"count\":{count},\"limit\":{limit}"
            );
        }
        // A mode this crate does not know yet: keep the record parseable as exclusive rather
        // than writing something inspection cannot read.
        _ => out.extend_from_slice(b",\"mode\":\"exclusive\""),
    }
    match tail {
        Tail::Token(token) => {
            out.extend_from_slice(b",\"token\":");
            out.extend_from_slice(digits.format(token).as_bytes());
        }
        Tail::Priority(priority) => {
            out.extend_from_slice(b",\"priority\":");
            out.extend_from_slice(digits.format(priority).as_bytes());
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Record, STATE_HOLDING, STATE_WAITING, parse_slot};
    use distlock_core::{FencingToken, Holder, OwnerId, Waiter};

    fn owner(description: Option<&str>, host: &str) -> OwnerInfo {
        let mut owner = OwnerInfo::current(OwnerId::random(), description.map(str::to_owned));
        owner.host = host.to_owned();
        owner
    }

    #[test]
    fn holder_records_match_core_serde() {
        for (description, mode) in [
            (None, LockMode::Exclusive),
            (Some("deploy \"v2\" \\ ünï\u{1}"), LockMode::Shared),
            (Some(""), LockMode::Permits { count: 2, limit: 7 }),
        ] {
            let owner = owner(description, "host-1");
            let since =
                SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
            let mut buf = Vec::new();
            append_slot(
                &mut buf,
                STATE_HOLDING,
                &owner,
                since,
                mode,
                Tail::Token(42),
            );
            let Some(Record::Holding(holder)) = parse_slot(&buf) else {
                panic!(
                    "unparseable: {}",
                    String::from_utf8_lossy(&buf[SLOT_HEADER..])
                );
            };
            let mut expected_owner = owner.clone();
            expected_owner.since = since;
            assert_eq!(
                holder,
                Holder::new(expected_owner, mode, FencingToken::new(42), None)
            );
            // Byte for byte what serde would write for the same holder.
            assert_eq!(
                serde_json::to_value(&holder).unwrap(),
                serde_json::from_slice::<serde_json::Value>(&buf[SLOT_HEADER..]).unwrap()
            );
        }
    }

    #[test]
    fn waiter_records_parse() {
        let owner = owner(Some("w"), "h");
        let mut buf = vec![9u8; 3]; // appends after existing bytes
        append_slot(
            &mut buf,
            STATE_WAITING,
            &owner,
            owner.since,
            LockMode::Shared,
            Tail::Priority(-3),
        );
        let Some(Record::Waiting(waiter)) = parse_slot(&buf[3..]) else {
            panic!()
        };
        let mut expected = owner.clone();
        // Records keep millisecond precision, as core's serde format does.
        expected.since = waiter.owner.since;
        assert_eq!(waiter, Waiter::new(expected, LockMode::Shared, -3));
    }

    #[test]
    fn hostile_text_is_shortened_to_fit() {
        let owner = owner(Some(&"\u{2}".repeat(256)), &"\u{3}ü".repeat(200));
        let mut buf = Vec::new();
        append_slot(
            &mut buf,
            STATE_HOLDING,
            &owner,
            owner.since,
            LockMode::Exclusive,
            Tail::Token(1),
        );
        assert!(buf.len() <= crate::layout::SLOT_SIZE);
        let Some(Record::Holding(holder)) = parse_slot(&buf) else {
            panic!()
        };
        assert_eq!(holder.owner.owner, owner.owner);
        assert!(holder.owner.host.len() < owner.host.len());
    }
}
