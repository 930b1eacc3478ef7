//! One section per network backend: the uncontended lock cycle against the backend's floor
//! (see [`crate::floors::net`]), then N-way contention, distlock and the Python peers side by
//! side on the same server.

use std::cell::RefCell;
use std::time::Instant;

use crate::Result;
use crate::contention::{self, Subject as Contender};
use crate::floors::net::{self, Floor};
use crate::measure::{Plan, Subject, elapsed_ns, interleaved};
use crate::peers::PeerCommand;
use crate::report::{Baseline, Kind, Row, Section, Unit};
use crate::rust_peers;

use super::{Context, Scenario, lock_cycles, start_server, temp_dir};

/// The target on distlock's uncontended cycle, as a ratio to the floor's p50.
pub const TARGET: f64 = 1.15;

/// The reference row of one committed write, where the floor client has one.
const DURABLE: &str = "1 committed single-row upsert (autocommit)";
/// The reference row of distlock without its holder row, where the backend has the option.
const WITHOUT_HOLDER_ROW: &str =
    "distlock with `distlock_holder_info=false` (no holder row; `inspect` sees less)";

/// The contention reference row's label, where the backend has one.
const HANDOFF_REFERENCE: &str = "raw hand-off (reference)";

/// One network backend's section.
#[derive(Debug)]
pub struct NetworkBackend {
    /// The section id.
    id: &'static str,
    /// The backend (its floor client and its place in the plan).
    backend: &'static str,
    /// What [`start_server`] starts: the backend's single server, or a cluster of it.
    server: &'static str,
    title: &'static str,
    floor: &'static str,
    round_trip: &'static str,
    /// The Python peers (`net_peers.py --lib`) that run against this backend.
    python_peers: &'static [&'static str],
    /// The Rust peers (`distlock-bench peer LIB`) that run against this backend, where built.
    rust_peers: &'static [&'static str],
    /// Whether Apache Curator's `InterProcessMutex` (`java/CuratorPeer.java`) runs too.
    curator: bool,
    /// What distlock's uncontended cycle does that the peers' may not: said in the report
    /// when a peer's cycle is faster.
    cycle_cost: &'static str,
    /// The same for a hand-off: said when a peer's 8-way hand-off gap p50 is shorter.
    handoff_cost: &'static str,
    /// Whether the backend has `distlock_holder_info=false`, whose cycle is then measured too:
    /// what the holder row costs.
    holder_info_option: bool,
    /// A contention reference: the least work a queued hand-off through this server takes
    /// (a `distlock-bench peer` library, and what it does), run beside distlock.
    handoff_reference: Option<(&'static str, &'static str)>,
    /// The settings with which the testkit starts the server so that a commit does not wait
    /// for a flush to disk, and what a commit still does with them (`None` where the testkit
    /// keeps the server's own durability).
    unflushed_commits: Option<(&'static [&'static str], &'static str)>,
}

