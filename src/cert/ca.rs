//! The local certificate authority: where it lives, creating it once, loading it (also
//! mkcert's RSA CA), and issuing leaf certificates with it.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::constraints::Constraints;
use super::names::CertName;

/// File name of the CA certificate, as mkcert names it.
pub const CA_CERT_FILE: &str = "rootCA.pem";
/// File name of the CA private key, as mkcert names it.
pub const CA_KEY_FILE: &str = "rootCA-key.pem";
/// Validity of a newly created CA: ten years, as mkcert.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Default leaf validity. Apple platforms reject TLS server certificates valid for more
/// than 825 days (support.apple.com/en-us/103769).
pub const DEFAULT_LEAF_DAYS: u32 = 825;
/// Longest leaf validity we issue; above Apple's limit we only warn.
pub const MAX_LEAF_DAYS: u32 = 3650;
/// Leaves start this long in the past, so a peer whose clock is behind still accepts them.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);
/// How long to wait for another process that is creating the CA at the same moment.
const CONCURRENT_CREATE_WAIT: StdDuration = StdDuration::from_secs(3);

/// Where the CA directory was found, so the user can be told why that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSource {
    /// `--ca-dir` or `RTCDEV_CAROOT`.
    Explicit,
    /// mkcert's `CAROOT` environment variable.
    MkcertEnv,
    /// rtcdev's own platform data directory.
    Platform,
    /// mkcert's default directory, used because rtcdev has no CA of its own yet.
    MkcertDefault,
}

/// A CA directory and why it was chosen.
#[derive(Debug, Clone)]
pub struct CaLocation {
    /// The directory that holds `rootCA.pem` and `rootCA-key.pem`.
    pub dir: PathBuf,
    /// Why this directory.
    pub source: CaSource,
}

impl CaLocation {
    /// Picks the CA directory: `explicit` (from `--ca-dir` / `RTCDEV_CAROOT`), else
    /// mkcert's `CAROOT`, else rtcdev's data directory, unless that has no CA yet and
    /// mkcert's default directory has one: then mkcert's, so certificates are trusted
    /// wherever `mkcert -install` already ran.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        if let Some(dir) = explicit {
            return Ok(CaLocation {
                dir: dir.to_path_buf(),
                source: CaSource::Explicit,
            });
        }
        if let Some(dir) = std::env::var_os("CAROOT").filter(|d| !d.is_empty()) {
            return Ok(CaLocation {
                dir: PathBuf::from(dir),
                source: CaSource::MkcertEnv,
            });
        }
        let base = directories::BaseDirs::new().ok_or_else(|| {
            anyhow!("cannot find your home directory; set RTCDEV_CAROOT or pass --ca-dir")
        })?;
        let own = base.data_local_dir().join("rtcdev");
        let mkcert = base.data_local_dir().join("mkcert");
        if !own.join(CA_CERT_FILE).exists()
            && mkcert.join(CA_CERT_FILE).exists()
            && mkcert.join(CA_KEY_FILE).exists()
        {
            return Ok(CaLocation {
                dir: mkcert,
                source: CaSource::MkcertDefault,
            });
        }
        Ok(CaLocation {
            dir: own,
            source: CaSource::Platform,
        })
    }

    /// Path of the CA certificate.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// Path of the CA key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(CA_KEY_FILE)
    }
}

