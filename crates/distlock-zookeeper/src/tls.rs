//! `zks://`: turns [`ZkTls`]'s PEM file paths into `zookeeper-client`'s TLS options.

use std::path::{Path, PathBuf};

use distlock_core::{Error, ErrorKind, Result};
use zookeeper_client as zk;

use crate::BACKEND;
use crate::backend::ZkTls;

/// Where distributions keep the system's PEM bundle of trust anchors (as `openssl-probe` looks
/// for it), tried in order when `ca=` is not given and `$SSL_CERT_FILE` is not set.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Reads the PEM files of `tls` into TLS options with hostname verification on.
///
/// Errors ([`Config`](ErrorKind::Config)) name the file and the parameter, never the
/// contents.
pub(crate) fn options(tls: &ZkTls) -> Result<zk::TlsOptions> {
    distlock_core::install_rustls_provider();
    let (ca_path, param) = match &tls.ca {
        Some(path) => (path.clone(), "ca="),
        None => (system_bundle()?, "the system CA bundle"),
    };
    let ca = read(&ca_path, param)?;
    let mut options = zk::TlsOptions::new().with_pem_ca(&ca).map_err(|error| {
        config_error(format!(
            "the TLS CA file ({param}) {} holds no usable PEM certificate: {error}",
            ca_path.display()
        ))
    })?;
    if let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) {
        let cert = read(cert_path, "cert=")?;
        let key = read(key_path, "key=")?;
        // The error text of a bad identity is not shown: it comes from parsing the key file.
        options = options.with_pem_identity(&cert, &key).map_err(|_| {
            config_error(format!(
                "the TLS client certificate (cert=) {} or its key (key=) {} is not usable PEM \
                 (a certificate chain, and a PKCS#8, PKCS#1 or SEC1 private key)",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    }
    Ok(options)
}

fn read(path: &Path, param: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|error| {
        config_error(format!(
            "cannot read the TLS file ({param}) {}",
            path.display()
        ))
        .with_source(error)
    })
}

fn system_bundle() -> Result<PathBuf> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(PathBuf::from(file));
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            config_error(
                "zks:// without ca= uses the system CA bundle, but none was found \
                 (set SSL_CERT_FILE or pass ca=<PEM file>)",
            )
        })
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, BACKEND, message)
}
