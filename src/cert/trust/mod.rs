//! Trust stores the CA can be installed into, one file per store behind one small
//! interface (check / install / uninstall), as mkcert does. Every action is safe to repeat.

use std::fmt;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::ca::Ca;

mod desktop;
mod java;
#[cfg(target_os = "linux")]
mod linux;
mod nss;

/// A place that decides which CAs some programs trust.
pub trait TrustStore {
    /// A name a person recognises ("system (update-ca-certificates)", "NSS ~/.pki/nssdb").
    fn name(&self) -> String;
    /// Whether the CA is there now.
    fn check(&self, ca: &Ca) -> Result<bool>;
    /// Adds the CA.
    fn install(&self, ca: &Ca) -> Result<()>;
    /// Removes the CA.
    fn uninstall(&self, ca: &Ca) -> Result<()>;
}

/// The kinds of store `RTCDEV_TRUST_STORES` picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The operating system's store (what curl, Chromium on most systems, Go, ... use).
    System,
    /// NSS databases: Firefox profiles and Chromium's `~/.pki/nssdb` on Linux.
    Nss,
    /// The `cacerts` keystore of `JAVA_HOME` (when it is set).
    Java,
    /// macOS's system keychain (`security`); the system store on macOS.
    Keychain,
    /// Windows' current-user Root store (`certutil.exe`); the system store on Windows.
    Windows,
    /// From inside WSL, the Windows store, so the Windows browser trusts the page.
    Wsl,
}

impl StoreKind {
    /// Parses a comma-separated selection such as `system,nss`.
    pub fn parse_list(list: &str) -> Result<Vec<StoreKind>> {
        let mut kinds = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let kind = match part.to_ascii_lowercase().as_str() {
                "system" => StoreKind::System,
                "nss" | "firefox" | "chrome" | "chromium" => StoreKind::Nss,
                "java" => StoreKind::Java,
                "keychain" | "macos" => StoreKind::Keychain,
                "windows" => StoreKind::Windows,
                "wsl" => StoreKind::Wsl,
                other => bail!(
                    "unknown trust store {other:?} in RTCDEV_TRUST_STORES; use system, nss, java, keychain, windows, wsl or a list (system,nss)"
                ),
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            bail!(
                "RTCDEV_TRUST_STORES is empty; use system, nss, java, keychain, windows, wsl or a list (system,nss)"
            );
        }
        Ok(kinds)
    }

    /// The kinds this machine has: the system store (the keychain on macOS, the Root
    /// store on Windows), NSS, Java, and from WSL the Windows store too.
    pub fn all() -> Vec<StoreKind> {
        let mut kinds = vec![StoreKind::System, StoreKind::Nss, StoreKind::Java];
        if cfg!(target_os = "linux") && desktop::is_wsl() {
            kinds.push(StoreKind::Wsl);
        }
        kinds
    }
}

/// What happened in one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "detail")]
pub enum Outcome {
    /// The CA was added now.
    Installed,
    /// The CA was there already; nothing changed.
    AlreadyInstalled,
    /// The CA was removed now.
    Uninstalled,
    /// The CA was not there; nothing changed.
    NotInstalled,
    /// The store exists but could not be changed.
    Failed(String),
    /// The store cannot be used here (a tool is missing, the OS is not supported).
    Unavailable(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Installed => f.write_str("now installed"),
            Outcome::AlreadyInstalled => f.write_str("already installed"),
            Outcome::Uninstalled => f.write_str("now uninstalled"),
            Outcome::NotInstalled => f.write_str("was not installed"),
            Outcome::Failed(why) => write!(f, "FAILED: {why}"),
            Outcome::Unavailable(why) => write!(f, "skipped: {why}"),
        }
    }
}

impl Outcome {
    /// Whether this counts as a failure for the exit code.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// One store's result.
#[derive(Debug, Clone, Serialize)]
pub struct StoreResult {
    /// The store's name.
    pub store: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Install or uninstall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add the CA where it is missing.
    Install,
    /// Remove the CA where it is present.
    Uninstall,
}

/// The stores of the selected kinds on this machine; a kind that cannot be used here
/// comes back as an `Unavailable` result instead.
pub fn discover(kinds: &[StoreKind]) -> (Vec<Box<dyn TrustStore>>, Vec<StoreResult>) {
    let mut stores: Vec<Box<dyn TrustStore>> = Vec::new();
    let mut unavailable = Vec::new();
    for kind in kinds {
        let found = match kind {
            StoreKind::System => system_store().map(|s| vec![s]),
            StoreKind::Nss => nss::databases(),
            StoreKind::Java => java::detect(),
            StoreKind::Keychain => desktop::Keychain::detect().map(boxed),
            StoreKind::Windows => desktop::WindowsRoot::detect().map(boxed),
            StoreKind::Wsl => desktop::WindowsRoot::detect_wsl().map(boxed),
        };
        match found {
            Ok(mut s) => stores.append(&mut s),
            Err(e) => unavailable.push(StoreResult {
                store: format!("{kind:?}").to_lowercase(),
                outcome: Outcome::Unavailable(format!("{e:#}")),
            }),
        }
    }
    (stores, unavailable)
}

#[cfg(target_os = "linux")]
fn system_store() -> Result<Box<dyn TrustStore>> {
    linux::SystemStore::detect().map(|s| Box::new(s) as Box<dyn TrustStore>)
}

#[cfg(target_os = "macos")]
fn system_store() -> Result<Box<dyn TrustStore>> {
    desktop::Keychain::detect().map(|s| Box::new(s) as Box<dyn TrustStore>)
}

#[cfg(windows)]
fn system_store() -> Result<Box<dyn TrustStore>> {
    desktop::WindowsRoot::detect().map(|s| Box::new(s) as Box<dyn TrustStore>)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn system_store() -> Result<Box<dyn TrustStore>> {
    bail!(
        "the system store of this OS is not supported yet; import rootCA.pem (rtcdev cert --caroot) by hand"
    )
}

fn boxed<S: TrustStore + 'static>(s: S) -> Vec<Box<dyn TrustStore>> {
    vec![Box::new(s)]
}

/// Installs or uninstalls the CA in every selected store, each independently: one
/// failing store does not stop the others.
pub fn apply(ca: &Ca, action: Action, kinds: &[StoreKind]) -> Vec<StoreResult> {
    let (stores, mut results) = discover(kinds);
    for store in stores {
        let outcome = match apply_one(store.as_ref(), ca, action) {
            Ok(o) => o,
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        results.push(StoreResult {
            store: store.name(),
            outcome,
        });
    }
    results
}

fn apply_one(store: &dyn TrustStore, ca: &Ca, action: Action) -> Result<Outcome> {
    let present = store.check(ca)?;
    Ok(match (action, present) {
        (Action::Install, true) => Outcome::AlreadyInstalled,
        (Action::Install, false) => {
            store.install(ca)?;
            if !store.check(ca)? {
                bail!("the store did not take the CA");
            }
            Outcome::Installed
        }
        (Action::Uninstall, false) => Outcome::NotInstalled,
        (Action::Uninstall, true) => {
            store.uninstall(ca)?;
            Outcome::Uninstalled
        }
    })
}

/// Finds a program on PATH.
pub(crate) fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(Into::into))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs a program, turning a failure into an error with its output.
pub(crate) fn run(program: &Path, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            stderr
                .trim()
                .lines()
                .chain(stdout.trim().lines())
                .next()
                .unwrap_or("")
        );
    }
    Ok(out)
}

/// This process's effective user id, where the system says it (`/proc` on Linux).
pub fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
