//! Scenarios: each measures a floor, distlock and (where they install) peers in one run, and
//! returns a report [`Section`].
//!
//! A new backend adds a module here (and its floor under [`crate::floors`]) and lists its
//! scenarios in [`all`].

pub mod cli;
pub mod file_contention;
pub mod file_cycle;
pub mod many_keys;
pub mod network;
pub mod python_peers;
pub mod takeover;
pub mod waiters;

use std::path::{Path, PathBuf};

use crate::Result;
use crate::contention::ContentionPlan;
use crate::measure::Plan;
use crate::report::Section;

/// What every scenario may use.
#[derive(Debug, Clone)]
pub struct Context {
    /// Iterations for in-process lock cycles.
    pub cycles: Plan,
    /// Iterations for process spawns.
    pub spawns: Plan,
    /// Where scenarios create their temporary lock directories.
    pub tmp: PathBuf,
    /// The `distlock` binary (release build).
    pub distlock_bin: PathBuf,
    /// util-linux `flock(1)`.
    pub flock_bin: PathBuf,
    /// A Python with the peers of python/requirements*.txt installed, if they are to run.
    pub python: Option<PathBuf>,
    /// The backends that scenarios covering several should run; `None` for all.
    pub backends: Option<Vec<String>>,
    /// Iterations for lock cycles against a server (slower than files, so fewer).
    pub network_cycles: Plan,
    /// The N-way contention runs.
    pub contention: ContentionPlan,
    /// Waiting tasks in one process for the waiters scenario.
    pub waiters: usize,
}

/// One benchmark scenario.
pub trait Scenario {
    /// A short stable id, used by `--scenarios` and in the JSON.
    fn id(&self) -> &'static str;

    /// Runs it. `earlier` holds the sections of the scenarios run before it in this run, for
    /// those that compare with another's floor.
    fn run(&self, ctx: &Context, earlier: &[Section]) -> Result<Section>;
}

/// Every scenario, in the order they run.
pub fn all() -> Vec<Box<dyn Scenario>> {
    let mut all: Vec<Box<dyn Scenario>> = vec![
        Box::new(file_cycle::FileCycle),
        Box::new(python_peers::PythonPeers),
        Box::new(cli::CliInvocation),
        Box::new(file_contention::FileContention),
    ];
    all.extend(network::scenarios());
    all.push(Box::new(cli::EtcdCliInvocation));
    all.push(Box::new(many_keys::ManyKeys));
    all.push(Box::new(takeover::Takeover));
    all.push(Box::new(waiters::ManyWaiters));
    all
}

/// Every backend, in the order scenarios that cover several run them.
pub const BACKENDS: [&str; 6] = ["file", "redis", "postgres", "mysql", "zookeeper", "etcd"];

impl Context {
    /// The backends to run, in [`BACKENDS`] order.
    pub fn backends(&self) -> Vec<&'static str> {
        BACKENDS
            .into_iter()
            .filter(|b| {
                self.backends
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|l| l == b))
            })
            .collect()
    }
}

/// A backend's server, started for a scenario and stopped when dropped.
pub struct Server {
    /// Its distlock URL.
    pub url: String,
    /// `host:port[,host:port…]`, for clients that take hosts rather than a URL.
    pub hosts: String,
    _running: Box<dyn std::any::Any>,
}

/// Starts `backend`'s single server from the testkit (for files: the directory `dir`).
pub fn start_server(backend: &str, dir: &Path) -> Result<Server> {
    use distlock_testkit as kit;

    fn server(url: String, hosts: String, running: impl std::any::Any) -> Server {
        Server {
            url,
            hosts,
            _running: Box::new(running),
        }
    }
    Ok(match backend {
        "file" => server(file_url(dir)?, String::new(), ()),
        "redis" => {
            let s = kit::redis::RedisServer::start();
            server(s.url(), format!("127.0.0.1:{}", s.port()), s)
        }
        "postgres" => {
            let s = kit::postgres::PostgresServer::start();
            server(s.url(), format!("127.0.0.1:{}", s.port()), s)
        }
        "mysql" => {
            let s = kit::mysql::MariaDbServer::start();
            server(s.url(), format!("127.0.0.1:{}", s.port()), s)
        }
        "zookeeper" => {
            let s = kit::zookeeper::ZooKeeper::start();
            server(s.url(), s.hosts(), s)
        }
        "etcd" => {
            let s = kit::etcd::Etcd::start();
            server(s.url(), s.hosts(), s)
        }
        "zookeeper-ensemble" => {
            let s = kit::zookeeper::ZooKeeper::start_ensemble();
            server(s.url(), s.hosts(), s)
        }
        "etcd-cluster" => {
            let s = kit::etcd::Etcd::start_cluster();
            server(s.url(), s.hosts(), s)
        }
        other => return Err(format!("no server for {other}").into()),
    })
}

/// `n` uncontended cycles (exclusive acquire + release) of the lock `name`, each cycle's time
/// in `out`.
pub async fn lock_cycles(
    locks: &distlock::Locks,
    name: &str,
    n: usize,
    out: &mut Vec<u64>,
) -> Result<()> {
    for _ in 0..n {
        let started = std::time::Instant::now();
        let lease = locks.mutex(name).no_wait().acquire().await?;
        lease.release().await?;
        drop(lease);
        out.push(crate::measure::elapsed_ns(started));
    }
    Ok(())
}

/// A fresh temporary directory under `ctx.tmp`, removed when dropped.
pub fn temp_dir(ctx: &Context, prefix: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&ctx.tmp)?)
}

/// The `file:///...` URL of `dir`, which must be absolute and need no percent-encoding.
pub fn file_url(dir: &Path) -> Result<String> {
    let text = dir
        .to_str()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| format!("{} is not an absolute UTF-8 path", dir.display()))?;
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
    {
        return Err(format!("{text} would need percent-encoding in a URL; use --tmp").into());
    }
    Ok(format!("file://{text}"))
}

/// The first executable file called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;

    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert_eq!(
            file_url(Path::new("/tmp/a-b_c")).unwrap(),
            "file:///tmp/a-b_c"
        );
        assert!(file_url(Path::new("relative")).is_err());
        assert!(file_url(Path::new("/tmp/a b")).is_err());
    }
}
