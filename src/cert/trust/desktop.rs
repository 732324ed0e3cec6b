//! The system stores of the desktops most developers use, each through its own tool as
//! mkcert does: macOS's system keychain (`security`), Windows' current-user Root store
//! (`certutil.exe`), and that same Windows store from inside WSL (`certutil.exe` through
//! WSL's interop, paths converted with `wslpath -w`), so the Windows browser trusts a
//! page served from WSL. Each is found on `PATH`; entries are told apart by the CA's
//! fingerprint or serial, never by its name alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{TrustStore, run, which};
use crate::cert::ca::{CA_CERT_FILE, Ca};

/// The keychain every user's TLS trusts on macOS.
const SYSTEM_KEYCHAIN: &str = "/Library/Keychains/System.keychain";

/// The CA's SHA-256 fingerprint as `security` prints it: upper-case hex, no colons.
fn sha256_hex(ca: &Ca) -> String {
    ca.fingerprint().replace(':', "").to_ascii_uppercase()
}

/// The CA's serial number in hex, as `certutil` names certificates.
/// The CA certificate's SHA-1 thumbprint, as certutil finds a certificate by it. Not its
/// serial number, which certutil also accepts: serials are unique per issuer only, and
/// another root in the store may have the same one (imported CAs often have small ones).
fn thumbprint(ca: &Ca) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &ca.cert_der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pem_path(ca: &Ca) -> Result<String> {
    ca.dir
        .join(CA_CERT_FILE)
        .to_str()
        .map(str::to_string)
        .context("the CA's path is not UTF-8")
}

/// macOS's system keychain, through `security`.
pub struct Keychain {
    security: PathBuf,
}

impl Keychain {
    /// The keychain, when `security` is on `PATH`.
    pub fn detect() -> Result<Self> {
        let security =
            which("security").context("no `security` tool: the macOS keychain is only on macOS")?;
        Ok(Keychain { security })
    }
}

impl TrustStore for Keychain {
    fn name(&self) -> String {
        "macOS system keychain".to_string()
    }

    fn check(&self, ca: &Ca) -> Result<bool> {
        // Every certificate of the keychain with its hashes; ours is the one with our
        // fingerprint (another CA of the same name is not ours).
        let out = Command::new(&self.security)
            .args(["find-certificate", "-a", "-Z", SYSTEM_KEYCHAIN])
            .output()
            .with_context(|| format!("cannot run {}", self.security.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_uppercase();
        Ok(out.status.success() && text.contains(&format!("SHA-256 HASH: {}", sha256_hex(ca))))
    }

    fn install(&self, ca: &Ca) -> Result<()> {
        let pem = pem_path(ca)?;
        run(
            &self.security,
            &[
                "add-trusted-cert",
                "-d",
                "-r",
                "trustRoot",
                "-p",
                "ssl",
                "-p",
                "basic",
                "-k",
                SYSTEM_KEYCHAIN,
                &pem,
            ],
        )
        .map_err(needs_admin)?;
        Ok(())
    }

    fn uninstall(&self, ca: &Ca) -> Result<()> {
        let pem = pem_path(ca)?;
        run(&self.security, &["remove-trusted-cert", "-d", &pem]).map_err(needs_admin)?;
        run(
            &self.security,
            &["delete-certificate", "-Z", &sha256_hex(ca), SYSTEM_KEYCHAIN],
        )
        .map_err(needs_admin)?;
        Ok(())
    }
}

fn needs_admin(e: anyhow::Error) -> anyhow::Error {
    e.context("the system keychain needs an administrator: run it with sudo")
}

/// The Windows current user's Root store through `certutil.exe`; from WSL, with paths
/// converted by `wslpath -w`.
pub struct WindowsRoot {
    certutil: PathBuf,
    wslpath: Option<PathBuf>,
}

impl WindowsRoot {
    /// On Windows.
    pub fn detect() -> Result<Self> {
        let certutil = which("certutil.exe")
            .or_else(|| which("certutil").filter(|_| cfg!(windows)))
            .context("no certutil.exe: the Windows store is only on Windows and WSL")?;
        Ok(WindowsRoot {
            certutil,
            wslpath: None,
        })
    }

    /// From inside WSL: Windows' certutil.exe through interop.
    pub fn detect_wsl() -> Result<Self> {
        let certutil = which("certutil.exe").context(
            "no certutil.exe on PATH: WSL's Windows interop is off (appendWindowsPath in /etc/wsl.conf)",
        )?;
        let wslpath = which("wslpath").context("no wslpath: this is not WSL")?;
        Ok(WindowsRoot {
            certutil,
            wslpath: Some(wslpath),
        })
    }

    /// The CA file as certutil.exe can open it.
    fn file(&self, ca: &Ca) -> Result<String> {
        let pem = pem_path(ca)?;
        let Some(wslpath) = &self.wslpath else {
            return Ok(pem);
        };
        let out = run(wslpath, &["-w", &pem])?;
        let win = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if win.is_empty() {
            bail!("wslpath -w {pem} printed nothing");
        }
        Ok(win)
    }
}

impl TrustStore for WindowsRoot {
    fn name(&self) -> String {
        if self.wslpath.is_some() {
            "Windows current user Root (from WSL)".to_string()
        } else {
            "Windows current user Root".to_string()
        }
    }

    fn check(&self, ca: &Ca) -> Result<bool> {
        // Found by thumbprint; certutil exits non-zero when no certificate has it.
        let out = Command::new(&self.certutil)
            .args(["-user", "-verifystore", "Root", &thumbprint(ca)])
            .output()
            .with_context(|| format!("cannot run {}", self.certutil.display()))?;
        Ok(out.status.success())
    }

    fn install(&self, ca: &Ca) -> Result<()> {
        run(
            &self.certutil,
            &["-user", "-addstore", "Root", &self.file(ca)?],
        )?;
        Ok(())
    }

    fn uninstall(&self, ca: &Ca) -> Result<()> {
        run(
            &self.certutil,
            &["-user", "-delstore", "Root", &thumbprint(ca)],
        )?;
        Ok(())
    }
}

/// Whether this Linux is WSL: its interop is registered, or the kernel says Microsoft.
pub fn is_wsl() -> bool {
    Path::new("/proc/sys/fs/binfmt_misc/WSLInterop").exists()
        || std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .is_ok_and(|r| r.to_ascii_lowercase().contains("microsoft"))
}