/// Every network backend's section, in the order they run.
pub fn scenarios() -> Vec<Box<dyn Scenario>> {
    let singles = [
        NetworkBackend {
            id: "redis",
            backend: "redis",
            server: "redis",
            title: "Redis",
            floor: "2 × PING (redis-rs multiplexed connection)",
            round_trip: "PING",
            python_peers: &["redis-py", "python-redis-lock"],
            rust_peers: &["rslock"],
            curator: false,
            cycle_cost: "rslock's cycle is `SET NX PX` and a compare-and-delete, with no queue, no \
                holder record and no fencing counter; distlock's scripts keep those in step (the \
                server time per `EVALSHA` is below).",
            handoff_cost: "rslock and redis-py waiters retry on a timer: one that retries just after a \
                release sees a short gap while the others wait (their FIFO rates and p99 gaps). \
                distlock's release script grants the oldest live waiter and pushes the grant to \
                it.",
            holder_info_option: false,
            handoff_reference: Some((
                rust_peers::REDIS_RELAY,
                "one token in a Redis list: `BLPOP` to take it (the server serves the \
                 longest-blocked client first), `LPUSH` to give it back",
            )),
            unflushed_commits: None,
        },
        NetworkBackend {
            id: "postgres",
            backend: "postgres",
            server: "postgres",
            title: "PostgreSQL",
            floor: "2 × SELECT 1 (tokio-postgres, prepared)",
            round_trip: "SELECT 1",
            python_peers: &["pals", "sqlalchemy-dlock"],
            rust_peers: &["sqlx-pg-advisory-lock"],
            curator: false,
            cycle_cost: "sqlx's `PgAdvisoryLock` takes and frees the advisory lock and nothing else; \
                distlock's acquire statement also takes a fencing token from a sequence, sets the \
                session's lease settings and names the holder in its `application_name`, and \
                hands its holder row to a writer task that writes it off the lock's path.",
            handoff_cost: "After the woken `pg_advisory_lock`, distlock's statement takes the fencing \
                token and names the holder in its `application_name` before it answers, work an \
                unfenced lock does not do (the lease's settings are applied before it waits).",
            holder_info_option: true,
            handoff_reference: Some((
                rust_peers::POSTGRES_RAW,
                "a bare session advisory lock with tokio-postgres: `pg_advisory_lock` waiting \
                 in the server, `pg_advisory_unlock`, both prepared",
            )),
            unflushed_commits: Some((
                &distlock_testkit::postgres::UNFLUSHED_COMMITS,
                "a commit writes its WAL to the OS and is never flushed to disk",
            )),
        },
        NetworkBackend {
            id: "mysql",
            backend: "mysql",
            server: "mysql",
            title: "MySQL / MariaDB",
            floor: "2 × SELECT 1 (mysql_async)",
            round_trip: "SELECT 1",
            python_peers: &["sqlalchemy-dlock", "pymysqllock"],
            rust_peers: &[],
            curator: false,
            cycle_cost: "sqlalchemy-dlock and PyMySQLLock call `GET_LOCK` and `RELEASE_LOCK` alone; \
                distlock's acquire also takes a fencing token (`UUID_SHORT()` plus a durable \
                offset) and an owner lock in the same statement, and hands its holder row to a \
                writer task that writes it off the lock's path.",
            handoff_cost: "After the woken `GET_LOCK`, distlock's statement takes its owner lock and \
                fencing token before it answers, and each waiting process's holder row writer \
                adds statements of its own to the server's work.",
            holder_info_option: true,
            handoff_reference: Some((
                rust_peers::MYSQL_RAW,
                "a bare named lock with mysql_async: `GET_LOCK(name, a year)` waiting in the \
                 server, `RELEASE_LOCK(name)`",
            )),
            unflushed_commits: Some((
                &distlock_testkit::mysql::UNFLUSHED_COMMITS,
                "a commit is not flushed at once, but MariaDB 10.8 and later write the redo \
                 log with `O_DIRECT` (`innodb_log_file_buffering=OFF`, the default where the \
                 disk allows it), so each commit still waits for a write to the device",
            )),
        },
        NetworkBackend {
            id: "zookeeper",
            backend: "zookeeper",
            server: "zookeeper",
            title: "ZooKeeper",
            floor: "create (ephemeral sequential) + getChildren + delete (zookeeper-client)",
            round_trip: "exists",
            python_peers: &["kazoo"],
            rust_peers: &[],
            curator: true,
            cycle_cost: "Curator and kazoo create, list and delete as distlock does; distlock's node \
                also carries the holder record as its data.",
            handoff_cost: "Curator and kazoo waiters also watch their predecessor and list the children \
                again when woken, as distlock does.",
            holder_info_option: false,
            handoff_reference: None,
            unflushed_commits: None,
        },
        NetworkBackend {
            id: "etcd",
            backend: "etcd",
            server: "etcd",
            title: "etcd",
            floor: "create-if-absent txn under a lease + delete (etcd-client)",
            round_trip: "get",
            python_peers: &["etcd3"],
            rust_peers: &["etcd-client-lock"],
            curator: false,
            cycle_cost: "etcd's lock service runs Go's `concurrency.Mutex` inside the server, one RPC \
                to lock and one to unlock; distlock's create transaction also counts the keys \
                under the prefix, and its release compares the key's create revision.",
            handoff_cost: "The lock service's waiters run inside the server, so a wake costs them no \
                client round trip, but they watch from an older revision, which etcd serves from \
                a catch-up loop every 100 ms (their p99 gap and grants/s). A distlock waiter, once \
                its predecessor's delete arrives, reads its predecessor again before it \
                proceeds.",
            holder_info_option: false,
            handoff_reference: None,
            unflushed_commits: None,
        },
    ];
    let clusters = [
        (
            "zookeeper",
            "zookeeper_ensemble",
            "zookeeper-ensemble",
            "ZooKeeper, 3-node ensemble",
        ),
        (
            "etcd",
            "etcd_cluster",
            "etcd-cluster",
            "etcd, 3-member cluster",
        ),
    ]
    .map(|(backend, id, server, title)| {
        let single = singles
            .iter()
            .find(|s| s.backend == backend)
            .expect("a cluster section has a single-server section");
        // The same floor and peers, against every node of the cluster.
        NetworkBackend {
            id,
            server,
            title,
            ..*single
        }
    });
    singles
        .into_iter()
        .chain(clusters)
        .map(|s| Box::new(s) as Box<dyn Scenario>)
        .collect()
}

