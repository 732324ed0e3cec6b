//! NSS databases (Firefox profiles, Chromium's `~/.pki/nssdb` on Linux), changed with
//! `certutil` from the NSS tools, as mkcert does (truststore_nss.go).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow};

use super::{TrustStore, run, which};
use crate::cert::ca::{CA_CERT_FILE, Ca};

/// One NSS database.
pub struct NssDb {
    certutil: PathBuf,
    /// `sql:/path` or `dbm:/path`.
    spec: String,
    dir: PathBuf,
}

fn certutil() -> Result<PathBuf> {
    which("certutil").ok_or_else(|| {
        anyhow!(
            "certutil not found; install it to trust the CA in Firefox and Chromium: \
             libnss3-tools (Debian/Ubuntu), nss-tools (Fedora/RHEL/openSUSE), nss (Arch), \
             nss (Homebrew)"
        )
    })
}

/// Running as root (sudo) in another user's home (`sudo -E`, or a sudo that keeps
/// `HOME`): the databases there would become root's, and the user's browsers could no
/// longer open them.
fn refuse_another_users_home(home: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(home).map(|m| m.uid()).ok();
        if super::effective_uid() == Some(0) && owner.is_some_and(|uid| uid != 0) {
            anyhow::bail!(
                "running as root in another user's home ({}): the browsers' databases there \
                 would become root's; run `rtcdev cert --install` without sudo for them",
                home.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = home;
    Ok(())
}

/// The NSS databases of the current user. Chromium's `~/.pki/nssdb` on Linux is created
/// when missing, so Chromium trusts the CA even before its first run.
pub fn databases() -> Result<Vec<Box<dyn TrustStore>>> {
    let certutil = certutil()?;
    let home = directories::BaseDirs::new()
        .map(|b| b.home_dir().to_path_buf())
        .context("cannot find your home directory")?;
    refuse_another_users_home(&home)?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    if cfg!(target_os = "linux") {
        let pki = home.join(".pki/nssdb");
        if !pki.join("cert9.db").exists() && !pki.join("cert8.db").exists() {
            std::fs::create_dir_all(&pki)
                .with_context(|| format!("cannot create {}", pki.display()))?;
            run(
                &certutil,
                &[
                    "-N",
                    "-d",
                    &format!("sql:{}", pki.display()),
                    "--empty-password",
                ],
            )?;
        }
        dirs.push(pki);
        dirs.push(home.join("snap/chromium/current/.pki/nssdb"));
    }
    for profiles in [
        home.join(".mozilla/firefox"),
        home.join("snap/firefox/common/.mozilla/firefox"),
        home.join("Library/Application Support/Firefox/Profiles"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&profiles) {
            let mut found: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            found.sort();
            dirs.extend(found);
        }
    }
    Ok(dirs
        .into_iter()
        .filter_map(|dir| {
            let spec = if dir.join("cert9.db").exists() {
                format!("sql:{}", dir.display())
            } else if dir.join("cert8.db").exists() {
                format!("dbm:{}", dir.display())
            } else {
                return None;
            };
            Some(Box::new(NssDb {
                certutil: certutil.clone(),
                spec,
                dir,
            }) as Box<dyn TrustStore>)
        })
        .collect())
}

impl NssDb {
    fn ca_file(ca: &Ca) -> PathBuf {
        ca.dir.join(CA_CERT_FILE)
    }
}

impl TrustStore for NssDb {
    fn name(&self) -> String {
        format!("NSS {}", tilde(&self.dir))
    }

    fn check(&self, ca: &Ca) -> Result<bool> {
        // -L -n exits non-zero when no certificate has that nickname.
        let out = Command::new(&self.certutil)
            .args(["-L", "-d", &self.spec, "-n", &ca.nickname(), "-a"])
            .output()
            .with_context(|| format!("cannot run {}", self.certutil.display()))?;
        if !out.status.success() {
            return Ok(false);
        }
        let pem = String::from_utf8_lossy(&out.stdout);
        Ok(crate::cert::ca::first_pem_cert(&pem).as_deref() == Some(ca.cert_der.as_ref()))
    }

    fn install(&self, ca: &Ca) -> Result<()> {
        let file = Self::ca_file(ca);
        run(
            &self.certutil,
            &[
                "-A",
                "-d",
                &self.spec,
                "-t",
                "C,,",
                "-n",
                &ca.nickname(),
                "-i",
                &file.to_string_lossy(),
            ],
        )
        .map(|_| ())
    }

    fn uninstall(&self, ca: &Ca) -> Result<()> {
        run(
            &self.certutil,
            &["-D", "-d", &self.spec, "-n", &ca.nickname()],
        )
        .map(|_| ())
    }
}

fn tilde(path: &Path) -> String {
    match directories::BaseDirs::new() {
        Some(b) => match path.strip_prefix(b.home_dir()) {
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => path.display().to_string(),
        },
        None => path.display().to_string(),
    }
}
