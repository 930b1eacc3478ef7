//! The blocking API: no async runtime in the caller.
//!
//! `cargo run -p distlock --example blocking`

fn main() -> distlock::Result<()> {
    let locks = distlock::blocking::connect(&distlock::default_url())?;
    let lease = locks.mutex("examples/blocking").no_wait().acquire()?;
    println!("token {}", lease.token());
    let info = locks.inspect("examples/blocking")?;
    println!("held by pid {}", info.holders[0].owner.pid);
    lease.release()
}
