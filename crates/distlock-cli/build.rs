//! Links the `distlock` binary with packed relative relocations (`-z pack-relative-relocs`,
//! DT_RELR) where the toolchain supports them.
//!
//! Start-up cost matters for `distlock run x -- true`, which should cost about what `flock(1)`
//! does. A position-independent Rust binary carries thousands of relative relocations; as
//! RELA entries (24 bytes each) the dynamic loader pages in over 100 KiB just to read them,
//! while RELR packs them into a couple of KiB. Needs GNU ld ≥ 2.38 (or lld ≥ 15) and, at run
//! time, glibc ≥ 2.36. The linker is probed once; without support nothing changes.
//! `DISTLOCK_NO_RELR=1` turns it off.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DISTLOCK_NO_RELR");
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    if env::var_os("DISTLOCK_NO_RELR").is_some()
        || !target.ends_with("-linux-gnu")
        || target != host
    {
        return;
    }
    if linker_supports_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Links a trivial C program with the flag; supported when that succeeds without a warning
/// (GNU ld only warns about `-z` keywords it does not know).
fn linker_supports_relr() -> bool {
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let source = out_dir.join("relr_probe.c");
    let binary = out_dir.join("relr_probe");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let linker = env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(linker)
        .arg("-pie")
        .arg("-fPIE")
        .arg("-Wl,-z,pack-relative-relocs")
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output();
    let supported = match output {
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
            output.status.success() && !stderr.contains("warning") && !stderr.contains("ignored")
        }
        Err(_) => false,
    };
    // The probe must also run: the C library has to understand DT_RELR.
    let runs = supported
        && Command::new(&binary)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&binary);
    runs
}
