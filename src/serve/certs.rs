//! The server certificate of `rtcdev serve`: issued by the local CA for localhost and
//! the LAN addresses, cached in the CA directory, reused while it covers the same names
//! and has [`MIN_REMAINING`] left.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use crate::cert::ca::{Ca, LeafRequest};
use crate::cert::names::CertName;
use crate::cert::tls;

/// File in the CA directory holding the cached leaf and its key (one file, so a
/// concurrent writer can never pair one run's certificate with another's key).
pub const CACHE_FILE: &str = "rtcdev-serve-leaf.pem";
/// A cached leaf is reissued when it has less than this left.
pub const MIN_REMAINING: Duration = Duration::days(30);
/// Validity of the leaves `serve` issues.
pub const SERVE_LEAF_DAYS: u32 = crate::cert::ca::DEFAULT_LEAF_DAYS;

/// Where the leaf came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafOrigin {
    /// Reused from the cache.
    Cached,
    /// Issued now.
    Issued,
}

/// The leaf for `names`: the cached one if it still fits, else a new one (cached).
pub fn leaf_for(ca: &Ca, names: &[CertName]) -> Result<(CertifiedKey, LeafOrigin)> {
    // A name-constrained CA cannot vouch for a public address (a global IPv6 one, say):
    // that address is left out, with a note, rather than failing the whole certificate.
    let (kept, left_out) = ca.permitted(names);
    for n in &left_out {
        tracing::warn!(name = %n, "left out of the certificate: the local CA is name-constrained to local names");
    }
    let names = &kept[..];
    let path = cache_path(ca);
    if let Some(key) = cached(ca, names, &path) {
        return Ok((key, LeafOrigin::Cached));
    }
    let leaf = ca.issue(&LeafRequest {
        names: names.to_vec(),
        days: SERVE_LEAF_DAYS,
        client: false,
    })?;
    let pem = format!("{}{}", leaf.cert_pem, leaf.key_pem);
    if let Err(e) = crate::cert::command::write_atomic(&path, pem.as_bytes(), 0o600) {
        // A read-only CA directory costs a new leaf per start, nothing more.
        tracing::warn!(%e, "cannot cache the server certificate");
    }
    let key = tls::certified_key_from_pem(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        "the issued leaf",
    )?;
    Ok((key, LeafOrigin::Issued))
}

/// `ips` with the addresses `ca` may vouch for first (the links point at the first one),
/// and the ones it may not (a public address under a name-constrained CA): those are in
/// no certificate it issues, and a browser refuses HTTPS on them.
pub fn covered_first(ca: &Ca, mut ips: Vec<IpAddr>) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let uncovered: Vec<IpAddr> = ips
        .iter()
        .copied()
        .filter(|ip| {
            CertName::parse(&ip.to_string()).is_ok_and(|n| !ca.permitted(&[n]).1.is_empty())
        })
        .collect();
    ips.sort_by_key(|ip| uncovered.contains(ip));
    (ips, uncovered)
}

fn cache_path(ca: &Ca) -> PathBuf {
    ca.dir.join(CACHE_FILE)
}

fn cached(ca: &Ca, names: &[CertName], path: &PathBuf) -> Option<CertifiedKey> {
    let pem = std::fs::read(path).ok()?;
    let der = crate::cert::ca::first_pem_cert(std::str::from_utf8(&pem).ok()?)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca.cert_der).ok()?;
    // Issued by this CA (not one that was replaced), still long enough valid.
    cert.verify_signature(Some(ca_cert.public_key())).ok()?;
    let left = cert.validity().not_after.to_datetime() - OffsetDateTime::now_utc();
    if left < MIN_REMAINING {
        return None;
    }
    let wanted: BTreeSet<String> = names.iter().map(ToString::to_string).collect();
    if san_strings(&cert)? != wanted {
        return None;
    }
    tls::certified_key_from_pem(&pem, &pem, "the cached leaf")
        .context("cached leaf unusable")
        .map_err(|e| tracing::debug!(%e, "reissuing"))
        .ok()
}

fn san_strings(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<BTreeSet<String>> {
    use x509_parser::extensions::GeneralName;
    let san = cert.subject_alternative_name().ok()??;
    let mut out = BTreeSet::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => {
                out.insert(d.to_string());
            }
            GeneralName::IPAddress(bytes) => {
                let ip: std::net::IpAddr = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok()?.into(),
                    16 => <[u8; 16]>::try_from(*bytes).ok()?.into(),
                    _ => return None,
                };
                out.insert(ip.to_string());
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<CertName> {
        list.iter().map(|n| CertName::parse(n).unwrap()).collect()
    }

    fn leaf_der(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].as_ref().to_vec()
    }

    /// The cache is reused while it covers the same names with 30+ days left, and
    /// reissued when the names change, when it runs short, or when it is corrupt.
    #[test]
    fn reused_while_it_fits_reissued_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::load_or_create(dir.path()).unwrap();
        let a = names(&["localhost", "127.0.0.1", "10.0.0.5"]);

        let (first, origin) = leaf_for(&ca, &a).unwrap();
        assert_eq!(origin, LeafOrigin::Issued);
        let (again, origin) = leaf_for(&ca, &a).unwrap();
        assert_eq!(origin, LeafOrigin::Cached);
        assert_eq!(leaf_der(&again), leaf_der(&first), "the same certificate");

        // New names (a new network): a new certificate, then that one is cached.
        let b = names(&["localhost", "127.0.0.1", "10.0.0.6"]);
        let (moved, origin) = leaf_for(&ca, &b).unwrap();
        assert_eq!(origin, LeafOrigin::Issued);
        assert_ne!(leaf_der(&moved), leaf_der(&first));
        assert_eq!(leaf_for(&ca, &b).unwrap().1, LeafOrigin::Cached);

        // Under 30 days left: renewed.
        let short = ca
            .issue(&LeafRequest {
                names: b.clone(),
                days: 20,
                client: false,
            })
            .unwrap();
        std::fs::write(
            cache_path(&ca),
            format!("{}{}", short.cert_pem, short.key_pem),
        )
        .unwrap();
        let (renewed, origin) = leaf_for(&ca, &b).unwrap();
        assert_eq!(origin, LeafOrigin::Issued);
        assert_ne!(leaf_der(&renewed), short.cert_der.as_ref());

        // A corrupt cache file is replaced, not fatal.
        std::fs::write(cache_path(&ca), "not a certificate").unwrap();
        assert_eq!(leaf_for(&ca, &b).unwrap().1, LeafOrigin::Issued);
    }
}
