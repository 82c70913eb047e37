//! HTTPS for the API with rustls (no OpenSSL): `serve --tls-cert FILE --tls-key FILE`.
//!
//! - The certificate file holds the server's certificate first, then any intermediates (PEM);
//!   the key file its private key (PEM: PKCS#8, PKCS#1 or SEC1). The key must match the
//!   certificate, else the server refuses to start.
//! - rustls's defaults decide the protocol: TLS 1.3 and 1.2 only, forward-secret AEAD cipher
//!   suites only, no renegotiation, no compression. ALPN offers HTTP/2 and HTTP/1.1.
//! - [`CertificateReloader`] re-reads both files on SIGHUP, so a renewed certificate is taken
//!   without a restart or a dropped connection; a pair that does not load is logged and the
//!   old one kept.
//! - A key file that others may read is refused, as ssh refuses such a key: whoever reads it
//!   can impersonate the server.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM certificate chain: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error(
        "{path} may be read by users other than its owner (mode {mode:o}); whoever reads it can \
         impersonate this server: `chmod 600 {path}`"
    )]
    KeyReadableByOthers { path: PathBuf, mode: u32 },
    #[error("the private key in {key} cannot be used with the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Where the server's certificate chain and private key are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files: the chain parses, the key is the owner's alone and
    /// matches the chain's first certificate.
    pub fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = read_chain(&self.cert)?;
        check_key_mode(&self.key)?;
        let key_pem = std::fs::read(&self.key).map_err(|source| TlsError::Read {
            path: self.key.clone(),
            source,
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: e.to_string(),
        })
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

#[cfg(unix)]
fn check_key_mode(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyReadableByOthers {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_mode(_path: &Path) -> Result<(), TlsError> {
    Ok(())
}

/// The certificate the server presents, replaceable while it serves ([`Self::reload`]).
pub struct CertificateReloader {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertificateReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateReloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertificateReloader {
    /// Loads `files` now: an error here stops the server from starting.
    pub fn new(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = files.load(&provider)?;
        Ok(Arc::new(CertificateReloader {
            files,
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads the files again; on success new handshakes present the new pair, on failure the
    /// old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(self.files.load(&self.provider)?);
        // A poisoned lock only means a panic while swapping an Arc, which cannot tear it.
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// The rustls server configuration that presents the current pair.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reloads on every SIGHUP until the runtime stops (Unix; elsewhere, a no-op).
    pub fn reload_on_sighup(self: &Arc<Self>) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hangups = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; the certificate will not be reloaded");
                    return;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    match this.reload() {
                        Ok(()) => {
                            tracing::info!(cert = %this.files.cert.display(), "reloaded the TLS certificate")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot reload the TLS certificate; keeping the current one")
                        }
                    }
                }
            });
        }
    }
}

impl ResolvesServerCert for CertificateReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}