impl Scenario for NetworkBackend {
    fn id(&self) -> &'static str {
        self.id
    }

    fn run(&self, ctx: &Context, _earlier: &[Section]) -> Result<Section> {
        let dir = temp_dir(ctx, "distlock-bench-net-")?;
        let server = start_server(self.server, dir.path())?;
        let floor_target = match self.backend {
            "zookeeper" | "etcd" => server.hosts.clone(),
            _ => server.url.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let floor: RefCell<Box<dyn Floor>> =
            RefCell::new(runtime.block_on(net::connect(self.backend, &floor_target))?);
        let locks = runtime.block_on(distlock::connect(&server.url))?;
        let without_holder_row = match self.holder_info_option {
            true => {
                let separator = if server.url.contains('?') { '&' } else { '?' };
                let url = format!("{}{separator}distlock_holder_info=false", server.url);
                Some(runtime.block_on(distlock::connect(&url))?)
            }
            false => None,
        };
        // The uncontended cycles, distlock's and the peers', with the server on a CPU of its
        // own (see `placement`); the contention runs below get the whole machine back.
        let split = crate::placement::Split::apply()?;

        let round_trip_label = format!("1 round trip: {}", self.round_trip);
        let mut subjects = vec![
            Subject::new(self.floor, |n, out| {
                let mut guard = floor.borrow_mut();
                let floor = &mut **guard;
                runtime.block_on(async {
                    for _ in 0..n {
                        let started = Instant::now();
                        floor.cycle().await?;
                        out.push(elapsed_ns(started));
                    }
                    Ok(())
                })
            }),
            Subject::new(round_trip_label.clone(), |n, out| {
                let mut guard = floor.borrow_mut();
                let floor = &mut **guard;
                runtime.block_on(async {
                    for _ in 0..n {
                        let started = Instant::now();
                        floor.round_trip().await?;
                        out.push(elapsed_ns(started));
                    }
                    Ok(())
                })
            }),
            Subject::new("distlock", |n, out| {
                runtime.block_on(lock_cycles(&locks, "bench-cycle", n, out))
            }),
        ];
        let durable = floor.borrow_mut().durable_write().is_some();
        if durable {
            subjects.push(Subject::new(DURABLE, |n, out| {
                let mut guard = floor.borrow_mut();
                let floor = &mut **guard;
                runtime.block_on(async {
                    for _ in 0..n {
                        let started = Instant::now();
                        if let Some(write) = floor.durable_write() {
                            write.await?;
                        }
                        out.push(elapsed_ns(started));
                    }
                    Ok(())
                })
            }));
        }
        if let Some(locks) = &without_holder_row {
            subjects.push(Subject::new(WITHOUT_HOLDER_ROW, |n, out| {
                runtime.block_on(lock_cycles(locks, "bench-cycle", n, out))
            }));
        }
        let samples = interleaved(self.plan(ctx), &mut subjects)?;
        // Client CPU per cycle: the runtime is current-thread, so the client libraries' tasks
        // (connection drivers included) and their socket system calls ran on this thread.
        let client_cpu_us = |i: usize| subjects[i].cpu_ns as f64 / samples[i].len() as f64 / 1e3;
        let (floor_cpu_us, distlock_cpu_us) = (client_cpu_us(0), client_cpu_us(2));
        drop(subjects);

        let floor_row = Row::measured(self.floor, Kind::Floor, &samples[0])?;
        let rtt_row = Row::measured(round_trip_label, Kind::Reference, &samples[1])?;
        let distlock_row = Row::measured(
            "distlock (`mutex(name).no_wait().acquire()` + `release()`)",
            Kind::Distlock,
            &samples[2],
        )?
        .with_target(TARGET);
        let rtt = Baseline::of(&rtt_row, "RTT");
        // What the server spends per script call: the part of distlock's cycle that is not
        // round trips. Read before the peers run, so it is distlock's own.
        let script_cost = if self.backend == "redis" {
            runtime.block_on(redis_script_cost(&server.url))?
        } else {
            None
        };

        let mut section = Section::new(
            self.id,
            format!("{}: lock cycle and contention", self.title),
            self.method(ctx),
            Unit::Micros,
        );
        section.baselines = vec![Baseline::of(&floor_row, "floor"), rtt.clone()];
        section.rows = vec![floor_row, rtt_row, distlock_row];
        let mut extra = samples[3..].iter();
        if durable {
            let durable_samples = extra.next().expect("a sample set per subject");
            section
                .rows
                .push(Row::measured(DURABLE, Kind::Reference, durable_samples)?);
        }
        if without_holder_row.is_some() {
            let variant_samples = extra.next().expect("a sample set per subject");
            section.rows.push(Row::measured(
                WITHOUT_HOLDER_ROW,
                Kind::Reference,
                variant_samples,
            )?);
        }

        let mut curator_classes = None;
        let mut contenders = vec![Contender {
            label: "distlock".to_owned(),
            kind: Kind::Distlock,
            command: PeerCommand::rust("distlock", &server.url)?,
        }];
        if let Some((lib, _)) = self.handoff_reference {
            contenders.push(Contender {
                label: HANDOFF_REFERENCE.to_owned(),
                kind: Kind::Reference,
                command: PeerCommand::rust(lib, &server.url)?,
            });
        }
        let built: Vec<&str> = rust_peers::all().iter().map(|p| p.lib).collect();
        for lib in self.rust_peers.iter().filter(|lib| built.contains(lib)) {
            let command = PeerCommand::rust(lib, &server.url)?;
            let output = command
                .cycle(&format!("cycle-{lib}"), self.plan(ctx))
                .map_err(|e| format!("{lib}: {e}"))?;
            section.rows.push(Row::measured(
                format!("{} {} (Rust, own process)", output.lib, output.version),
                Kind::Peer,
                &output.samples,
            )?);
            contenders.push(Contender {
                label: format!("{lib} (Rust)"),
                kind: Kind::Peer,
                command,
            });
        }
        if self.curator {
            match curator_peer(dir.path(), &server.url) {
                Ok((classes, command)) => {
                    let output = command
                        .cycle("cycle-curator", self.plan(ctx))
                        .map_err(|e| format!("curator: {e}"))?;
                    section.rows.push(Row::measured(
                        format!("Apache Curator {} (Java, own process)", output.version),
                        Kind::Peer,
                        &output.samples,
                    )?);
                    contenders.push(Contender {
                        label: "curator (Java)".to_owned(),
                        kind: Kind::Peer,
                        command,
                    });
                    // The classes must outlive the contention runs below.
                    curator_classes = Some(classes);
                }
                Err(e) => section
                    .notes
                    .push(format!("Apache Curator was not run: {e}")),
            }
        }
        match &ctx.python {
            Some(python) => {
                let script = python_peers_script(dir.path())?;
                for lib in self.python_peers {
                    let command = PeerCommand::new(python)
                        .arg(script.display().to_string())
                        .arg("--lib")
                        .arg(*lib)
                        .arg("--url")
                        .arg(server.url.clone());
                    let output = command
                        .cycle(&format!("cycle-{lib}"), self.plan(ctx))
                        .map_err(|e| format!("{lib}: {e}"))?;
                    section.rows.push(Row::measured(
                        format!("{} {} (Python)", output.lib, output.version),
                        Kind::Peer,
                        &output.samples,
                    )?);
                    contenders.push(Contender {
                        label: format!("{lib} (Python)"),
                        kind: Kind::Peer,
                        command,
                    });
                }
            }
            None => section
                .notes
                .push("The Python peers were not run (no `--python`).".to_owned()),
        }
        drop(split);
        section.contention = contention::measure(
            &ctx.contention,
            "contend",
            Some(&rtt),
            &contenders,
            &mut section.notes,
        )?;
        drop(curator_classes);
        let mut section = section.finish();
        section.notes.extend(notes(&section));
        section
            .notes
            .push(client_cpu_note(&section, floor_cpu_us, distlock_cpu_us));
        section.notes.extend(self.behind_peers(&section));
        if let Some(us) = script_cost {
            section.notes.push(format!(
                "The server spent {us:.1} µs per `EVALSHA` (`INFO commandstats`, over the \
                 distlock cycles above): distlock's acquire and release scripts keep the FIFO \
                 queue, the fencing counter, the holder record and the expiry of each of the \
                 lock's keys in step, and that server time, twice per cycle, is most of what \
                 separates distlock from two bare round trips."
            ));
        }
        Ok(section)
    }
}

