//! `rtcdev cert`: make the CA on first use, issue a leaf, write it (PEM and PKCS#12),
//! install or uninstall the CA in trust stores, and report what was done.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ca::{Ca, CaLocation, CaOutcome, CaSource, LeafRequest};
use super::constraints::{LOCAL_DNS, is_public_suffix};
use super::names::{CertName, default_paths};
use super::p12;
use super::trust::{self, Action, StoreKind, StoreResult};

/// Everything `rtcdev cert` needs, validated, with defaults applied.
#[derive(Debug, Clone)]
pub struct CertConfig {
    /// Where the CA lives.
    pub ca: CaLocation,
    /// What to do.
    pub task: CertTask,
    /// Trust stores for install/uninstall.
    pub stores: Vec<StoreKind>,
    /// Create the CA without name constraints (when it is created).
    pub unconstrained_ca: bool,
}

/// What `rtcdev cert` does this time.
#[derive(Debug, Clone)]
pub enum CertTask {
    /// Print the CA directory.
    Caroot,
    /// Remove the CA from the trust stores (the CA files stay).
    Uninstall,
    /// Install the CA into the trust stores, then issue a leaf if one is asked for.
    Install(Option<IssueConfig>),
    /// Issue a leaf.
    Issue(IssueConfig),
}

/// A leaf to issue and where to write it.
#[derive(Debug, Clone)]
pub struct IssueConfig {
    /// Whether `names` are the defaults (then names the CA may not vouch for are left
    /// out with a note, rather than refused).
    pub defaults: bool,
    /// Names covered.
    pub names: Vec<CertName>,
    /// Validity in days.
    pub days: u32,
    /// Add clientAuth.
    pub client: bool,
    /// PEM certificate path.
    pub cert_file: PathBuf,
    /// PEM key path.
    pub key_file: PathBuf,
    /// PKCS#12 path, when a bundle is wanted instead of PEM files.
    pub p12_file: Option<PathBuf>,
}

/// What was done, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    /// The CA used.
    pub ca: CaReport,
    /// The leaf issued, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<LeafReport>,
    /// Per-store results of install/uninstall.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<StoreResult>,
}

/// The CA part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct CaReport {
    /// CA directory.
    pub dir: PathBuf,
    /// Why this directory: explicit, mkcert-env, platform, mkcert-default.
    pub source: &'static str,
    /// Whether it was created by this run.
    pub created: bool,
    /// The trust store nickname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// SHA-256 fingerprint of the CA certificate (as openssl prints it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
    /// The names the CA may vouch for, when it is name-constrained; `None` with
    /// `constrained: false` for a CA that can vouch for any name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constrained: Option<bool>,
    /// Its permitted names, when constrained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permitted: Option<String>,
    /// Permitted DNS subtrees that are public suffixes (a CA made for a host named
    /// `dev`, say): every site under them is in reach of its key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_subtrees: Vec<String>,
}

/// The leaf part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct LeafReport {
    /// Names covered.
    pub names: Vec<String>,
    /// PEM certificate written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM key written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// PKCS#12 bundle written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p12_file: Option<PathBuf>,
    /// Expiry, RFC 3339.
    pub expires: String,
}

impl CertReport {
    /// Whether any store failed (exit code 1).
    pub fn failed(&self) -> bool {
        self.trust.iter().any(|r| r.outcome.is_failure())
    }

    /// The report as a person reads it.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let ca = &self.ca;
        match (ca.created, ca.source) {
            (true, _) => s.push_str(&format!("Created a new local CA at {} 💥\n", ca.dir.display())),
            (false, "mkcert-default") => s.push_str(&format!(
                "Using mkcert's local CA at {} (rtcdev has none of its own yet), so certificates are trusted wherever `mkcert -install` ran\n",
                ca.dir.display()
            )),
            _ => {}
        }
        match (ca.constrained, &ca.permitted) {
            (Some(true), Some(p)) => s.push_str(&format!(
                "The local CA is name-constrained: it can only vouch for {p}\n"
            )),
            (Some(false), _) => s.push_str(
                "The local CA is not name-constrained: it can vouch for any name, so guard its key\n",
            ),
            _ => {}
        }
        for suffix in &ca.public_subtrees {
            s.push_str(&format!(
                "  {suffix} is a public suffix: the CA can vouch for every site under it. Make a new CA in another --ca-dir\n"
            ));
        }
        if let Some(fp) = &ca.fingerprint_sha256 {
            s.push_str(&format!(
                "The local CA's SHA-256 fingerprint (compare it on a device before trusting the CA):\n  {fp}\n"
            ));
        }
        for r in &self.trust {
            s.push_str(&format!("The local CA in {}: {}\n", r.store, r.outcome));
        }
        if let Some(leaf) = &self.certificate {
            s.push_str("\nCreated a new certificate valid for the following names 📜\n");
            for n in &leaf.names {
                s.push_str(&format!(" - {n:?}\n"));
            }
            if leaf.names.iter().any(|n| n.starts_with("*.")) {
                s.push_str("\nReminder: X.509 wildcards only go one level deep, so this won't match a.b.example.test ℹ️\n");
            }
            match (&leaf.cert_file, &leaf.key_file, &leaf.p12_file) {
                (Some(c), Some(k), _) => s.push_str(&format!(
                    "\nThe certificate is at {} and the key at {} ✅\n",
                    c.display(),
                    k.display()
                )),
                (_, _, Some(p)) => s.push_str(&format!(
                    "\nThe PKCS#12 bundle is at {} ✅\nThe legacy default password is \"{}\" as mkcert's\n",
                    p.display(),
                    p12::P12_PASSWORD
                )),
                _ => {}
            }
            s.push_str(&format!(
                "\nIt will expire on {} 🗓\n",
                human_date(&leaf.expires)
            ));
        }
        s
    }
}

