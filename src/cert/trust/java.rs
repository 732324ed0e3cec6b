//! Java's trust store: the `cacerts` keystore of `JAVA_HOME`, through that JDK's
//! `keytool`, as mkcert does (and, like mkcert, only when `JAVA_HOME` is set). Changing a
//! system JDK's keystore needs write access to it (root), and the error says so.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{TrustStore, run};
use crate::cert::ca::{CA_CERT_FILE, Ca};

/// The password every JDK ships `cacerts` with.
const STOREPASS: &str = "changeit";

/// One JDK's `cacerts`.
pub struct JavaStore {
    keytool: PathBuf,
    cacerts: PathBuf,
}

/// The store of `JAVA_HOME`, if it is set (empty counts as unset); none otherwise.
pub fn detect() -> Result<Vec<Box<dyn TrustStore>>> {
    let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) else {
        return Ok(Vec::new());
    };
    let home = PathBuf::from(home);
    let keytool = [home.join("bin/keytool"), home.join("bin/keytool.exe")]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("JAVA_HOME is {} but it has no bin/keytool", home.display()))?;
    let cacerts = [
        home.join("lib/security/cacerts"),
        home.join("jre/lib/security/cacerts"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| {
        format!(
            "JAVA_HOME is {} but it has no lib/security/cacerts",
            home.display()
        )
    })?;
    Ok(vec![Box::new(JavaStore { keytool, cacerts })])
}

impl JavaStore {
    fn store_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend([
            "-keystore",
            self.cacerts.to_str().unwrap_or_default(),
            "-storepass",
            STOREPASS,
        ]);
        all
    }

    /// The SHA-256 fingerprint of the entry named like the CA, if there is one.
    fn entry_fingerprint(&self, ca: &Ca) -> Result<Option<String>> {
        let alias = ca.nickname();
        let out = Command::new(&self.keytool)
            .args(self.store_args(&["-list", "-v", "-alias", &alias]))
            .output()
            .with_context(|| format!("cannot run {}", self.keytool.display()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            // keytool says so on stdout when the alias is missing; anything else (a
            // wrong password, an unreadable file) is an error.
            if text.contains("does not exist") {
                return Ok(None);
            }
            bail!(
                "{} -list failed: {}",
                self.keytool.display(),
                text.trim().lines().next().unwrap_or("")
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .find_map(|l| l.trim().strip_prefix("SHA256:"))
            .map(|f| f.trim().to_ascii_uppercase()))
    }

    fn writable(&self) -> Result<()> {
        let meta = std::fs::metadata(&self.cacerts)
            .with_context(|| format!("cannot read {}", self.cacerts.display()))?;
        if meta.permissions().readonly()
            || std::fs::OpenOptions::new()
                .append(true)
                .open(&self.cacerts)
                .is_err()
        {
            bail!(
                "{} is not writable by this user; run as root (sudo rtcdev cert --install)",
                self.cacerts.display()
            );
        }
        Ok(())
    }
}

impl TrustStore for JavaStore {
    fn name(&self) -> String {
        format!("Java {}", self.cacerts.display())
    }

    fn check(&self, ca: &Ca) -> Result<bool> {
        Ok(self.entry_fingerprint(ca)? == Some(ca.fingerprint().to_ascii_uppercase()))
    }

    fn install(&self, ca: &Ca) -> Result<()> {
        if self.entry_fingerprint(ca)?.is_some() {
            bail!(
                "an entry named {:?} holds another certificate; it is left alone",
                ca.nickname()
            );
        }
        self.writable()?;
        let file = ca.dir.join(CA_CERT_FILE);
        let file = file.to_str().context("the CA's path is not UTF-8")?;
        let alias = ca.nickname();
        run(
            &self.keytool,
            &self.store_args(&["-importcert", "-noprompt", "-alias", &alias, "-file", file]),
        )?;
        Ok(())
    }

    fn uninstall(&self, ca: &Ca) -> Result<()> {
        self.writable()?;
        let alias = ca.nickname();
        run(
            &self.keytool,
            &self.store_args(&["-delete", "-alias", &alias]),
        )?;
        Ok(())
    }
}