/// Compiles the Curator peer (shipped inside the binary) with javac in `dir` and returns its
/// classes (keep them while it runs) and the command that runs it against `url`.
fn curator_peer(dir: &std::path::Path, url: &str) -> Result<(tempfile::TempDir, PeerCommand)> {
    let source = dir.join("CuratorPeer.java");
    std::fs::write(&source, include_str!("../../java/CuratorPeer.java"))?;
    let (classes, classpath) = distlock_testkit::zookeeper::compile_curator_program(&source)?;
    // Debian packages Curator without an implementation version in its manifest.
    let version = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "libcurator-recipes-java"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "(version unknown)".to_owned());
    let command = PeerCommand::new("java")
        .arg("-cp")
        .arg(classpath)
        .arg("-XX:+UseSerialGC")
        .arg("CuratorPeer")
        .arg("--version")
        .arg(version)
        .arg("--url")
        .arg(url.to_owned());
    Ok((classes, command))
}

/// Writes the peer protocol's Python script (shipped inside the binary) into `dir` and returns
/// its path.
pub fn python_peers_script(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let script = dir.join("net_peers.py");
    std::fs::write(&script, include_str!("../../python/net_peers.py"))?;
    Ok(script)
}

impl NetworkBackend {
    /// The profile's cycles, a quarter of them where every write is a consensus round (a
    /// millisecond or more) and an eighth on a 3-node cluster (three fsyncs per write), so
    /// the section fits the run's time budget.
    fn plan(&self, ctx: &Context) -> Plan {
        let p = ctx.network_cycles;
        let divisor = match (self.backend, self.server == self.backend) {
            ("zookeeper" | "etcd", true) => 4,
            ("zookeeper" | "etcd", false) => 8,
            _ => 1,
        };
        Plan {
            warmup: p.warmup / divisor,
            iterations: p.iterations / divisor,
            batch: (p.batch / divisor).max(1),
        }
    }

