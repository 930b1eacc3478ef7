//! Starting a process the way `posix_spawn` does — `clone(CLONE_VM | CLONE_VFORK)` — plus the
//! two things `posix_spawn` cannot do: `PR_SET_PDEATHSIG` and handing over the terminal.
//!
//! `std::process::Command` with a `pre_exec` hook has to `fork`, copying distlock's page tables
//! and taking copy-on-write faults on both sides; that alone was a sizeable part of the cost of
//! `distlock run x -- true`. With `CLONE_VM | CLONE_VFORK` the child borrows the parent's memory
//! until it calls `execve`, and the calling thread waits meanwhile. The child therefore runs
//! only raw system calls on data prepared beforehand: no allocation, no locks, no unwinding.
//!
//! Signals: every signal is blocked in the calling thread around `clone`, so that no handler of
//! distlock's can run in the child (it would run on distlock's memory). The child resets every
//! caught signal to its default action, and SIGPIPE (which Rust's runtime ignores) too, then
//! restores the original signal mask just before `execve`. Signals that were ignored when
//! distlock started stay ignored, as with `std::process::Command`.
//!
//! Job control: a child stopped before `execve` (Ctrl-Z at the moment the command starts)
//! would leave distlock's thread suspended in `clone` for good, and the shell would never see
//! the job stop. So the child never stops before `execve`: a stop meant for distlock's group,
//! pending when the child leaves it, is discarded (distlock stops for it itself); a stop sent
//! to the command's group after that is noted, and the parent sends it again once the command
//! runs.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicI32, Ordering};

/// What to execute, prepared in the parent (the child cannot allocate).
pub struct Prepared {
    /// Paths to try in order, as `execvp` would (`PATH` search unless the name has a `/`).
    candidates: Vec<CString>,
    /// Keeps the strings `argv` points to alive.
    _args: Vec<CString>,
    /// `argv`, null-terminated.
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh`, a slot for the script path, then `argv[1..]`, null-terminated: what `execvp`
    /// runs for a file without a `#!` line (ENOEXEC).
    sh_argv: Vec<*const libc::c_char>,
    /// Keeps the strings `envp` points to alive.
    _env: Vec<CString>,
    /// `envp`, null-terminated.
    envp: Vec<*const libc::c_char>,
    /// distlock's pid: the child exits at once if its parent is already someone else.
    parent: libc::pid_t,
    /// A terminal to make the child's process group the foreground group of.
    tty_fd: Option<i32>,
    /// The signal mask to restore in the child before `execve`.
    mask: libc::sigset_t,
    /// errno of the failed `execve` (or setup step), written by the child.
    error: AtomicI32,
}

const SH: &CStr0 = c"/bin/sh";
type CStr0 = std::ffi::CStr;

/// The exit code of a child whose setup failed or whose parent died before it could arrange to
/// die with it. Never observed by distlock as a command's status: setup failures are reported
/// through `error`, and an orphan's status goes to whoever adopts it.
const SETUP_FAILED: i32 = 127;

