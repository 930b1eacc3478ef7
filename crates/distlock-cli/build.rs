//! Links the `distlock` binary as a position-dependent executable (`-no-pie`) on Linux.
//!
//! Start-up cost matters for `distlock run x -- true`, which should cost about what `flock(1)`
//! does. A position-independent Rust binary holds about half a MiB of pointers (vtables,
//! tables of `&str`) that the dynamic loader has to relocate at every start, and each page it
//! writes is a copy-on-write fault: about half the page faults of `distlock --version`
//! (`perf stat`), and most of what its start-up costs above `flock(1)`'s (`distlock-bench
//! --scenarios cli`). Linked at a fixed address, those pointers are final in the file and
//! their pages are only read when used.
//!
//! What it costs: the executable's own code and data are not placed at a random address
//! (ASLR still moves the shared libraries, the heap and the stack). `DISTLOCK_PIE=1` builds a
//! position-independent binary instead, with packed relative relocations (`-z
//! pack-relative-relocs`, DT_RELR: needs GNU ld ≥ 2.38 or lld ≥ 15, and glibc ≥ 2.36 at run
//! time) where the toolchain supports them. Each flag is used only when a trivial C program
//! links with it and runs.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DISTLOCK_PIE");
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    if !target.ends_with("-linux-gnu") || target != host {
        return;
    }
    // The flag for rustc's link, and how the probe links with it (rustc links a PIE by
    // default).
    let (flag, probe): (&str, &[&str]) = if env::var_os("DISTLOCK_PIE").is_some() {
        (RELR, &["-pie", "-fPIE", RELR])
    } else {
        ("-no-pie", &["-no-pie"])
    };
    if links_and_runs(probe) {
        println!("cargo:rustc-link-arg-bins={flag}");
        if flag == "-no-pie" {
            // Tells the tests to check that the built binary is position-dependent.
            println!("cargo:rustc-env=DISTLOCK_LINKED_NO_PIE=1");
        }
    }
}

/// Packed relative relocations.
const RELR: &str = "-Wl,-z,pack-relative-relocs";

/// Whether a trivial C program links with `flags` without a warning (GNU ld only warns about
/// `-z` keywords it does not know) and then runs (the C library has to understand what the
/// flags produce).
fn links_and_runs(flags: &[&str]) -> bool {
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let source = out_dir.join("link_probe.c");
    let binary = out_dir.join("link_probe");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let linker = env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(linker)
        .args(flags)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output();
    let linked = match output {
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
            output.status.success() && !stderr.contains("warning") && !stderr.contains("ignored")
        }
        Err(_) => false,
    };
    let runs = linked
        && Command::new(&binary)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&binary);
    runs
}