fn human_date(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .map(|d| format!("{} {} {}", d.day(), d.month(), d.year()))
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn source_name(source: CaSource) -> &'static str {
    match source {
        CaSource::Explicit => "explicit",
        CaSource::MkcertEnv => "mkcert-env",
        CaSource::Platform => "platform",
        CaSource::MkcertDefault => "mkcert-default",
    }
}

/// Runs `rtcdev cert`.
pub fn run(config: &CertConfig) -> Result<CertReport> {
    let mut report = CertReport {
        ca: CaReport {
            dir: config.ca.dir.clone(),
            source: source_name(config.ca.source),
            created: false,
            name: None,
            expires: None,
            fingerprint_sha256: None,
            constrained: None,
            permitted: None,
            public_subtrees: Vec::new(),
        },
        certificate: None,
        trust: Vec::new(),
    };
    if let CertTask::Caroot = config.task {
        return Ok(report);
    }
    if let CertTask::Issue(issue) | CertTask::Install(Some(issue)) = &config.task {
        // Check output paths before touching anything, so a typo costs nothing.
        check_outputs(issue, &config.ca)?;
    }
    let (ca, outcome) = if let CertTask::Uninstall = config.task {
        (Ca::load(&config.ca.dir)?, CaOutcome::Loaded)
    } else {
        Ca::load_or_create_with(&config.ca.dir, !config.unconstrained_ca)?
    };
    if config.unconstrained_ca && outcome == CaOutcome::Loaded && ca.constraints.is_some() {
        bail!(
            "the CA in {} already exists and is name-constrained; --unconstrained-ca applies only \
             when a CA is created (rtcdev never replaces a CA): use another directory with --ca-dir",
            config.ca.dir.display()
        );
    }
    report.ca.created = outcome == CaOutcome::Created;
    report.ca.name = Some(ca.nickname());
    report.ca.expires = Some(rfc3339(ca.not_after));
    report.ca.fingerprint_sha256 = Some(ca.fingerprint());
    report.ca.constrained = Some(ca.constraints.is_some());
    report.ca.permitted = ca.constraints.as_ref().map(|c| c.describe());
    report.ca.public_subtrees = ca.constraints.as_ref().map_or_else(Vec::new, |c| {
        c.dns
            .iter()
            .map(|d| d.trim_start_matches('.'))
            // `home.arpa` is on the list, but reserved for home networks (RFC 8375).
            .filter(|d| !LOCAL_DNS.contains(d) && is_public_suffix(d))
            .map(String::from)
            .collect()
    });

    let issue = match &config.task {
        CertTask::Caroot => None,
        CertTask::Uninstall => {
            report.trust = trust::apply(&ca, Action::Uninstall, &config.stores);
            None
        }
        CertTask::Install(issue) => {
            report.trust = trust::apply(&ca, Action::Install, &config.stores);
            issue.as_ref()
        }
        CertTask::Issue(issue) => Some(issue),
    };
    if let Some(issue) = issue {
        report.certificate = Some(issue_and_write(&ca, issue)?);
    }
    Ok(report)
}

