//! `zks://`: URL parsing of the TLS parameters (always), TLS against a real ZooKeeper with a
//! Netty TLS client port (with the `tls` feature: `cargo test -p distlock-zookeeper --features
//! tls --test tls`), and the Unsupported error without the feature.

use distlock_core::ErrorKind;
use distlock_zookeeper::ZkConfig;

/// `zks://` selects TLS and keeps the PEM paths (percent-decoded); TLS parameters on `zk://`,
/// half a client identity and empty paths are InvalidUrl errors.
#[test]
fn zks_urls_parse() {
    let config = ZkConfig::from_url(
        "zks://127.0.0.1:2182,h2/app?ca=/etc/zk/ca.pem&cert=/etc/zk/c.pem&key=/etc/zk/my%20key.pem",
    )
    .unwrap();
    assert_eq!(config.connect_string, "127.0.0.1:2182,h2:2181/app");
    let tls = config.tls.as_ref().expect("zks:// is TLS");
    assert_eq!(tls.ca.as_deref(), Some("/etc/zk/ca.pem".as_ref()));
    assert_eq!(tls.cert.as_deref(), Some("/etc/zk/c.pem".as_ref()));
    assert_eq!(tls.key.as_deref(), Some("/etc/zk/my key.pem".as_ref()));
    assert!(format!("{config:?}").contains("my key.pem"));

    let plain = ZkConfig::from_url("zk://127.0.0.1:2181/").unwrap();
    assert!(plain.tls.is_none());
    let bare = ZkConfig::from_url("zks://127.0.0.1:2182/").unwrap();
    assert_eq!(bare.tls.as_ref().map(|t| t.ca.is_none()), Some(true));

    for (url, why) in [
        ("zk://127.0.0.1:2181/?ca=/ca.pem", "zks://"),
        ("zks://127.0.0.1:2182/?cert=/c.pem", "go together"),
        ("zks://127.0.0.1:2182/?ca=/ca.pem&key=/k.pem", "go together"),
        ("zks://127.0.0.1:2182/?ca=", "path"),
        ("zkss://127.0.0.1:2182/", "zk or zks"),
    ] {
        let err = ZkConfig::from_url(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
        assert!(err.to_string().contains(why), "{url}: {err}");
    }
}

/// Without the `tls` feature, `zks://` is a prompt Unsupported error that names the feature.
#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn zks_without_the_feature_is_unsupported() {
    let port = distlock_testkit::free_port();
    let err = distlock_zookeeper::connect(&format!("zks://127.0.0.1:{port}/?ca=/nonexistent.pem"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let message = err.to_string();
    assert!(message.contains("`tls` feature"), "{message}");
    assert!(message.contains("zookeeper-tls"), "{message}");
    assert!(message.contains("zookeeper"), "{message}");
}

#[cfg(feature = "tls")]
mod tls {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use distlock_core::{ErrorKind, Locks};
    use distlock_testkit::zookeeper::ZooKeeper;

    /// A failed connection must fail well within this (the backend bounds it at 10 s).
    const BOUND: Duration = Duration::from_secs(20);

    /// Connects, bounded: a hang fails the test instead of blocking it.
    async fn connect(url: &str) -> distlock_core::Result<Locks> {
        let started = Instant::now();
        let result = tokio::time::timeout(BOUND, distlock_zookeeper::connect(url))
            .await
            .unwrap_or_else(|_| panic!("connect({url}) hung for {BOUND:?}"));
        assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
        result.map(Locks::new)
    }

    /// A CA unrelated to the server's, made with the `openssl` command.
    fn other_ca(dir: &Path) -> std::path::PathBuf {
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "other.key",
                "-out",
                "other.pem",
                "-days",
                "1",
                "-subj",
                "/CN=not the server's CA",
            ])
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("other.pem")
    }

    /// Acquire, exclude, release and acquire again over TLS with `ca=`: the server
    /// certificate is verified against the CA and for the IP address 127.0.0.1.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acquire_and_release_over_tls() {
        let server = tokio::task::block_in_place(ZooKeeper::start_tls);
        let a = connect(&server.tls_url()).await.unwrap();
        let b = connect(&format!("{}&root=tls", server.tls_url()))
            .await
            .unwrap();
        let lease = a.mutex("over-tls").acquire().await.unwrap();
        assert!(lease.token().get() > 0);
        let c = connect(&server.tls_url()).await.unwrap();
        let err = c.mutex("over-tls").no_wait().acquire().await.unwrap_err();
        assert!(err.is_would_block(), "{err}");
        // Another root is another lock.
        b.mutex("over-tls")
            .no_wait()
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        lease.release().await.unwrap();
        let again = c.mutex("over-tls").no_wait().acquire().await.unwrap();
        assert!(again.token() > lease.token());
        again.release().await.unwrap();
        // The plaintext port of the same server sees the same locks.
        let plain = Locks::new(distlock_zookeeper::connect(&server.url()).await.unwrap());
        let held = a.mutex("shared-view").acquire().await.unwrap();
        let err = plain
            .mutex("shared-view")
            .no_wait()
            .acquire()
            .await
            .unwrap_err();
        assert!(err.is_would_block(), "{err}");
        held.release().await.unwrap();
    }

    /// A CA that did not sign the server certificate, and no `ca=` at all (the system bundle,
    /// which does not hold the throwaway CA), are prompt Connection errors that say TLS.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn untrusted_server_certificate_is_a_connection_error() {
        let server = tokio::task::block_in_place(ZooKeeper::start_tls);
        let dir = tempfile::tempdir().unwrap();
        let other = other_ca(dir.path());
        let mut urls = vec![format!(
            "zks://{}/?ca={}",
            server.tls_hosts(),
            other.display()
        )];
        if std::env::var_os("SSL_CERT_FILE").is_none()
            && Path::new("/etc/ssl/certs/ca-certificates.crt").is_file()
        {
            urls.push(format!("zks://{}/", server.tls_hosts()));
        }
        for url in urls {
            let err = connect(&url)
                .await
                .expect_err("an untrusted server is refused");
            assert_eq!(err.kind(), ErrorKind::Connection, "{url}: {err}");
            let message = err.to_string();
            assert!(message.contains("zookeeper"), "{message}");
            assert!(message.contains("TLS"), "{message}");
        }
        // A plaintext client on the TLS port does not get a session either.
        let err = connect(&format!("zk://{}/", server.tls_hosts()))
            .await
            .expect_err("an error");
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    }

    /// A server that requires a client certificate accepts `cert=` and `key=` and refuses a
    /// client without them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificate() {
        let server = tokio::task::block_in_place(ZooKeeper::start_tls_client_auth);
        let url = format!(
            "{}&cert={}&key={}",
            server.tls_url(),
            server.client_cert().display(),
            server.client_key().display()
        );
        let locks = connect(&url).await.unwrap();
        locks
            .mutex("mtls")
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let err = connect(&server.tls_url())
            .await
            .expect_err("no client certificate");
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    }

    /// Missing and unusable PEM files are errors that name the backend and the file, never
    /// the file's contents.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_files_are_named_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let port = distlock_testkit::free_port();
        let missing = dir.path().join("missing-ca.pem");
        let err = connect(&format!("zks://127.0.0.1:{port}/?ca={}", missing.display()))
            .await
            .expect_err("an error");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let message = err.to_string();
        assert!(message.contains("zookeeper"), "{message}");
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("ca="), "{message}");

        let server = tokio::task::block_in_place(ZooKeeper::start_tls);
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "TOPSECRET not a certificate\n").unwrap();
        let key = dir.path().join("bad.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nTOPSECRET!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        for (url, file) in [
            (
                format!("zks://127.0.0.1:{port}/?ca={}", garbage.display()),
                &garbage,
            ),
            (
                format!(
                    "{}&cert={}&key={}",
                    server.tls_url(),
                    server.client_cert().display(),
                    key.display()
                ),
                &key,
            ),
            (
                format!(
                    "{}&cert={}&key={}",
                    server.tls_url(),
                    server.client_cert().display(),
                    dir.path().join("no-such.key").display()
                ),
                &dir.path().join("no-such.key"),
            ),
        ] {
            let err = connect(&url).await.expect_err("an unusable file");
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            let message = err.to_string();
            assert!(message.contains(&file.display().to_string()), "{message}");
            assert!(!message.contains("TOPSECRET"), "{message}");
            assert!(!format!("{err:?}").contains("TOPSECRET"), "{err:?}");
        }
    }
}
