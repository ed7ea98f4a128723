//! The server's side of TLS: its certificate chain and key, loaded from PEM files into a
//! rustls [`ServerConfig`], and a [`Reloadable`] holder so `tcpchat serve` can pick up a
//! renewed certificate (SIGHUP) without dropping a connection.
//!
//! Loading checks what an operator gets wrong most: the wrong file, an empty or
//! unreadable file, a key in a format we cannot use, and a key that belongs to another
//! certificate (a renewal that replaced one file but not the other). Each error names the
//! file and what is wrong with it, so the log line alone says what to fix.
//!
//! Each connection takes the configuration current at its accept ([`Reloadable::current`]);
//! a reload changes what *new* connections are offered, never an established session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;

use crate::{provider, PROTOCOL_VERSIONS};

/// What is wrong with a certificate or key file, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing, no permission).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid PEM (a bad section, bad base64).
    #[error("invalid PEM in {}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// No `CERTIFICATE` section: perhaps the key file was given as the certificate.
    #[error("no certificate in {} (expected a PEM file with -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    /// No private key section of a known kind.
    #[error("no private key in {} (expected PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)", path.display())]
    NoKey { path: PathBuf },
    /// A key of a kind the crypto provider cannot sign with, or a malformed one.
    #[error("unusable private key in {}: {source}", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The key is not the one the first certificate was issued for.
    #[error("key does not match certificate: {} is not the key of the first certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    /// The first certificate cannot be parsed, or rustls refused the configuration.
    #[error("cannot use certificate {}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Reads every certificate of a PEM full chain (end-entity first), as `--tls-cert` takes it.
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let text = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| LoadError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(LoadError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|source| match source {
        pem::Error::NoItemsFound => LoadError::NoKey {
            path: path.to_owned(),
        },
        source => LoadError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Loads `cert` (PEM full chain) and `key` and builds the server configuration: the
/// [`provider`], TLS 1.3 and 1.2 only, no client certificates.
///
/// # Errors
/// A [`LoadError`] naming the file and the problem; a key that is not the certificate's is
/// [`LoadError::Mismatch`].
pub fn load_config(cert: &Path, key: &Path) -> Result<ServerConfig, LoadError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|source| LoadError::BadKey {
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(LoadError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        // Every ring key can produce its public key, so Unknown does not happen with our
        // provider; rustls itself accepts it (CertifiedKey::from_der), and so do we.
        Err(rustls::Error::InconsistentKeys(_)) => {}
        Err(source) => {
            return Err(LoadError::Config {
                path: cert.to_owned(),
                source,
            })
        }
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| LoadError::Config {
            path: cert.to_owned(),
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(certified.cert, key_der)
        .map_err(|source| LoadError::Config {
            path: cert.to_owned(),
            source,
        })?;
    Ok(config)
}

/// The server configuration built from two files, re-readable: [`Reloadable::reload`]
/// swaps in a new configuration only if both files load, so a renewal caught half-written
/// keeps the server on its old certificate.
#[derive(Debug)]
pub struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    // std's lock, held only to clone or replace the Arc: never across an await.
    current: RwLock<Arc<ServerConfig>>,
}

impl Reloadable {
    /// Loads the files once.
    ///
    /// # Errors
    /// As [`load_config`].
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, LoadError> {
        let (cert, key) = (cert.into(), key.into());
        let config = load_config(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration new connections get now.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the value in
        // it is still a whole configuration.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads both files and, if they load, makes them what new connections get.
    ///
    /// # Errors
    /// As [`load_config`]; the configuration in force is then unchanged.
    pub fn reload(&self) -> Result<(), LoadError> {
        let config = Arc::new(load_config(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// The certificate file given.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The key file given.
    pub fn key_path(&self) -> &Path {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("tcpchat-tls-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).expect("write temp file");
            path
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = Dir::new();
        let (cert, key) = pair("a.example");
        let cert = dir.write("cert.pem", &cert);
        let key = dir.write("key.pem", &key);
        let config = load_config(&cert, &key).expect("matching pair");
        // The protocol has no ALPN name: a classic client inside TLS offers none.
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn each_mistake_names_the_file_and_the_problem() {
        let dir = Dir::new();
        let (cert_a, key_a) = pair("a.example");
        let (_, key_b) = pair("b.example");
        let cert = dir.write("cert.pem", &cert_a);
        let key = dir.write("key.pem", &key_a);
        let other_key = dir.write("other-key.pem", &key_b);
        let garbage = dir.write("garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n");
        let missing = dir.0.join("missing.pem");

        let cases: Vec<(Result<ServerConfig, LoadError>, &Path, &str)> = vec![
            (load_config(&key, &key), &key, "no certificate in"),
            (load_config(&cert, &cert), &cert, "no private key in"),
            (
                load_config(&cert, &other_key),
                &other_key,
                "key does not match certificate",
            ),
            (load_config(&missing, &key), &missing, "cannot read"),
            (load_config(&cert, &missing), &missing, "cannot read"),
            (load_config(&garbage, &key), &garbage, "invalid PEM in"),
        ];
        for (result, file, needle) in cases {
            let msg = result.expect_err(needle).to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
            assert!(
                msg.contains(&file.display().to_string()),
                "{msg:?} does not name {}",
                file.display()
            );
        }
    }

    #[test]
    fn a_full_chain_keeps_every_certificate_in_order() {
        let dir = Dir::new();
        let (a, _) = pair("a.example");
        let (b, _) = pair("b.example");
        let chain = load_certs(&dir.write("chain.pem", &format!("{a}{b}"))).expect("chain");
        let first = load_certs(&dir.write("a.pem", &a)).expect("a");
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0], first[0], "end-entity first, as given");
    }

    #[test]
    fn reload_swaps_only_a_pair_that_loads() {
        let dir = Dir::new();
        let (cert_a, key_a) = pair("a.example");
        let (cert_b, key_b) = pair("b.example");
        let cert = dir.write("cert.pem", &cert_a);
        let key = dir.write("key.pem", &key_a);
        let holder = Reloadable::load(&cert, &key).expect("pair a");
        let before = holder.current();
        assert!(
            Arc::ptr_eq(&before, &holder.current()),
            "no reload, same config"
        );

        // Half a renewal: the new certificate, the old key. Refused, old config kept.
        dir.write("cert.pem", &cert_b);
        let err = holder.reload().expect_err("mismatched pair");
        assert!(matches!(err, LoadError::Mismatch { .. }), "{err}");
        assert!(
            Arc::ptr_eq(&before, &holder.current()),
            "failed reload keeps the old one"
        );

        // The renewal completes: swapped.
        dir.write("key.pem", &key_b);
        holder.reload().expect("pair b");
        assert!(
            !Arc::ptr_eq(&before, &holder.current()),
            "reload swapped the config"
        );
        assert_eq!(holder.cert_path(), cert);
        assert_eq!(holder.key_path(), key);
    }
}