    fn method(&self, ctx: &Context) -> String {
        let p = self.plan(ctx);
        let c = &ctx.contention;
        format!(
            "A private {} from the testkit on 127.0.0.1. **Uncontended cycle**: one \
             exclusive acquire + release per iteration, in one process on a Tokio \
             current-thread runtime, {} warm-up then {} timed iterations per subject, \
             interleaved in batches of {}. **Floor**: {}, with the client crate distlock \
             uses; the target is distlock ≤ {TARGET}× its p50. The Python peers' cycles are \
             timed inside their own process (`time.monotonic_ns()`), so their ratios include \
             the interpreter; the Rust peers' too, each in a `distlock-bench peer` process. \
             **Placement**: during the uncontended cycles the server runs on the machine's \
             last CPU and every client on the others (on a machine with two CPUs or more), so \
             each subject's round trips cross CPUs alike instead of sharing one by the \
             scheduler's chance; the contention runs use every CPU. **Contention**: N processes (N = {:?}) loop acquire → hold \
             ({:?} µs) → release on one lock for {:.1} s per run, waiting without bound; the \
             hand-off gap is divided by one round trip ({}) measured above.{}{}",
            match self.server == self.backend {
                true => format!("{} server", self.title),
                false => format!(
                    "{} (each node its own process, all on this machine; every \
                                  client is given all of them)",
                    self.title
                ),
            },
            p.warmup,
            p.iterations,
            p.batch,
            self.floor,
            c.workers,
            c.holds_us,
            c.duration.as_secs_f64(),
            self.round_trip,
            match self.unflushed_commits {
                None => String::new(),
                Some((settings, effect)) => format!(
                    " **Durability**: the testkit starts the server with `{}`: {effect}. Every \
                     figure here that commits (distlock's fencing token, the committed-write \
                     reference) is measured so; with the server's default settings each such \
                     commit also waits for a flush to disk.",
                    settings.join("`, `")
                ),
            },
            match self.handoff_reference {
                Some((_, what)) => format!(
                    " **{HANDOFF_REFERENCE}**: {what}. A hand-off is one request to the \
                     server and one answer from it, with no token or record, so its gap is the \
                     least a lock that waits in this server takes on this machine, and, as it \
                     waits in the server's own queue, its FIFO rate shows how often the order \
                     in which the server took the requests differs from the clients' own \
                     timestamps."
                ),
                None => String::new(),
            },
        )
    }
}

