//! Plumbing shared by the launchers of servers with a data directory (MariaDB, PostgreSQL):
//! running as the server's OS user when the tests run as root, a template data directory
//! built once per machine and copied for each server, and waiting for a started server.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::Process;

/// The uid and gid of `user` when running as root (servers refuse to run as root).
pub(crate) fn os_user_if_root(user: &str) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = Command::new("id")
        .args(["-u", user])
        .output()
        .expect("id runs");
    let gid = Command::new("id")
        .args(["-g", user])
        .output()
        .expect("id runs");
    assert!(
        out.status.success(),
        "running as root, and there is no `{user}` OS user to run the server as"
    );
    let parse = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .expect("numeric id")
    };
    Some((parse(&out), parse(&gid)))
}

/// Gives `path` (recursively) to `owner`.
pub(crate) fn chown_tree(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown of {} failed", path.display());
    }
}

/// Makes `command` run as `owner`.
pub(crate) fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

/// The prepared template directory of `kind` (`mariadb`, `pg`) for the server binary (or bin
/// dir) `binary`, built once per machine and user: `build` fills the fresh temp dir it is given
/// and returns the directory to keep (with a `data` subdirectory).
pub(crate) fn template(
    kind: &str,
    binary: &Path,
    build: impl FnOnce(tempfile::TempDir) -> PathBuf,
) -> PathBuf {
    static TEMPLATES: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut cached = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cached.get(kind) {
        return path.clone();
    }
    let tag: String = binary
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let path = std::env::temp_dir().join(format!("distlock-{kind}-template-{uid}-v1-{tag}"));
    if !path.join("READY").exists() {
        let dir = tempfile::Builder::new()
            .prefix(&format!("distlock-{kind}-build-"))
            .tempdir()
            .expect("temp dir for the template");
        let built = build(dir);
        std::fs::write(built.join("READY"), "").expect("mark the template");
        if std::fs::rename(&built, &path).is_err() {
            // Another test process finished first; use its template.
            let _ = std::fs::remove_dir_all(&built);
        }
    }
    cached.insert(kind.to_owned(), path.clone());
    path
}

/// A new temp dir for a server of `kind` holding a copy of `template`'s `data`, given to
/// `owner`.
pub(crate) fn copy_template(
    kind: &str,
    template: &Path,
    owner: Option<(u32, u32)>,
) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("distlock-{kind}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir for {kind}: {e}"));
    let status = Command::new("cp")
        .arg("-a")
        .arg(template.join("data"))
        .arg(dir.path().join("data"))
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying the template data dir failed");
    chown_tree(dir.path(), owner);
    dir
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Waits up to `timeout` for the just-spawned `process` to be `ready`; whether it is, and
/// still running.
pub(crate) fn wait_started(
    process: &mut Process,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let ready = crate::wait_until(timeout, || {
        process.wait_exit(Duration::ZERO).is_some() || ready()
    });
    ready && process.wait_exit(Duration::ZERO).is_none()
}