fn issue_and_write(ca: &Ca, issue: &IssueConfig) -> Result<LeafReport> {
    let adjusted;
    let issue = match permitted_defaults(ca, issue) {
        Some(a) => {
            adjusted = a;
            &adjusted
        }
        None => issue,
    };
    if issue.days > super::ca::DEFAULT_LEAF_DAYS {
        tracing::warn!(
            days = issue.days,
            "Apple platforms reject server certificates valid for more than 825 days"
        );
    }
    let leaf = ca.issue(&LeafRequest {
        names: issue.names.clone(),
        days: issue.days,
        client: issue.client,
    })?;
    let mut report = LeafReport {
        names: leaf.names.iter().map(ToString::to_string).collect(),
        cert_file: None,
        key_file: None,
        p12_file: None,
        expires: rfc3339(leaf.not_after),
    };
    if let Some(p12_file) = &issue.p12_file {
        // It holds the private key.
        write_atomic(p12_file, &p12::encode(&leaf, ca)?, 0o600)?;
        report.p12_file = Some(p12_file.clone());
    } else {
        write_atomic(&issue.cert_file, leaf.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&issue.key_file, leaf.key_pem.as_bytes(), 0o600)?;
        report.cert_file = Some(issue.cert_file.clone());
        report.key_file = Some(issue.key_file.clone());
    }
    Ok(report)
}

fn check_outputs(issue: &IssueConfig, ca: &CaLocation) -> Result<()> {
    let outputs: Vec<&PathBuf> = match &issue.p12_file {
        Some(p) => vec![p],
        None => vec![&issue.cert_file, &issue.key_file],
    };
    if outputs.len() == 2 && same_file(outputs[0], outputs[1]) {
        bail!(
            "--cert-file and --key-file name the same file {}",
            outputs[0].display()
        );
    }
    for out in outputs {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!(
                "cannot write {}: the directory {} does not exist; create it first",
                out.display(),
                parent.display()
            );
        }
        if same_file(out, &ca.cert_path()) || same_file(out, &ca.key_path()) {
            bail!(
                "refusing to write {} over the CA's own files",
                out.display()
            );
        }
        if out.is_dir() {
            bail!("cannot write {}: it is a directory", out.display());
        }
    }
    Ok(())
}

/// Whether `a` and `b` may name the same file: they lead to one existing file, or name
/// the same directory and the same file name once case is set aside. On the file systems macOS and Windows use by default,
/// which ignore case, `rootca-key.pem` is the CA's `rootCA-key.pem`; refusing it on a
/// file system that tells them apart costs nothing.
fn same_file(a: &Path, b: &Path) -> bool {
    let parent = |p: &Path| {
        p.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let names_match = match (a.file_name(), b.file_name()) {
        (Some(x), Some(y)) => {
            x.to_string_lossy().to_lowercase() == y.to_string_lossy().to_lowercase()
        }
        _ => false,
    };
    // Two names that already lead to one file (on Windows, `rootCA-key.pem.` with its
    // trailing dot, or a short name such as `ROOTCA~1.PEM`).
    let one_file = same_file::is_same_file(a, b).unwrap_or(false);
    one_file || names_match && same_dir(&parent(a), &parent(b)).unwrap_or(a == b)
}

/// Whether two existing directories are one (by identity, whatever the path's case or
/// links); `None` when either cannot be read.
#[cfg(unix)]
fn same_dir(a: &Path, b: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let (x, y) = (fs::metadata(a).ok()?, fs::metadata(b).ok()?);
    Some(x.dev() == y.dev() && x.ino() == y.ino())
}

#[cfg(not(unix))]
fn same_dir(a: &Path, b: &Path) -> Option<bool> {
    let (x, y) = (fs::canonicalize(a).ok()?, fs::canonicalize(b).ok()?);
    Some(x.to_string_lossy().to_lowercase() == y.to_string_lossy().to_lowercase())
}

/// Writes a file through a temporary sibling and a rename, so a reader never sees half
/// a certificate and a failure leaves the old file as it was.
/// With the default names and a name-constrained CA: the request without the names
/// the CA may not vouch for (a public LAN address, say), each named on stderr, and the
/// default file names counted again. `None` when nothing changes.
fn permitted_defaults(ca: &Ca, issue: &IssueConfig) -> Option<IssueConfig> {
    let (kept, left_out) = ca.permitted(&issue.names);
    if !issue.defaults || left_out.is_empty() {
        return None;
    }
    for n in &left_out {
        eprintln!("rtcdev: {n} left out: the name-constrained CA can only vouch for local names");
    }
    let mut out = issue.clone();
    out.names = kept;
    let (old_cert, old_key, old_p12) = default_paths(&issue.names, issue.client);
    let (cert, key, p12) = default_paths(&out.names, issue.client);
    if out.cert_file == old_cert {
        out.cert_file = cert;
    }
    if out.key_file == old_key {
        out.key_file = key;
    }
    if out.p12_file.as_ref() == Some(&old_p12) {
        out.p12_file = Some(p12);
    }
    Some(out)
}

pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .context("the output path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.{:08x}.tmp",
        name.to_string_lossy(),
        rand::random::<u32>()
    ));
    let result = (|| -> std::io::Result<()> {
        super::ca::write_new(&tmp, data, mode)?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Prints a report as JSON or for people.
pub fn print(report: &CertReport, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.human())?;
    }
    Ok(())
}