/// Microseconds per `EVALSHA` call on the Redis server at `url`, from `INFO commandstats`.
async fn redis_script_cost(url: &str) -> Result<Option<f64>> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await?;
    Ok(info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
        .and_then(|v| v.trim().parse().ok()))
}

impl NetworkBackend {
    /// Where a peer is faster than distlock (uncontended p50; 8-way hand-off gap p50 with no
    /// hold), which peers and what distlock does that they do not.
    fn behind_peers(&self, section: &Section) -> Vec<String> {
        let us = |ns: f64| ns / 1e3;
        let mut notes = Vec::new();
        let distlock = section.rows.iter().find(|r| r.kind == Kind::Distlock);
        if let Some(distlock) = distlock {
            let faster: Vec<String> = section
                .rows
                .iter()
                .filter(|r| r.kind == Kind::Peer && r.summary.p50_ns < distlock.summary.p50_ns)
                .map(|r| format!("{} ({:.0} µs)", r.label, us(r.summary.p50_ns as f64)))
                .collect();
            if !faster.is_empty() {
                notes.push(format!(
                    "Faster than distlock ({:.0} µs) uncontended at p50: {}. {}",
                    us(distlock.summary.p50_ns as f64),
                    faster.join(", "),
                    self.cycle_cost
                ));
            }
        }
        let gap_p50 =
            |r: &crate::contention::ContentionRow| r.handoff.as_ref().map(|h| h.p50_ns as f64);
        let at_8 = |r: &&crate::contention::ContentionRow| r.workers == 8 && r.hold_us == 0;
        let distlock_gap = section
            .contention
            .iter()
            .filter(at_8)
            .find(|r| r.kind == Kind::Distlock)
            .and_then(gap_p50);
        if let Some(distlock_gap) = distlock_gap {
            let shorter: Vec<String> = section
                .contention
                .iter()
                .filter(at_8)
                .filter(|r| r.kind == Kind::Peer)
                .filter_map(|r| gap_p50(r).map(|g| (r, g)))
                .filter(|(_, g)| *g < distlock_gap)
                .map(|(r, g)| format!("{} ({:.0} µs)", r.label, us(g)))
                .collect();
            if !shorter.is_empty() {
                notes.push(format!(
                    "With 8 contenders and no hold, a shorter hand-off gap p50 than distlock's \
                     ({:.0} µs): {}. {}",
                    us(distlock_gap),
                    shorter.join(", "),
                    self.handoff_cost
                ));
            }
        }
        notes
    }
}

