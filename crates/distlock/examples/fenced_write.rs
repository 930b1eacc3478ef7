//! Fencing: the protected resource rejects writes carrying a token lower than one it has seen,
//! so a holder that paused past its lease cannot overwrite a newer holder's work.
//!
//! `cargo run -p distlock --example fenced_write`

use std::sync::Mutex;

use distlock::FencingToken;

/// A stand-in for a storage service that checks tokens.
#[derive(Default)]
struct FencedStore {
    highest: Mutex<Option<FencingToken>>,
}

impl FencedStore {
    fn write(&self, token: FencingToken, value: &str) -> Result<(), String> {
        let mut highest = self.highest.lock().unwrap();
        if highest.is_some_and(|h| token < h) {
            return Err(format!(
                "rejected stale token {token} (seen {})",
                highest.unwrap()
            ));
        }
        *highest = Some(token);
        println!("stored {value:?} under token {token}");
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> distlock::Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let locks = distlock::connect(&format!("file://{}", dir.path().display())).await?;
    let store = FencedStore::default();

    let first = locks.mutex("report").acquire().await?;
    let old_token = first.token();
    first.release().await?;

    let second = locks.mutex("report").acquire().await?;
    store.write(second.token(), "new").unwrap();
    // A holder that woke up late with the old token is refused.
    assert!(store.write(old_token, "stale").is_err());
    second.release().await
}