/// The signals that stop a process by default, other than SIGSTOP (which cannot be caught).
const JOB_CONTROL_STOPS: [i32; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// The stop signal that reached the child's own group before it exec'd, or 0. Written by the
/// child's handler (the child runs in our memory), taken by the parent after the exec.
static STOP_BEFORE_EXEC: AtomicI32 = AtomicI32::new(0);

/// The child's handler for [`JOB_CONTROL_STOPS`]; `execve` resets it to the default action.
extern "C" fn note_stop_before_exec(signo: libc::c_int) {
    STOP_BEFORE_EXEC.store(signo, Ordering::SeqCst);
}

impl Prepared {
    /// Prepares `argv` with the current environment plus `extra` (which replaces variables of
    /// the same name).
    pub fn new(
        argv: &[OsString],
        extra: &[(&str, String)],
        tty_fd: Option<i32>,
    ) -> io::Result<Self> {
        let nul = |text: &OsStr| {
            CString::new(text.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument or environment variable contains a NUL byte",
                )
            })
        };
        let program = argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command given"))?;
        let args = argv
            .iter()
            .map(|a| nul(a))
            .collect::<io::Result<Vec<_>>>()?;
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            if extra.iter().any(|(k, _)| OsStr::new(k) == key) {
                continue;
            }
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            env.push(nul(OsStr::from_bytes(&pair))?);
        }
        for (key, value) in extra {
            env.push(nul(OsStr::new(&format!("{key}={value}")))?);
        }
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut sh_argv = vec![SH.as_ptr(), std::ptr::null()];
        sh_argv.extend(argv.iter().skip(1).copied()); // argv[1..] and the final null
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(Prepared {
            candidates: candidates(program)?,
            _args: args,
            argv,
            sh_argv,
            _env: env,
            envp,
            parent: std::process::id() as libc::pid_t,
            tty_fd,
            // SAFETY: an all-zero sigset_t is a valid (empty) set; replaced in `spawn`.
            mask: unsafe { std::mem::zeroed() },
            error: AtomicI32::new(0),
        })
    }

    /// Starts the child in a new process group with `PR_SET_PDEATHSIG = SIGKILL`, and returns
    /// its pid once it has called `execve` successfully. Must be called from the thread that
    /// lives as long as distlock (the death signal fires when the *thread* that forked exits).
    ///
    /// Errors are those of `execvp` (`NotFound`, `PermissionDenied`, ...) or of `clone`.
    pub fn spawn(mut self) -> io::Result<libc::pid_t> {
        // The child's stack: small, it only makes system calls.
        let mut stack = vec![0u8; 64 * 1024];
        // SAFETY: the top of the allocation, aligned down to 16 bytes as the ABI wants.
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
        let top = (top as usize & !15) as *mut libc::c_void;
        // SAFETY: sigset operations on local values; pthread_sigmask affects this thread.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut self.mask);
        }
        STOP_BEFORE_EXEC.store(0, Ordering::SeqCst);
        let this: *mut Prepared = &mut self;
        // SAFETY: CLONE_VM | CLONE_VFORK: the child runs `child` on `stack` in our memory and
        // this thread is suspended until it execs or exits, so `self` and `stack` outlive its
        // use of them. `child` only makes async-signal-safe system calls.
        let pid = unsafe {
            libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                this.cast(),
            )
        };
        let clone_error = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.mask, std::ptr::null_mut());
        }
        drop(stack);
        if pid < 0 {
            return Err(clone_error);
        }
        match self.error.load(Ordering::SeqCst) {
            0 => {
                let stop = STOP_BEFORE_EXEC.swap(0, Ordering::SeqCst);
                if stop != 0 {
                    // SAFETY: kill(2) on the group of the child we just started.
                    unsafe {
                        libc::kill(-pid, stop);
                    }
                }
                Ok(pid)
            }
            errno => {
                // The child has exited; collect it.
                let mut status = 0;
                // SAFETY: waitpid on our own child.
                unsafe {
                    while libc::waitpid(pid, &mut status, 0) < 0
                        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                    {
                    }
                }
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// The child: set up, then `execve` each candidate in turn as `execvp` does.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` the suspended parent passed; see `Prepared::spawn`.
    let p = unsafe { &mut *arg.cast::<Prepared>() };
    // SAFETY: only async-signal-safe system calls on prepared data follow.
    unsafe {
        let fail = |p: &Prepared| -> ! {
            p.error.store(*libc::__errno_location(), Ordering::SeqCst);
            libc::_exit(SETUP_FAILED)
        };
        // Default actions for every caught signal, and for SIGPIPE.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signo in 1..=libc::SIGRTMAX() {
            if signo == libc::SIGKILL || signo == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signo, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if caught || signo == libc::SIGPIPE {
                libc::sigaction(signo, &default, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(p);
        }
        // See the module documentation, "Job control". Setting SIG_IGN discards a pending
        // signal; a stop that distlock was started with ignored stays ignored.
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        let mut note: libc::sigaction = std::mem::zeroed();
        note.sa_sigaction = note_stop_before_exec as extern "C" fn(libc::c_int) as usize;
        note.sa_flags = libc::SA_RESTART;
        for signo in JOB_CONTROL_STOPS {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signo, &ignore, &mut old);
            if old.sa_sigaction == libc::SIG_DFL {
                libc::sigaction(signo, &note, std::ptr::null_mut());
            }
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(p);
        }
        // distlock may have died before prctl: then nobody would kill us. (Its thread is
        // suspended in clone, but SIGKILL still ends it.)
        if libc::getppid() != p.parent {
            libc::_exit(SETUP_FAILED);
        }
        if let Some(fd) = p.tty_fd {
            // Every signal is blocked, SIGTTOU included, so our new (background) group may
            // take the terminal. Done before exec, so the command never reads from a terminal
            // it does not own (which would stop it with SIGTTIN).
            libc::tcsetpgrp(fd, libc::getpid());
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &p.mask, std::ptr::null_mut());
        let mut denied = false;
        for path in &p.candidates {
            libc::execve(path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            match *libc::__errno_location() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::ENOEXEC => {
                    // A script without `#!`: run it with /bin/sh, as execvp does.
                    p.sh_argv[1] = path.as_ptr();
                    libc::execve(SH.as_ptr(), p.sh_argv.as_ptr(), p.envp.as_ptr());
                    fail(p);
                }
                _ => fail(p),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(p)
    }
}

/// The paths `execvp` would try for `program`.
fn candidates(program: &OsStr) -> io::Result<Vec<CString>> {
    let bytes = program.as_bytes();
    let nul = |path: Vec<u8>| {
        CString::new(path)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path contains a NUL byte"))
    };
    if bytes.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if bytes.contains(&b'/') {
        return Ok(vec![nul(bytes.to_vec())?]);
    }
    let path = std::env::var_os("PATH");
    let path = path
        .as_deref()
        .map_or(&b"/bin:/usr/bin"[..], OsStrExt::as_bytes);
    path.split(|&b| b == b':')
        .map(|dir| {
            // An empty element is the current directory.
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(bytes);
            nul(full)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_path_like_execvp() {
        let abs = candidates(OsStr::new("/bin/true")).unwrap();
        assert_eq!(abs, vec![CString::new("/bin/true").unwrap()]);
        let rel = candidates(OsStr::new("./x")).unwrap();
        assert_eq!(rel, vec![CString::new("./x").unwrap()]);
        assert_eq!(
            candidates(OsStr::new("")).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        let searched = candidates(OsStr::new("true")).unwrap();
        assert!(searched.iter().all(|c| c.as_bytes().ends_with(b"/true")));
    }
}