/// distlock beside the raw hand-off at 8 contenders and no hold: its gap and FIFO rate, and
/// the CPU-bound share of the gap that is the machine's rather than distlock's.
fn handoff_reference_note(section: &Section) -> Option<String> {
    let at_8 = |kind: Kind| {
        section
            .contention
            .iter()
            .find(|r| r.kind == kind && r.workers == 8 && r.hold_us == 0)
    };
    let (distlock, raw) = (at_8(Kind::Distlock)?, at_8(Kind::Reference)?);
    let (gap, raw_gap) = (distlock.handoff_p50_ratio?, raw.handoff_p50_ratio?);
    let fifo = |r: &crate::contention::ContentionRow| {
        r.fifo_rate
            .map_or("–".to_owned(), |f| format!("{:.1}%", f * 100.0))
    };
    Some(format!(
        "With 8 contenders and no hold, the raw hand-off's gap p50 is {raw_gap:.2} round trips \
         and distlock's {gap:.2} ({:.2}× the raw one); FIFO rates {} (raw) and {} (distlock). \
         The raw hand-off waits in the server's own queue, so the FIFO order it misses is \
         lost before the queue, between a client's timestamp and the server taking its \
         request (on Redis, `scripts/trace-handoff` shows the server reading requests that \
         reached it together in another order than they were sent in).",
        gap / raw_gap,
        fifo(raw),
        fifo(distlock),
    ))
}

/// Splits distlock's mean cost above the floor into client CPU and the rest (the server's
/// work and the network): the profile behind this section's ratio.
fn client_cpu_note(section: &Section, floor_cpu_us: f64, distlock_cpu_us: f64) -> String {
    let mean_us = |kind: Kind| {
        section
            .rows
            .iter()
            .find(|r| r.kind == kind)
            .map_or(0.0, |r| r.summary.mean_ns / 1e3)
    };
    let above = mean_us(Kind::Distlock) - mean_us(Kind::Floor);
    let cpu_above = distlock_cpu_us - floor_cpu_us;
    let measured = format!(
        "Client CPU per cycle (this thread's CPU clock over the timed batches; the runtime is \
         current-thread, so the client libraries' tasks and socket system calls ran on it): \
         floor {floor_cpu_us:.1} µs, distlock {distlock_cpu_us:.1} µs."
    );
    if above <= 0.0 {
        return format!("{measured} At the mean distlock's cycle is not above the floor's.");
    }
    if cpu_above >= above {
        // The client CPU clock and the wall clock of the cycles are measured separately, so
        // the CPU difference can exceed the time difference: no split of the wait to report.
        return format!(
            "{measured} distlock's cycle is {above:.1} µs above the floor's at the mean, and its \
             client CPU {cpu_above:.1} µs above: the extra time is all client CPU, within \
             this run's noise."
        );
    }
    format!(
        "{measured} Of distlock's {above:.1} µs above the floor at the mean, {cpu_above:.1} µs \
         is CPU in this process; the other {:.1} µs is waiting for the server (its work and \
         the transfer).",
        above - cpu_above
    )
}

