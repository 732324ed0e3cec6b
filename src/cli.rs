//! Command-line definitions (clap), and their conversion into validated configs. No
//! other module sees clap types.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::cert::ca::{CaLocation, DEFAULT_LEAF_DAYS};
use crate::cert::command::{CertConfig, CertTask, IssueConfig};
use crate::cert::names::{default_paths, parse_names};
use crate::cert::trust::StoreKind;

/// Everything a local WebRTC call needs, in one binary.
#[derive(Debug, Parser)]
#[command(name = "rtcdev", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Directory of the local CA (rootCA.pem, rootCA-key.pem). Default: mkcert's CAROOT
    /// if set, else the platform data directory (~/.local/share/rtcdev on Linux).
    #[arg(long, global = true, env = "RTCDEV_CAROOT", value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Local CA and trusted certificates (mkcert-compatible).
    Cert(CertArgs),
}

/// `rtcdev cert`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  rtcdev cert                       certificate for localhost and every LAN address\n  rtcdev cert --install             trust the local CA in the system store and browsers\n  rtcdev cert example.test '*.example.test' 127.0.0.1\n  rtcdev cert --pkcs12 localhost    a .p12 bundle (password \"changeit\")"
)]
pub struct CertArgs {
    /// Names to cover: DNS names, IP addresses, *.wildcards, e-mail addresses, URIs.
    /// Default: localhost, 127.0.0.1, ::1, the host name, <host>.local and every LAN address.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Where to write the certificate (default ./<first-name>[+N].pem).
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,

    /// Where to write the private key (default ./<first-name>[+N]-key.pem).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Write a PKCS#12 bundle to FILE instead of PEM files.
    #[arg(long, value_name = "FILE")]
    pub p12_file: Option<PathBuf>,

    /// Write a PKCS#12 bundle (./<first-name>[+N].p12) instead of PEM files.
    #[arg(long)]
    pub pkcs12: bool,

    /// Issue a client-authentication certificate.
    #[arg(long)]
    pub client: bool,

    /// Leaf validity in days (825 is Apple's limit; WebTransport serverCertificateHashes needs <= 14).
    #[arg(long, default_value_t = DEFAULT_LEAF_DAYS, env = "RTCDEV_CERT_DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,

    /// Install the local CA in the trust stores (system, NSS); with names, then issue.
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,

    /// Remove the local CA from the trust stores (its files stay).
    #[arg(long)]
    pub uninstall: bool,

    /// Print the CA directory and exit.
    #[arg(long, conflicts_with_all = ["install", "uninstall"])]
    pub caroot: bool,

    /// Trust stores for --install/--uninstall, comma-separated: system, nss.
    #[arg(
        long,
        env = "RTCDEV_TRUST_STORES",
        value_name = "LIST",
        default_value = "system,nss"
    )]
    pub trust_stores: String,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl CertArgs {
    /// Validates the arguments into a config.
    pub fn into_config(self, ca_dir: Option<PathBuf>) -> Result<CertConfig> {
        let ca = CaLocation::resolve(ca_dir.as_deref())?;
        let stores = StoreKind::parse_list(&self.trust_stores)?;
        let wants_leaf = !self.names.is_empty()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.p12_file.is_some()
            || self.pkcs12;
        let issue = || -> Result<IssueConfig> {
            let names = if self.names.is_empty() {
                crate::net::default_cert_names()
            } else {
                parse_names(&self.names)?
            };
            let (cert, key, p12) = default_paths(&names, self.client);
            let p12_file = match (&self.p12_file, self.pkcs12) {
                (Some(f), _) => Some(f.clone()),
                (None, true) => Some(p12),
                (None, false) => None,
            };
            Ok(IssueConfig {
                names,
                days: self.days,
                client: self.client,
                cert_file: self.cert_file.clone().unwrap_or(cert),
                key_file: self.key_file.clone().unwrap_or(key),
                p12_file,
            })
        };
        let task = if self.caroot {
            CertTask::Caroot
        } else if self.uninstall {
            CertTask::Uninstall
        } else if self.install {
            CertTask::Install(if wants_leaf { Some(issue()?) } else { None })
        } else {
            CertTask::Issue(issue()?)
        };
        Ok(CertConfig { ca, task, stores })
    }
}
