//! The controller: starts the servers, the oracle, the observer and the clients as separate
//! processes, applies the faults on a seeded schedule, then collects the logs and runs the
//! checkers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use distlock_testkit::Process;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::backends::{BackendSpec, TortureBackend};
use crate::checkers::{self, Checks};
use crate::clock::now_ns;
use crate::events::{ClientEvent, FaultEvent, ObserverSample, read_jsonl};
use crate::faults::Fault;
use crate::oracle::{OracleConn, OracleStats, Request};
use crate::proxy::Proxy;

/// The lock every client of a run contends for.
pub const LOCK: &str = "torture";

/// One backend × fault run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The backend.
    pub backend: &'static BackendSpec,
    /// The fault.
    pub fault: Fault,
    /// How long clients keep starting iterations.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// The seed for work durations and the fault schedule.
    pub seed: u64,
    /// Lease TTL.
    pub ttl: Duration,
    /// Work per critical section, ms (min, max).
    pub work_ms: (u64, u64),
    /// Mean time between faults.
    pub fault_every: Duration,
}

impl Scenario {
    /// The defaults for `backend` × `fault`: TTL 2 s, 3 clients, work 20–300 ms; the Redlock
    /// clock-jump control gets longer work so the second grant lands inside the first's, and
    /// partitions get work longer than the TTL so the cut-off holder has to renew.
    pub fn new(backend: &'static BackendSpec, fault: Fault, duration: Duration, seed: u64) -> Self {
        let work_ms = match fault {
            // Longer than the renewal interval (ttl/3), so the first holder still believes
            // when the second wins its majority.
            Fault::ClockJump => (3000, 4500),
            // Holds longer than the TTL, so a partitioned holder must renew and lose.
            Fault::Partition => (1000, 3000),
            _ => (20, 300),
        };
        let mut scenario = Scenario {
            backend,
            fault,
            duration,
            clients: 3,
            seed,
            ttl: Duration::from_secs(2),
            work_ms,
            fault_every: Duration::from_secs(4),
        };
        if fault == Fault::ClockJump {
            // The holder's first renewal (ttl/3) finds the majority gone and reports Lost; a
            // waiter re-checks at least every second: a 9 s TTL leaves it 3 s to win its
            // majority first.
            scenario.ttl = Duration::from_secs(9);
            scenario.fault_every = Duration::from_secs(3);
        }
        scenario
    }

    /// Whether this run is a positive control, which must show a violation.
    pub fn positive_control(&self) -> Option<&'static str> {
        match (self.backend.label, self.fault) {
            ("redis", Fault::Sigstop) => Some("unfenced lost update, fenced rejection"),
            ("redlock", Fault::ClockJump) => Some("overlap"),
            _ => None,
        }
    }
}

/// What one run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Backend label.
    pub backend: String,
    /// Fault label.
    pub fault: String,
    /// Seed.
    pub seed: u64,
    /// Client duration, s.
    pub duration_s: f64,
    /// Initial clients.
    pub clients: usize,
    /// TTL, ms.
    pub ttl_ms: u64,
    /// The longest work in a critical section, ms.
    #[serde(default)]
    pub work_max_ms: u64,
    /// Faults actually applied.
    pub faults_applied: usize,
    /// The oracle's counts.
    pub oracle: OracleStats,
    /// The checkers' findings.
    pub checks: Checks,
    /// `Some(what)` when this run is a positive control.
    pub positive_control: Option<String>,
    /// Problems of the harness itself (a client that would not exit, ...).
    pub harness_errors: Vec<String>,
}

struct ClientProc {
    name: String,
    process: Process,
    proxies: Vec<Proxy>,
}

/// A run in progress; faults act on it.
pub struct Run {
    /// The scenario.
    pub scenario: Scenario,
    /// The backend's servers.
    pub backend: Box<dyn TortureBackend>,
    runtime: tokio::runtime::Runtime,
    locks: Option<distlock::Locks>,
    clients: Vec<ClientProc>,
    oracle_addr: String,
    dir: PathBuf,
    exe: PathBuf,
    deadline: Instant,
    spawned: usize,
    errors: Vec<String>,
}

