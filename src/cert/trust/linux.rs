//! The Linux system store: a file in the distribution's anchors directory, then its
//! refresh command. Directories and commands are the ones mkcert uses (truststore_linux.go).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{TrustStore, run, which};
use crate::cert::ca::Ca;

/// One distribution family's way of adding a CA.
struct Flavour {
    anchors: &'static str,
    refresh: &'static [&'static str],
}

/// In mkcert's order: Fedora/RHEL, Debian/Ubuntu, Arch, openSUSE.
const FLAVOURS: &[Flavour] = &[
    Flavour {
        anchors: "/etc/pki/ca-trust/source/anchors",
        refresh: &["update-ca-trust", "extract"],
    },
    Flavour {
        anchors: "/usr/local/share/ca-certificates",
        refresh: &["update-ca-certificates"],
    },
    Flavour {
        anchors: "/etc/ca-certificates/trust-source/anchors",
        refresh: &["trust", "extract-compat"],
    },
    Flavour {
        anchors: "/usr/share/pki/trust/anchors",
        refresh: &["update-ca-certificates"],
    },
];

/// The system store of this distribution.
pub struct SystemStore {
    anchors: PathBuf,
    refresh: &'static [&'static str],
}

impl SystemStore {
    /// Finds the anchors directory and refresh tool this distribution has.
    pub fn detect() -> Result<Self> {
        for f in FLAVOURS {
            if Path::new(f.anchors).is_dir() && which(f.refresh[0]).is_some() {
                return Ok(SystemStore {
                    anchors: f.anchors.into(),
                    refresh: f.refresh,
                });
            }
        }
        bail!(
            "no system trust tool found (update-ca-certificates, update-ca-trust or trust); on \
             Debian/Ubuntu install the ca-certificates package, on Fedora ca-certificates, on Arch p11-kit"
        )
    }

    /// The CA's file in the anchors directory, named from its fingerprint, never from
    /// anything in the certificate: a crafted subject cannot steer a write made as root.
    fn file(&self, ca: &Ca) -> PathBuf {
        let hex = ca.fingerprint().replace(':', "").to_ascii_lowercase();
        self.anchors.join(format!("rtcdev_CA_{}.crt", &hex[..16]))
    }

    /// mkcert's name for the same CA ("mkcert_development_CA_123.crt"), where an
    /// earlier install (by mkcert or an older rtcdev) may have put it; only ever read or
    /// removed when it holds this very CA, and only when the name is a plain file name.
    fn legacy_file(&self, ca: &Ca) -> Option<PathBuf> {
        let name = format!("{}.crt", ca.nickname().replace(' ', "_"));
        let plain = !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        plain.then(|| self.anchors.join(name))
    }

    /// Whether `path` holds this CA.
    fn holds(path: &Path, ca: &Ca) -> Result<bool> {
        match fs::read_to_string(path) {
            Ok(text) => {
                Ok(crate::cert::ca::first_pem_cert(&text).as_deref() == Some(ca.cert_der.as_ref()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn refresh(&self) -> Result<()> {
        let tool = which(self.refresh[0]).context("the trust refresh tool disappeared")?;
        run(&tool, &self.refresh[1..]).map(|_| ())
    }
}

fn require_root() -> Result<()> {
    // Writing the anchors directory needs root; say so instead of failing on EACCES.
    if super::effective_uid().is_some_and(|uid| uid != 0) {
        bail!(
            "changing the system store needs root: run `sudo -E RTCDEV_TRUST_STORES=system \
             rtcdev cert --install` (keep RTCDEV_CAROOT or --ca-dir the same); the browsers' \
             stores (nss) are yours and need no sudo"
        );
    }
    Ok(())
}

impl TrustStore for SystemStore {
    fn name(&self) -> String {
        format!("system ({})", self.refresh.join(" "))
    }

    fn check(&self, ca: &Ca) -> Result<bool> {
        if Self::holds(&self.file(ca), ca)? {
            return Ok(true);
        }
        match self.legacy_file(ca) {
            Some(legacy) => Self::holds(&legacy, ca),
            None => Ok(false),
        }
    }

    fn install(&self, ca: &Ca) -> Result<()> {
        require_root()?;
        let path = self.file(ca);
        fs::write(&path, ca.cert_pem.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.refresh()
    }

    fn uninstall(&self, ca: &Ca) -> Result<()> {
        require_root()?;
        let mut removed = false;
        for path in std::iter::once(self.file(ca)).chain(self.legacy_file(ca)) {
            if Self::holds(&path, ca)? {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
                removed = true;
            }
        }
        if !removed {
            bail!("the CA is not in {}", self.anchors.display());
        }
        self.refresh()
    }
}
