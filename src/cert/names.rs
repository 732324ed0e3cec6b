//! Parsing and validating the names a leaf certificate covers, and naming its files.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// Longest DNS name accepted (RFC 1035 limit on the presentation form).
const MAX_DNS_NAME_LEN: usize = 253;
/// Longest DNS label accepted (RFC 1035).
const MAX_DNS_LABEL_LEN: usize = 63;

/// One subject alternative name of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertName {
    /// A DNS name, lower-cased, possibly with a leading `*.` wildcard label.
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// An e-mail address (for S/MIME client certificates, as mkcert allows).
    Email(String),
    /// A URI such as `spiffe://example/service`.
    Uri(String),
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid certificate name {name:?}: {reason}")]
pub struct NameError {
    /// The name as the user gave it.
    pub name: String,
    /// What is wrong with it, in plain words.
    pub reason: String,
}

impl CertName {
    /// Parses a name as a user types it on the command line: an IP address, an e-mail
    /// address, a URI, or a DNS name (wildcards allowed as the first label only).
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let err = |reason: &str| NameError {
            name: input.to_string(),
            reason: reason.to_string(),
        };
        let name = input.trim();
        if name.is_empty() {
            return Err(err("the name is empty"));
        }
        // `[::1]` is how people write IPv6 hosts in URLs; accept it.
        let unbracketed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(CertName::Ip(ip));
        }
        if name.contains("://") {
            return if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(err("a URI may not contain spaces"))
            } else {
                Ok(CertName::Uri(name.to_string()))
            };
        }
        if let Some((local, domain)) = name.split_once('@') {
            if local.is_empty() || local.chars().any(|c| c.is_whitespace() || c == '@') {
                return Err(err("not a valid e-mail address"));
            }
            validate_dns(domain, false).map_err(|r| err(&r))?;
            return Ok(CertName::Email(format!(
                "{local}@{}",
                domain.to_ascii_lowercase()
            )));
        }
        if name.contains(':') {
            return Err(err("not a valid IPv6 address"));
        }
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        validate_dns(&lower, true).map_err(|r| err(&r))?;
        Ok(CertName::Dns(lower))
    }

    /// Whether this is a wildcard DNS name (`*.example.test`).
    pub fn is_wildcard(&self) -> bool {
        matches!(self, CertName::Dns(d) if d.starts_with("*."))
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertName::Dns(d) => f.write_str(d),
            CertName::Ip(ip) => write!(f, "{ip}"),
            CertName::Email(e) => f.write_str(e),
            CertName::Uri(u) => f.write_str(u),
        }
    }
}