impl Run {
    /// The live client process named `name`.
    pub fn client(&self, name: &str) -> Option<&Process> {
        self.clients
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.process)
    }

    /// The client holding the lock and its token, from `inspect()` (polled up to 2 s).
    pub fn current_holder(&mut self) -> Option<(String, u64)> {
        let stop = Instant::now() + Duration::from_secs(2);
        while Instant::now() < stop {
            if self.locks.is_none() {
                let url = self.backend.direct_url();
                self.locks = self.runtime.block_on(distlock::connect(&url)).ok();
            }
            if let Some(locks) = &self.locks {
                let polled = self.runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(1), locks.inspect(LOCK)).await
                });
                if let Ok(Ok(info)) = polled {
                    for holder in &info.holders {
                        if let Some(c) = self
                            .clients
                            .iter()
                            .find(|c| c.process.pid() == holder.owner.pid)
                        {
                            return Some((c.name.clone(), holder.token.get()));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last event client `name` logged (`granted`, `commit`, ...).
    pub fn last_event(&self, name: &str) -> Option<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(self.dir.join(format!("{name}.jsonl"))).ok()?;
        let len = file.metadata().ok()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(1024))).ok()?;
        let mut tail = String::new();
        file.read_to_string(&mut tail).ok()?;
        let line = tail.lines().last()?;
        let event: ClientEvent = serde_json::from_str(line).ok()?;
        Some(event.ev)
    }

    /// The current holder, waiting (up to 3 s) until it is inside its critical section: it
    /// has read the resource and has not written yet.
    pub fn holder_mid_work(&mut self) -> Option<(String, u64)> {
        let stop = Instant::now() + Duration::from_secs(3);
        while Instant::now() < stop {
            let (client, token) = self.current_holder()?;
            if self.last_event(&client).as_deref() == Some("read") {
                return Some((client, token));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.current_holder()
    }

    /// SIGSTOPs the current holder between its read and its write of the resource (up to
    /// `within`), and returns it with its token. The check is made again once the process is
    /// stopped, when its log can no longer move: a holder that wrote meanwhile is continued
    /// and the next one is tried, so the stop always lands inside the read–write window.
    pub fn pause_holder_mid_work(&mut self, within: Duration) -> Option<(String, u64)> {
        let stop = Instant::now() + within;
        while Instant::now() < stop {
            let Some((client, token)) = self.holder_mid_work() else {
                continue;
            };
            let process = self.client(&client)?;
            if process.pause().is_err() {
                return None;
            }
            if self.last_event(&client).as_deref() == Some("read") {
                return Some((client, token));
            }
            let _ = self.client(&client)?.resume();
        }
        None
    }

    /// SIGKILLs a client and forgets it.
    pub fn kill_client(&mut self, name: &str) {
        if let Some(i) = self.clients.iter().position(|c| c.name == name) {
            let mut c = self.clients.remove(i);
            c.process.kill();
        }
    }

    /// Starts (`true`) or heals (`false`) a partition of client `name` from its servers.
    pub fn partition(&self, name: &str, partitioned: bool) {
        if let Some(c) = self.clients.iter().find(|c| c.name == name) {
            for proxy in &c.proxies {
                proxy.set_partitioned(partitioned);
            }
        }
    }

    /// Starts a new client for the rest of the run (after a SIGKILL).
    pub fn spawn_replacement(&mut self) {
        if Instant::now() + Duration::from_millis(500) < self.deadline {
            self.spawn_client();
        }
    }

    fn spawn_client(&mut self) {
        let index = self.spawned;
        self.spawned += 1;
        let name = format!("c{index}");
        let mut proxies = Vec::new();
        let url = if self.scenario.fault.needs_proxy() {
            for upstream in self.backend.upstreams() {
                proxies.push(Proxy::start(self.runtime.handle(), upstream).expect("proxy"));
            }
            let ports: Vec<u16> = proxies.iter().map(Proxy::port).collect();
            self.backend.url_via(&ports)
        } else {
            self.backend.direct_url()
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        let s = &self.scenario;
        let mut command = Command::new(&self.exe);
        command
            .arg("client")
            .args(["--url", &url, "--name", &name, "--lock", LOCK])
            .args(["--oracle", &self.oracle_addr])
            .arg("--log")
            .arg(self.dir.join(format!("{name}.jsonl")))
            .args(["--seed", &(s.seed * 1000 + index as u64).to_string()])
            .args(["--ttl-ms", &s.ttl.as_millis().to_string()])
            .args(["--work-min-ms", &s.work_ms.0.to_string()])
            .args(["--work-max-ms", &s.work_ms.1.to_string()])
            .args(["--duration-ms", &left.as_millis().to_string()]);
        let mut process = Process::spawn(&name, command).expect("client starts");
        process.wait_for_line("ready", Duration::from_secs(20));
        self.clients.push(ClientProc {
            name,
            process,
            proxies,
        });
    }
}

/// Runs one scenario, writing its logs and `result.json` under `out`.
pub fn run(scenario: Scenario, out: &Path) -> ScenarioResult {
    let out = std::path::absolute(out).expect("absolute output directory");
    let dir = out.join(format!(
        "{}-{}",
        scenario.backend.label,
        scenario.fault.label()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("run directory");
    let exe = std::env::current_exe().expect("own executable");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let backend = (scenario.backend.start)(&dir);
    let lifetime_ms = (scenario.duration + Duration::from_secs(120))
        .as_millis()
        .to_string();
    let mut oracle = Process::spawn(
        "oracle",
        command(
            &exe,
            &[
                "oracle",
                "--listen",
                "127.0.0.1:0",
                "--lifetime-ms",
                &lifetime_ms,
            ],
        ),
    )
    .expect("oracle starts");
    let oracle_addr = oracle.wait_for_line("listening ", Duration::from_secs(10));
    let observer_log = dir.join("observer.jsonl");
    let mut observer_cmd = command(
        &exe,
        &["observe", "--url", &backend.direct_url(), "--lock", LOCK],
    );
    observer_cmd
        .arg("--log")
        .arg(&observer_log)
        .args(["--duration-ms", &lifetime_ms]);
    let mut observer = Process::spawn("observer", observer_cmd).expect("observer starts");
    observer.wait_for_line("ready", Duration::from_secs(10));

    let t_start = now_ns();
    let mut run = Run {
        deadline: Instant::now() + scenario.duration,
        scenario,
        backend,
        runtime,
        locks: None,
        clients: Vec::new(),
        oracle_addr,
        dir: dir.clone(),
        exe,
        spawned: 0,
        errors: Vec::new(),
    };
    for _ in 0..run.scenario.clients {
        run.spawn_client();
    }

    let mut rng = StdRng::seed_from_u64(run.scenario.seed);
    let mut faults: Vec<FaultEvent> = Vec::new();
    if run.scenario.fault != Fault::None {
        // Leave room at the end so the last fault's consequences land inside the run (every
        // consequence the checkers look for comes within 3 s: expiry, a renewal, a grant).
        let quiet_tail = run.scenario.ttl.min(Duration::from_secs(3)) + Duration::from_millis(1500);
        let mut first = true;
        loop {
            let every = run.scenario.fault_every.as_millis() as u64;
            // The first fault comes early, so even a short smoke run applies one (but after the
            // first hand-overs, so a fault that stalls the lock leaves some work done).
            let wait = if std::mem::take(&mut first) {
                Duration::from_millis(rng.random_range(800..=1500))
            } else {
                Duration::from_millis(rng.random_range(every / 4..=every * 5 / 4))
            };
            if Instant::now() + wait + quiet_tail >= run.deadline {
                break;
            }
            std::thread::sleep(wait);
            if let Some(event) = run.scenario.fault.apply(&mut run, &mut rng) {
                faults.push(event);
            }
        }
    }

    // Clients stop by themselves after their duration; bound the wait all the same.
    let bound = run.deadline + run.scenario.ttl * 3 + Duration::from_secs(15);
    for c in &mut run.clients {
        let left = bound.saturating_duration_since(Instant::now());
        if c.process.wait_exit(left).is_none() {
            run.errors.push(format!("{} did not exit in time", c.name));
            c.process.kill();
        }
    }
    let t_end = now_ns();
    let oracle_stats = run
        .runtime
        .block_on(async {
            let mut conn = OracleConn::connect(&run.oracle_addr).await?;
            conn.call::<OracleStats>(&Request::Stats).await
        })
        .unwrap_or_else(|e| {
            run.errors.push(format!("oracle stats: {e}"));
            OracleStats::default()
        });
    observer.kill();
    oracle.kill();

    let mut events: Vec<ClientEvent> = Vec::new();
    for i in 0..run.spawned {
        events.extend(read_jsonl(&dir.join(format!("c{i}.jsonl"))));
    }
    let samples: Vec<ObserverSample> = read_jsonl(&observer_log);
    write_jsonl(&dir.join("faults.jsonl"), &faults);
    let checks = checkers::check(&checkers::Input {
        events: &events,
        samples: &samples,
        faults: &faults,
        ttl: run.scenario.ttl,
        t_start,
        t_end,
    });
    let s = &run.scenario;
    let result = ScenarioResult {
        backend: s.backend.label.to_owned(),
        fault: s.fault.label().to_owned(),
        seed: s.seed,
        duration_s: s.duration.as_secs_f64(),
        clients: s.clients,
        ttl_ms: s.ttl.as_millis() as u64,
        work_max_ms: s.work_ms.1,
        faults_applied: faults.len(),
        oracle: oracle_stats,
        checks,
        positive_control: s.positive_control().map(str::to_owned),
        harness_errors: std::mem::take(&mut run.errors),
    };
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(&result).expect("serialize"),
    )
    .expect("write result");
    result
}

fn command(exe: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(exe);
    c.args(args);
    c
}

fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("serialize") + "\n")
        .collect();
    let _ = std::fs::write(path, text);
}
