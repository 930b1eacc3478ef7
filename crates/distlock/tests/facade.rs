//! The facade against the real file backend: URLs, the blocking API, and bad directories.

use std::os::unix::fs::symlink;
use std::time::Duration;

use distlock::{ErrorKind, LeaseState};

fn url(dir: &std::path::Path) -> String {
    format!("file://{}", dir.display())
}

#[tokio::test]
async fn file_urls_with_percent_escapes_and_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let spaced = dir.path().join("with space");
    let escaped = format!("file://localhost{}/with%20space", dir.path().display());
    let locks = distlock::connect(&escaped).await.unwrap();
    let lease = locks.mutex("x").no_wait().acquire().await.unwrap();
    assert!(spaced.is_dir(), "the directory is created");
    let same_dir = distlock::connect(&url(&spaced)).await.unwrap();
    let err = same_dir.mutex("x").no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    lease.release().await.unwrap();
}

#[tokio::test]
async fn a_symlinked_or_non_directory_lock_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    for bad in [link, file] {
        let err = distlock::connect(&url(&bad)).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Config | ErrorKind::Backend),
            "{}: {err}",
            bad.display()
        );
        assert_eq!(err.backend(), "file", "{err}");
    }
}

#[test]
fn the_blocking_api_needs_no_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let locks = distlock::blocking::connect(&url(dir.path())).unwrap();
    let lease = locks
        .mutex("blocking")
        .ttl(Duration::from_millis(300))
        .no_wait()
        .acquire()
        .unwrap();
    // Renewal runs on the handle's own runtime while this thread sleeps.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lease.state(), LeaseState::Held);
    let err = locks.mutex("blocking").no_wait().acquire().unwrap_err();
    assert!(err.is_would_block());
    assert_eq!(locks.inspect("blocking").unwrap().holders.len(), 1);
    assert!(lease.wait_lost(Duration::from_millis(50)).is_none());
    lease.release().unwrap();
    lease.release().unwrap();
    let again = locks.mutex("blocking").no_wait().acquire().unwrap();
    drop(again);
    let after_drop = locks
        .mutex("blocking")
        .wait(Duration::from_secs(10))
        .acquire()
        .unwrap();
    assert!(after_drop.token() > lease.token());
}

#[test]
fn blocking_force_release_makes_the_holder_lost() {
    let dir = tempfile::tempdir().unwrap();
    let locks = distlock::blocking::connect(&url(dir.path())).unwrap();
    let lease = locks
        .mutex("revoked")
        .ttl(Duration::from_millis(300))
        .acquire()
        .unwrap();
    assert_eq!(locks.force_release("revoked").unwrap(), 1);
    let lost = lease.wait_lost(Duration::from_secs(20)).expect("lost");
    assert!(lost.is_lost(), "{lost}");
    locks
        .mutex("revoked")
        .wait(Duration::from_secs(20))
        .acquire()
        .unwrap();
}
