//! Take a lock, watch for its loss while working, release it.
//!
//! `cargo run -p distlock --example mutex -- [URL]` (default: the file backend's directory).

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> distlock::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(distlock::default_url);
    let locks = distlock::connect(&url).await?;
    let lease = locks
        .mutex("examples/mutex")
        .ttl(Duration::from_secs(15))
        .wait(Duration::from_secs(10))
        .description("the mutex example")
        .acquire()
        .await?;
    println!("acquired {} with token {}", lease.name(), lease.token());
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => println!("work done"),
        lost = lease.lost() => return Err(lost),
    }
    lease.release().await
}
