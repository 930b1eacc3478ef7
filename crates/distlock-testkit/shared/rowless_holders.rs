//! The inspection test of holders whose record is not written, shared by the `faults` test
//! binaries of the SQL backends, which include this file with `#[path]` (it needs
//! `distlock-core`, which the testkit does not depend on).

use distlock_core::{LockInfo, LockMode, Locks};

/// `without_rows` (a backend with `distlock_holder_info=false`) holds permits of a semaphore
/// on two connections; `with_rows` inspects it. The server's own state shows each
/// connection once, its permits the slots it holds: with no record of the name, the limit is
/// not known (0); once `with_rows` holds a permit too, its record tells the limit.
pub async fn semaphore_holders_are_shown(with_rows: &Locks, without_rows: &Locks) {
    let name = "rowless/slots";
    let semaphore = |locks: &Locks, permits| locks.semaphore(name, 5).permits(permits).no_wait();
    let two = semaphore(without_rows, 2).acquire().await.unwrap();
    let one = semaphore(without_rows, 1).acquire().await.unwrap();
    let info = with_rows.inspect(name).await.unwrap();
    assert_eq!(permits(&info), [(1, 0), (2, 0)], "{info:?}");
    let mine = semaphore(with_rows, 1).acquire().await.unwrap();
    let info = with_rows.inspect(name).await.unwrap();
    assert_eq!(permits(&info), [(1, 5), (1, 5), (2, 5)], "{info:?}");
    for lease in [two, one, mine] {
        lease.release().await.unwrap();
    }
    let info = with_rows.inspect(name).await.unwrap();
    assert!(info.holders.is_empty(), "{info:?}");
}

/// The holders' (permits, limit), in order.
fn permits(info: &LockInfo) -> Vec<(u32, u32)> {
    let mut permits: Vec<(u32, u32)> = info
        .holders
        .iter()
        .map(|h| match h.mode {
            LockMode::Permits { count, limit } => (count, limit),
            other => panic!("a semaphore holder shown as {other}"),
        })
        .collect();
    permits.sort_unstable();
    permits
}
