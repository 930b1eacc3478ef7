//! Process start-up without Rust's `main` prologue.
//!
//! `distlock run x -- true` has to cost about what `flock(1)` costs, and Rust's standard
//! prologue spends a noticeable part of that budget: it reads `/proc/self/maps` to locate the
//! main thread's stack guard for its stack-overflow handler. distlock therefore defines the C
//! `main` itself (`#![no_main]`) and does here the parts of the prologue it relies on:
//!
//! - file descriptors 0, 1 and 2 are open (on `/dev/null` if they were closed), so that no lock
//!   file can land on them and be written to by a stray `println!`;
//! - SIGPIPE is ignored, so that writing to a closed pipe is an error, not death (the command
//!   gets SIGPIPE back at its default, see [`crate::spawn`]).
//!
//! What is lost: a stack overflow is reported as a plain SIGSEGV instead of a message, and a
//! panic is caught by [`run`] and exits 70 (EX_SOFTWARE).

use std::panic::AssertUnwindSafe;

/// Prepares the process, runs `body` and exits with its code, flushing stdout first.
pub fn run(body: impl FnOnce() -> u8) -> ! {
    init();
    let code = std::panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(crate::exit::SOFTWARE);
    std::process::exit(i32::from(code))
}

fn init() {
    // SAFETY: poll, fcntl, open and signal on the standard descriptors, as std's own start-up
    // does; nothing else runs yet.
    unsafe {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        let polled = loop {
            if libc::poll(fds.as_mut_ptr(), 3, 0) != -1 {
                break true;
            }
            if *libc::__errno_location() != libc::EINTR {
                break false;
            }
        };
        for pfd in &fds {
            let closed = if polled {
                pfd.revents & libc::POLLNVAL != 0
            } else {
                libc::fcntl(pfd.fd, libc::F_GETFD) == -1 && *libc::__errno_location() == libc::EBADF
            };
            // The lowest free descriptor is this one: lower ones are open by now.
            if closed && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1 {
                libc::abort();
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
