//! What machine a run happened on, read from the system at run time.

use std::process::Command;

use serde::Serialize;

/// The machine, as `uname -srm`, `nproc`, `/proc/cpuinfo` and `/proc/meminfo` describe it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `uname -srm`.
    pub uname: String,
    /// `nproc`: CPUs available to this process.
    pub nproc: usize,
    /// The first `model name` in /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal` from /proc/meminfo, bytes.
    pub memory_bytes: Option<u64>,
    /// The file system type and mount point of the directory the locks live in.
    pub lock_fs: Option<String>,
    /// `rustc --version` of the toolchain on PATH.
    pub rustc: Option<String>,
    /// The 1, 5 and 15 minute load averages from /proc/loadavg when the run started (after
    /// `scripts/bench`'s build, which raises them).
    pub load_average: Option<String>,
}

impl Machine {
    /// Reads the machine; `lock_dir` is where the benchmarks put their lock files.
    pub fn detect(lock_dir: &std::path::Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            uname: run("uname", &["-srm"]).unwrap_or_else(|| std::env::consts::OS.to_owned()),
            nproc: run("nproc", &[])
                .and_then(|n| n.parse().ok())
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(0),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".to_owned()),
            memory_bytes: field(&meminfo, "MemTotal").and_then(|v| parse_kib(&v)),
            lock_fs: lock_dir
                .to_str()
                .and_then(|dir| run("df", &["--output=fstype,target", dir]))
                .and_then(|out| {
                    out.lines()
                        .nth(1)
                        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" on "))
                }),
            rustc: run("rustc", &["--version"]),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        }
    }

    /// One line for the report, such as `Linux 6.1 x86_64, 2 CPUs (AMD EPYC), 23.4 GiB`.
    pub fn one_line(&self) -> String {
        let memory = self
            .memory_bytes
            .map(|b| format!(", {:.1} GiB", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_default();
        format!(
            "{}, {} CPUs ({}){memory}",
            self.uname, self.nproc, self.cpu_model
        )
    }
}

/// Runs `program args` and returns its trimmed standard output if it succeeded.
pub fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The value of the first `key : value` line in a /proc file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn parse_kib(value: &str) -> Option<u64> {
    let kib: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// A reading of the machine's CPU time and of this process's own (children included), to tell
/// afterwards how much CPU other processes took during a run.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    busy_ticks: u64,
    total_ticks: u64,
    own_s: f64,
}

impl CpuClock {
    /// Reads /proc/stat and `getrusage`; `None` where they cannot be read.
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy_ticks, total_ticks) = cpu_ticks(stat.lines().next()?)?;
        Some(CpuClock {
            busy_ticks,
            total_ticks,
            own_s: rusage_s(libc::RUSAGE_SELF) + rusage_s(libc::RUSAGE_CHILDREN),
        })
    }

    /// The share (0 to 1) of all CPUs' time since `self` that processes other than this one
    /// and its children were busy.
    pub fn others_share_since(&self, later: &CpuClock) -> Option<f64> {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if hz <= 0 || later.total_ticks <= self.total_ticks {
            return None;
        }
        let hz = hz as f64;
        let busy = later.busy_ticks.saturating_sub(self.busy_ticks) as f64 / hz;
        let total = (later.total_ticks - self.total_ticks) as f64 / hz;
        let own = later.own_s - self.own_s;
        Some(((busy - own) / total).clamp(0.0, 1.0))
    }
}

/// (busy, total) ticks from the aggregate `cpu` line of /proc/stat.
fn cpu_ticks(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some((busy, busy + get(3) + get(4)))
}

fn rusage_s(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is valid for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is a valid, writable rusage.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let text = "processor\t: 0\nmodel name\t: Some CPU @ 3GHz\nMemTotal:       24576000 kB\n";
        assert_eq!(
            field(text, "model name").as_deref(),
            Some("Some CPU @ 3GHz")
        );
        let mem = field(text, "MemTotal").unwrap();
        assert_eq!(parse_kib(&mem), Some(24576000 * 1024));
        assert_eq!(field(text, "missing"), None);
    }

    #[test]
    fn parses_cpu_ticks() {
        let line = "cpu  100 5 50 1000 20 3 2 10 7 0";
        assert_eq!(cpu_ticks(line), Some((170, 1190)));
        assert_eq!(cpu_ticks("cpu0 1 2 3 4"), None);
        let clock = CpuClock::now().unwrap();
        assert!(clock.total_ticks >= clock.busy_ticks);
    }
}