/// Findings from this section's figures.
fn notes(section: &Section) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(row) = section.rows.iter().find(|r| r.kind == Kind::Distlock)
        && let (Some(floor), Some(rtt)) = (row.ratios.first(), row.ratios.get(1))
        && let (Some(to_floor), Some(to_rtt)) = (floor.p50, rtt.p50)
    {
        notes.push(format!(
            "Uncontended, distlock takes {to_floor:.2}× the floor at p50, that is {to_rtt:.2} \
             round trips."
        ));
    }
    // Where a durable write is measured (the SQL backends), say how much of distlock's cost
    // above the floor it accounts for: distlock commits its fencing counter on every acquire.
    let us = |ns: u64| ns as f64 / 1000.0;
    let by_kind = |kind: Kind| section.rows.iter().find(|r| r.kind == kind);
    let floor_row = by_kind(Kind::Floor);
    let by_label = |label: &str| section.rows.iter().find(|r| r.label == label);
    let write_row = by_label(DURABLE);
    if let (Some(distlock), Some(floor), Some(write)) =
        (by_kind(Kind::Distlock), floor_row, write_row)
    {
        let above = us(distlock.summary.p50_ns.saturating_sub(floor.summary.p50_ns));
        notes.push(format!(
            "At p50 distlock's cycle is {above:.0} µs above the floor. Its acquire does what \
             the floor does not: it takes a fencing token that survives a restart and records \
             the holder that `inspect` reads. For scale, one committed single-row upsert \
             alone (what a token committed at every grant would cost) takes {:.0} µs at p50 and \
             {:.0} µs at p99 on this server as configured (reference row; the method says \
             whether commits are flushed to disk).",
            us(write.summary.p50_ns),
            us(write.summary.p99_ns),
        ));
    }
    let without_row = by_label(WITHOUT_HOLDER_ROW);
    if let (Some(distlock), Some(floor), Some(without)) =
        (by_kind(Kind::Distlock), floor_row, without_row)
        && let Some(to_floor) = without.ratios.first().and_then(|r| r.p50)
    {
        notes.push(format!(
            "Without the holder row (`distlock_holder_info=false`) the cycle takes {:.2}× the \
             floor at p50: the holder rows, which let `status` and `list` show each holder's \
             host, pid and description, cost {:.0} µs of the {:.0} µs above the floor.",
            to_floor,
            us(distlock
                .summary
                .p50_ns
                .saturating_sub(without.summary.p50_ns)),
            us(distlock.summary.p50_ns.saturating_sub(floor.summary.p50_ns)),
        ));
    }
    let distlock_gaps: Vec<(usize, u64, f64)> = section
        .contention
        .iter()
        .filter(|r| r.kind == Kind::Distlock)
        .filter_map(|r| r.handoff_p50_ratio.map(|g| (r.workers, r.hold_us, g)))
        .collect();
    if let Some(&(n, hold, gap)) = distlock_gaps
        .iter()
        .find(|(n, hold, _)| *n == 8 && *hold == 0)
    {
        notes.push(format!(
            "With {n} contenders (hold {hold} µs), distlock's hand-off gap p50 is {gap:.2} \
             round trips."
        ));
    }
    notes.extend(handoff_reference_note(section));
    let stalled: Vec<String> = section
        .contention
        .iter()
        .filter(|r| r.stalled > 0)
        .map(|r| format!("{} (N = {}, {} stuck)", r.label, r.workers, r.stalled))
        .collect();
    if !stalled.is_empty() {
        notes.push(format!(
            "Some workers were still waiting for a free lock 30 s after their run ended, and \
             were killed: {}. That is a lost wake-up in the library, which would hang a real \
             caller that waits without bound.",
            stalled.join(", ")
        ));
    }
    let overlaps: usize = section.contention.iter().map(|r| r.overlaps).sum();
    notes.push(if overlaps == 0 {
        "No run saw two clients hold the lock at once.".to_owned()
    } else {
        format!("**{overlaps} overlapping grants were seen**: see the overlaps column.")
    });
    notes
}