fn validate_dns(name: &str, allow_wildcard: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_DNS_NAME_LEN {
        return Err(format!(
            "a DNS name is at most {MAX_DNS_NAME_LEN} characters"
        ));
    }
    if !name.is_ascii() {
        return Err("use the punycode (xn--) form of international names".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    // Something like 999.1.1.1 is a mistyped IP address, never a host name.
    if labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("not a valid IP address".into());
    }
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return Err("a DNS name may not have an empty label (\"..\" or a leading dot)".into());
        }
        if *label == "*" {
            if i != 0 || !allow_wildcard {
                return Err(
                    "a wildcard is allowed only as the whole first label (*.example.test)".into(),
                );
            }
            if labels.len() < 2 {
                return Err("a wildcard needs a domain under it (*.example.test)".into());
            }
            continue;
        }
        if label.len() > MAX_DNS_LABEL_LEN {
            return Err(format!(
                "a DNS label is at most {MAX_DNS_LABEL_LEN} characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a DNS name may hold only letters, digits, '-', '_' and '.'".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a DNS label may not start or end with '-'".into());
        }
    }
    Ok(())
}

/// Parses every name, failing on the first invalid one, and drops repeats.
pub fn parse_names<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<CertName>, NameError> {
    let mut out: Vec<CertName> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = CertName::parse(input.as_ref())?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The file stem mkcert would use for these names: the first name with `:` as `_` and
/// `*` as `_wildcard`, then `+N` for N further names, then `-client` for client
/// certificates. Keeping mkcert's scheme means scripts written for it find our files.
pub fn file_stem(names: &[CertName], client: bool) -> String {
    let first = names
        .first()
        .map(|n| n.to_string())
        .unwrap_or_else(|| "cert".into());
    let mut stem = first.replace(':', "_").replace('*', "_wildcard");
    // A URI would put slashes in a file name.
    stem = stem.replace('/', "_");
    if names.len() > 1 {
        stem.push_str(&format!("+{}", names.len() - 1));
    }
    if client {
        stem.push_str("-client");
    }
    stem
}

/// Default output paths (in the current directory) for a certificate, its key and a
/// PKCS#12 bundle, named as mkcert names them.
pub fn default_paths(names: &[CertName], client: bool) -> (PathBuf, PathBuf, PathBuf) {
    let stem = file_stem(names, client);
    (
        PathBuf::from(format!("./{stem}.pem")),
        PathBuf::from(format!("./{stem}-key.pem")),
        PathBuf::from(format!("./{stem}.p12")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            CertName::parse("LocalHost").unwrap(),
            CertName::Dns("localhost".into())
        );
        assert_eq!(
            CertName::parse("127.0.0.1").unwrap(),
            CertName::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            CertName::parse("::1").unwrap(),
            CertName::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            CertName::parse("[fe80::1]").unwrap(),
            CertName::Ip("fe80::1".parse().unwrap())
        );
        assert_eq!(
            CertName::parse("*.example.test").unwrap(),
            CertName::Dns("*.example.test".into())
        );
        assert_eq!(
            CertName::parse("me@Example.test").unwrap(),
            CertName::Email("me@example.test".into())
        );
        assert_eq!(
            CertName::parse("spiffe://x/y").unwrap(),
            CertName::Uri("spiffe://x/y".into())
        );
        assert_eq!(
            CertName::parse("host.local.").unwrap(),
            CertName::Dns("host.local".into())
        );
        assert!(CertName::parse("*.example.test").unwrap().is_wildcard());
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        for (bad, why) in [
            ("bad..name", "empty label"),
            ("999.1.1.1", "not a valid IP address"),
            ("1.2.3", "not a valid IP address"),
            ("", "empty"),
            ("a b", "only letters"),
            ("foo.*.test", "wildcard"),
            ("*", "wildcard needs"),
            ("-x.test", "start or end"),
            ("ex/ample", "only letters"),
            ("fe80::zz", "IPv6"),
            ("bücher.test", "punycode"),
        ] {
            let err = CertName::parse(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
        let long_label = format!("{}.test", "a".repeat(64));
        assert!(CertName::parse(&long_label).is_err());
    }

    #[test]
    fn names_files_like_mkcert() {
        let one = parse_names(&["localhost"]).unwrap();
        assert_eq!(file_stem(&one, false), "localhost");
        let three = parse_names(&["example.test", "localhost", "127.0.0.1"]).unwrap();
        assert_eq!(file_stem(&three, false), "example.test+2");
        let wild = parse_names(&["*.example.test"]).unwrap();
        assert_eq!(file_stem(&wild, true), "_wildcard.example.test-client");
        let v6 = parse_names(&["::1"]).unwrap();
        assert_eq!(file_stem(&v6, false), "__1");
        let (c, k, p) = default_paths(&three, false);
        assert_eq!(c, PathBuf::from("./example.test+2.pem"));
        assert_eq!(k, PathBuf::from("./example.test+2-key.pem"));
        assert_eq!(p, PathBuf::from("./example.test+2.p12"));
    }

    #[test]
    fn drops_repeated_names() {
        let names = parse_names(&["localhost", "LOCALHOST", "127.0.0.1"]).unwrap();
        assert_eq!(names.len(), 2);
    }
}