/// A loaded CA that can issue certificates.
pub struct Ca {
    /// The CA directory.
    pub dir: PathBuf,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// Its organization (O), e.g. "rtcdev development CA" or "mkcert development CA".
    pub organization: String,
    /// Its serial number in decimal, as mkcert prints it in trust store nicknames.
    pub serial: String,
    /// Its expiry.
    pub not_after: OffsetDateTime,
    /// Whether the key is RSA (mkcert's CAs) rather than ECDSA.
    pub rsa: bool,
    /// The names it may vouch for, if it is name-constrained.
    pub constraints: Option<Constraints>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A secret of this CA for `purpose`: HMAC-SHA256 of the purpose under the CA's
    /// private key. The same CA gives the same secret in every run (serve's hub signs
    /// resume tokens with it, so they outlive a restart), and nothing about the key can
    /// be learnt from it.
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.issuer.key().serialize_der());
        let tag = ring::hmac::sign(&key, purpose.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// The SHA-256 fingerprint of a certificate as `openssl x509 -fingerprint -sha256`
/// prints it: uppercase hex pairs joined by colons.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The same fingerprint in groups of four hex digits, for reading aloud and comparing
/// on a phone's screen.
pub fn fingerprint_groups(der: &[u8]) -> String {
    let hex: String = fingerprint_sha256(der).replace(':', "");
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `Ca::load_or_create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaOutcome {
    /// An existing CA was loaded.
    Loaded,
    /// No CA existed: a new one was created.
    Created,
}

/// A request for a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// The names it covers (SANs). At least one.
    pub names: Vec<CertName>,
    /// Days of validity from now, 1 to [`MAX_LEAF_DAYS`].
    pub days: u32,
    /// Add the clientAuth extended key usage.
    pub client: bool,
}

/// A freshly issued leaf certificate and its key.
pub struct Leaf {
    /// The names it covers.
    pub names: Vec<CertName>,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// PKCS#8 private key, DER.
    pub key_der: Vec<u8>,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

impl Ca {
    /// Loads the CA from `dir`, creating it first (name-constrained to local names)
    /// when the directory holds neither file. An existing CA is never regenerated or
    /// overwritten.
    pub fn load_or_create(dir: &Path) -> Result<(Ca, CaOutcome)> {
        Ca::load_or_create_with(dir, true)
    }

    /// [`Ca::load_or_create`], creating an unconstrained CA when `constrained` is false.
    pub fn load_or_create_with(dir: &Path, constrained: bool) -> Result<(Ca, CaOutcome)> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => Ok((Ca::load(dir)?, CaOutcome::Loaded)),
            (false, false) => match create(dir, constrained) {
                Ok(()) => Ok((Ca::load(dir)?, CaOutcome::Created)),
                Err(CreateError::Raced) => {
                    wait_for(&cert_path)?;
                    Ok((Ca::load(dir)?, CaOutcome::Loaded))
                }
                Err(CreateError::Other(e)) => Err(e),
            },
            (true, false) => bail!(
                "{} is missing: without the CA key rtcdev cannot issue certificates. Restore the \
                 key, or use another CA directory (--ca-dir or RTCDEV_CAROOT)",
                key_path.display()
            ),
            // Another process may be creating the CA right now: its key is in place
            // and its certificate comes next.
            (false, true) if just_written(&key_path) && wait_for(&cert_path).is_ok() => {
                Ok((Ca::load(dir)?, CaOutcome::Loaded))
            }
            (false, true) => bail!(
                "{} is missing but its key {} exists; rtcdev will not replace a CA key. Restore \
                 the certificate, or use another CA directory (--ca-dir or RTCDEV_CAROOT)",
                cert_path.display(),
                key_path.display()
            ),
        }
    }

    /// Loads an existing CA from `dir`. Corrupt, unreadable or mismatched files give an
    /// error naming the file; nothing is modified.
    pub fn load(dir: &Path) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = fs::read_to_string(&cert_path)
            .with_context(|| format!("cannot read the CA certificate {}", cert_path.display()))?;
        let key_pem = fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read the CA key {}", key_path.display()))?;
        warn_if_key_too_open(&key_path);

        let der = first_pem_cert(&cert_pem).ok_or_else(|| {
            anyhow!(
                "{} holds no PEM certificate; it is corrupt. Restore it from a backup, or use \
                 another CA directory (--ca-dir)",
                cert_path.display()
            )
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
            anyhow!(
                "{} is not a valid X.509 certificate ({e}); restore it from a backup, or use \
                 another CA directory (--ca-dir)",
                cert_path.display()
            )
        })?;
        if !parsed.is_ca() {
            bail!(
                "{} is not a CA certificate (basicConstraints CA is not set)",
                cert_path.display()
            );
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            anyhow!(
                "{} is not a usable private key ({e}); rtcdev reads PKCS#8 PEM ECDSA P-256/P-384, \
                 Ed25519 or RSA keys, as rtcdev and mkcert write them",
                key_path.display()
            )
        })?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            bail!(
                "the CA key {} does not belong to the CA certificate {}; restore the matching \
                 pair (rtcdev never replaces them)",
                key_path.display(),
                cert_path.display()
            );
        }
        let organization = parsed
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .unwrap_or("rtcdev development CA")
            .to_string();
        let serial = parsed.tbs_certificate.serial.to_string();
        let not_after = parsed.validity().not_after.to_datetime();
        if not_after < OffsetDateTime::now_utc() {
            tracing::warn!(ca = %cert_path.display(), "the CA certificate has expired; certificates it issues will not be trusted");
        }
        let rsa = parsed.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1";
        let constraints = Constraints::from_x509(&parsed);
        let cert_der = CertificateDer::from(der.clone()).into_owned();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| anyhow!("cannot use {} as an issuer: {e}", cert_path.display()))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der,
            organization,
            serial,
            not_after,
            rsa,
            constraints,
            issuer,
        })
    }

    /// The name under which the CA goes into trust stores: the organization and the serial,
    /// exactly as mkcert names its CA ("mkcert development CA 1234..."), so a CA shared
    /// with mkcert is recognised in either tool's installs.
    pub fn nickname(&self) -> String {
        format!("{} {}", self.organization, self.serial)
    }

    /// `names` split into those this CA may vouch for and those its name constraints
    /// leave out (none for an unconstrained CA), each in the order given.
    pub fn permitted(&self, names: &[CertName]) -> (Vec<CertName>, Vec<CertName>) {
        names
            .iter()
            .cloned()
            .partition(|n| self.constraints.as_ref().is_none_or(|c| c.permits(n)))
    }

    /// The certificate's SHA-256 fingerprint (see [`fingerprint_sha256`]).
    pub fn fingerprint(&self) -> String {
        fingerprint_sha256(&self.cert_der)
    }

    /// Issues a leaf certificate with a new ECDSA P-256 key.
    pub fn issue(&self, req: &LeafRequest) -> Result<Leaf> {
        if req.names.is_empty() {
            bail!("a certificate needs at least one name");
        }
        if let Some(c) = &self.constraints {
            let (_, outside) = self.permitted(&req.names);
            let outside: Vec<String> = outside.iter().map(ToString::to_string).collect();
            if !outside.is_empty() {
                bail!(
                    "the local CA is name-constrained to local development names ({}), so it \
                     cannot vouch for {}: browsers would reject the certificate. For public names, \
                     create an unconstrained CA in another directory: rtcdev --ca-dir DIR cert \
                     --unconstrained-ca",
                    c.describe(),
                    outside.join(", ")
                );
            }
        }
        if req.days == 0 || req.days > MAX_LEAF_DAYS {
            bail!(
                "--days must be between 1 and {MAX_LEAF_DAYS}, got {}",
                req.days
            );
        }
        // X.509 times have whole seconds; drop the rest so the report matches the file.
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        let mut not_after = now + Duration::days(i64::from(req.days));
        if not_after > self.not_after {
            tracing::warn!(ca_expiry = %self.not_after, "the leaf would outlive its CA; its expiry is cut to the CA's");
            not_after = self.not_after;
        }

        let mut params = CertificateParams::default();
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "rtcdev development certificate");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, user_at_host());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut serves_tls = false;
        let mut has_email = false;
        for name in &req.names {
            let san = match name {
                CertName::Dns(d) => {
                    serves_tls = true;
                    SanType::DnsName(d.clone().try_into().map_err(|e| anyhow!("{d}: {e}"))?)
                }
                CertName::Ip(ip) => {
                    serves_tls = true;
                    SanType::IpAddress(*ip)
                }
                CertName::Uri(u) => {
                    serves_tls = true;
                    SanType::URI(u.clone().try_into().map_err(|e| anyhow!("{u}: {e}"))?)
                }
                CertName::Email(e) => {
                    has_email = true;
                    SanType::Rfc822Name(e.clone().try_into().map_err(|err| anyhow!("{e}: {err}"))?)
                }
            };
            params.subject_alt_names.push(san);
        }
        if serves_tls {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if req.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if has_email {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::EmailProtection);
        }

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("cannot generate a P-256 key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("cannot sign the certificate with the CA")?;
        Ok(Leaf {
            names: req.names.clone(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            not_after,
        })
    }
}

enum CreateError {
    /// Another process created the key file between our check and our write.
    Raced,
    Other(anyhow::Error),
}

fn create(dir: &Path, constrained: bool) -> Result<(), CreateError> {
    create_private_dir(dir).map_err(CreateError::Other)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CreateError::Other(anyhow!("cannot generate the CA key: {e}")))?;
    let mut params = CertificateParams::default();
    let who = user_at_host();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "rtcdev development CA");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, who.clone());
    params
        .distinguished_name
        .push(DnType::CommonName, format!("rtcdev {who}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    if constrained {
        params.name_constraints = Some(Constraints::local(&hostname()).to_rcgen());
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(|e| CreateError::Other(anyhow!("cannot create the CA certificate: {e}")))?;

    // The key goes first and with create_new: if it exists, someone else owns this CA.
    let key_path = dir.join(CA_KEY_FILE);
    match publish_new(&key_path, key.serialize_pem().as_bytes(), 0o600) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(CreateError::Raced),
        Err(e) => {
            return Err(CreateError::Other(
                anyhow::Error::new(e).context(format!("cannot write {}", key_path.display())),
            ));
        }
    }
    let cert_path = dir.join(CA_CERT_FILE);
    publish_new(&cert_path, cert.pem().as_bytes(), 0o644).map_err(|e| {
        CreateError::Other(
            anyhow::Error::new(e).context(format!("cannot write {}", cert_path.display())),
        )
    })?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create the CA directory {}", dir.display()))
}

/// Writes a file that must not exist yet, with the given Unix mode.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// [`write_new`], but the file appears whole or not at all: written under a temporary
/// name, then linked to `path` (which, like `create_new`, fails if `path` exists and
/// never replaces it). Another process never reads half a CA file. Where the file
/// system has no hard links, the file is written in place.
fn publish_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    write_new(&tmp, data, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => write_new(path, data, mode),
        other => other,
    }
}

/// Whether a file was written in the last few seconds (by a process creating the CA).
fn just_written(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < CONCURRENT_CREATE_WAIT)
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .with_context(|| format!("cannot look at {}", path.display()))
}

fn wait_for(path: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + CONCURRENT_CREATE_WAIT;
    while std::time::Instant::now() < deadline {
        if path.exists() {
            return Ok(());
        }
        std::thread::sleep(StdDuration::from_millis(20));
    }
    bail!(
        "another process created the CA key but not {}; look at the CA directory",
        path.display()
    )
}

fn warn_if_key_too_open(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    key = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "the CA key is readable by other users; anyone who can read it can make certificates your browsers trust. Fix with: chmod 600 {}",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The first certificate in a PEM text, as DER.
pub(crate) fn first_pem_cert(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(|r| r.ok())
        .map(|c| c.to_vec())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive 127-bit integer: DER INTEGERs are signed.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// `user@host`, as mkcert puts it in its subjects.
pub fn user_at_host() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "user".into());
    format!("{user}@{}", hostname())
}

/// This machine's host name, without a domain.
pub fn hostname() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    name.split('.').next().unwrap_or("localhost").to_string()
}
