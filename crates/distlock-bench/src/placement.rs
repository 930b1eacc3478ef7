//! Where the client and the server run during the uncontended cycles against a server.
//!
//! Left to the scheduler, a client and a server on one machine sometimes share a CPU and
//! sometimes not, and on a VM a round trip costs several times more when the wake-up crosses
//! CPUs (an inter-processor interrupt, often a halted virtual CPU). Which one a subject gets
//! decides its figure more than its own work does, and the floor and distlock can get
//! different ones in the same run. [`Split`] fixes the placement for every subject alike: the
//! server on the machine's last CPU, the client (this process, and the peer processes it
//! starts) on the others, as a server on another machine would be.

use std::collections::HashMap;
use std::io;

/// While alive, the processes started by this one so far (the servers) run on the last CPU
/// and this process's threads on the others; dropping it gives everyone the CPUs this process
/// had before.
pub struct Split {
    before: libc::cpu_set_t,
}

impl Split {
    /// Applies the split, or returns `None` when this process may run on fewer than two CPUs
    /// (nothing to split).
    pub fn apply() -> io::Result<Option<Split>> {
        let before = affinity()?;
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `before` is an initialised set and the index is below CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &before) })
            .collect();
        let Some((&server_cpu, client_cpus)) = cpus.split_last() else {
            return Ok(None);
        };
        if client_cpus.is_empty() {
            return Ok(None);
        }
        let server = set_of(&[server_cpu]);
        let client = set_of(client_cpus);
        for pid in descendants()? {
            set_threads(pid, &server)?;
        }
        set_threads(std::process::id(), &client)?;
        Ok(Some(Split { before }))
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        // Best effort: a server that exited meanwhile has nothing to restore.
        if let Ok(pids) = descendants() {
            for pid in pids {
                let _ = set_threads(pid, &self.before);
            }
        }
        let _ = set_threads(std::process::id(), &self.before);
    }
}

fn affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

fn set_of(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: as in `affinity`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` came from a set, so it is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Sets the affinity of every thread of `pid`. Threads and processes they start later inherit it.
fn set_threads(pid: u32, set: &libc::cpu_set_t) -> io::Result<()> {
    let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks,
        // The process exited.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for task in tasks {
        let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(set), set) };
        let error = io::Error::last_os_error();
        // ESRCH: the thread exited between the listing and the call.
        if rc != 0 && error.raw_os_error() != Some(libc::ESRCH) {
            return Err(error);
        }
    }
    Ok(())
}

/// Every live process descended from this one.
fn descendants() -> io::Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![std::process::id()];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_runs_on_the_server_cpu_and_is_given_back_its_cpus() {
        let before = affinity().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let child_affinity = || {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_owned()
        };
        let all = child_affinity();
        let split = Split::apply().unwrap();
        if let Some(split) = split {
            let mine = affinity().unwrap();
            // SAFETY: valid sets, indexes below CPU_SETSIZE.
            let last = (0..libc::CPU_SETSIZE as usize)
                .rfind(|&c| unsafe { libc::CPU_ISSET(c, &before) })
                .unwrap();
            assert_eq!(child_affinity(), last.to_string());
            assert!(!unsafe { libc::CPU_ISSET(last, &mine) });
            drop(split);
            assert_eq!(child_affinity(), all);
            assert!(unsafe { libc::CPU_EQUAL(&affinity().unwrap(), &before) });
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
