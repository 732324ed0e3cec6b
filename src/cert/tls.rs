//! rustls configuration from PEM files or issued leaves, with a certificate that can be
//! swapped while the server runs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::CaLocation;
use super::ca::{Ca, DEFAULT_LEAF_DAYS, LeafRequest};

/// Where a server's certificate comes from, for every command that serves TLS.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files given by the user (`--cert`, `--key`).
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key of the leaf.
        key: PathBuf,
    },
    /// A leaf issued by the local CA (created if missing) for localhost, the host name
    /// and the LAN addresses.
    LocalCa(CaLocation),
}

impl TlsSource {
    /// A server configuration over a fresh certificate: the files read now, or a leaf
    /// issued now for this machine's names (names the CA's constraints leave out are
    /// logged). `serve` keeps its own cached, renewed leaf instead.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let key = match self {
            TlsSource::Files { cert, key } => certified_key_from_files(cert, key)?,
            TlsSource::LocalCa(location) => {
                let (ca, _) = Ca::load_or_create(&location.dir)?;
                let (names, left_out) = ca.permitted(&crate::net::default_cert_names());
                for n in &left_out {
                    tracing::warn!(name = %n, "left out of the certificate: the local CA is name-constrained to local names");
                }
                let leaf = ca.issue(&LeafRequest {
                    names,
                    days: DEFAULT_LEAF_DAYS,
                    client: false,
                })?;
                certified_key_from_pem(
                    leaf.cert_pem.as_bytes(),
                    leaf.key_pem.as_bytes(),
                    "the issued leaf",
                )?
            }
        };
        Ok(Arc::new(server_config(SwappableCert::new(key))?))
    }
}

/// Reads a PEM certificate chain and its key from files; errors name the file.
pub fn certified_key_from_files(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("cannot read the key {}", key.display()))?;
    certified_key_from_pem(&cert_pem, &key_pem, &cert.display().to_string())
}

/// The one crypto provider of the process: ring (webrtc-rs and rcgen use it too).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider. Safe to call more than once.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a certified key from a PEM certificate chain (leaf first) and a PEM private
/// key, checking that the key belongs to the leaf. `what` names the source in errors.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what}: the certificate file is not valid PEM ({e})"))?;
    if chain.is_empty() {
        bail!("{what}: the certificate file holds no PEM certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow!("{what}: the key file holds no usable PEM private key ({e})"))?;
    certified_key_from_der(chain, key, what)
}

/// Builds a certified key from DER, checking that the key belongs to the leaf.
pub fn certified_key_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<CertifiedKey> {
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            anyhow!("{what}: the private key does not belong to the certificate")
        }
        other => anyhow!("{what}: {other}"),
    })
}

/// A server certificate that can be replaced while connections are open: new
/// handshakes get the new one, established connections keep theirs.
pub struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCert {
    /// Starts with `key`.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(SwappableCert {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Replaces the certificate for every later handshake.
    pub fn swap(&self, key: CertifiedKey) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(key);
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl fmt::Debug for SwappableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwappableCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration using `certs`, offering HTTP/2 and HTTP/1.x.
pub fn server_config(certs: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("the ring provider offers no TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(config)
}
