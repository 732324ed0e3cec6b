//! Name constraints: a CA that can only vouch for names used in local development, so
//! whoever gets its key cannot impersonate public sites to the devices that trust it.
//! New CAs carry them unless created with `cert --unconstrained-ca`; an existing CA
//! (rtcdev's or mkcert's) is read as it is, constrained or not.

use std::net::IpAddr;

use ipnet::IpNet;
use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use x509_parser::extensions::GeneralName;

use super::names::CertName;

/// DNS names (and their subdomains) a new CA may vouch for, besides the host name.
pub const LOCAL_DNS: &[&str] = &["localhost", "local", "test", "internal", "home.arpa"];
/// Address ranges a new CA may vouch for: private, loopback, link-local and CGNAT IPv4,
/// IPv6 loopback, unique local and link-local.
pub const LOCAL_NETS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Whether `name` is itself on the Public Suffix List (a top-level domain, or a suffix
/// such as `co.uk` or `github.io` under which anyone may register names), or every name
/// under it is (TLDs the list gives only as `*.np`), in any case.
pub fn is_public_suffix(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let listed = |n: &str| psl::suffix(n.as_bytes()).is_some_and(|s| s.is_known() && s == n);
    !name.is_empty() && (listed(&name) || listed(&format!("x.{name}")))
}

/// The names a constrained CA may vouch for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Constraints {
    /// DNS subtrees (a name and its subdomains); empty: DNS names unconstrained.
    pub dns: Vec<String>,
    /// IP ranges; empty: addresses unconstrained.
    pub ips: Vec<IpNet>,
    /// DNS subtrees excluded (a CA made elsewhere may have them; rtcdev's have none).
    pub excluded_dns: Vec<String>,
    /// IP ranges excluded.
    pub excluded_ips: Vec<IpNet>,
}

impl Constraints {
    /// What a new CA gets: [`LOCAL_DNS`], the host name, [`LOCAL_NETS`].
    pub fn local(hostname: &str) -> Self {
        let mut dns: Vec<String> = LOCAL_DNS.iter().map(|s| s.to_string()).collect();
        let host = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        // A subtree covers every name under it: a host named after a public suffix
        // (`dev`, `app`, `cloud`, or `github.io`) would let the key vouch for public sites.
        if valid && !dns.iter().any(|d| dns_within(&host, d)) && !is_public_suffix(&host) {
            dns.push(host);
        }
        let ips = LOCAL_NETS.iter().filter_map(|n| n.parse().ok()).collect();
        Constraints {
            dns,
            ips,
            ..Constraints::default()
        }
    }

    /// The extension for a new CA certificate.
    pub fn to_rcgen(&self) -> NameConstraints {
        let mut permitted: Vec<GeneralSubtree> = self
            .dns
            .iter()
            .map(|d| GeneralSubtree::DnsName(d.clone()))
            .collect();
        permitted.extend(self.ips.iter().map(|n| {
            GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(n.addr(), n.prefix_len()))
        }));
        NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: Vec::new(),
        }
    }

    /// The permitted subtrees of a parsed CA certificate, if it has name constraints.
    pub fn from_x509(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Self> {
        let ext = cert.name_constraints().ok().flatten()?;
        let mut c = Constraints::default();
        let lists = [
            (&ext.value.permitted_subtrees, false),
            (&ext.value.excluded_subtrees, true),
        ];
        for (subtrees, excluded) in lists {
            for sub in subtrees.iter().flatten() {
                match sub.base {
                    GeneralName::DNSName(d) => {
                        let d = d.trim_start_matches('.').to_ascii_lowercase();
                        if excluded {
                            &mut c.excluded_dns
                        } else {
                            &mut c.dns
                        }
                        .push(d);
                    }
                    GeneralName::IPAddress(b) => {
                        if let Some(net) = net_from_bytes(b) {
                            if excluded {
                                &mut c.excluded_ips
                            } else {
                                &mut c.ips
                            }
                            .push(net);
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(c)
    }

    /// Whether a certificate for `name` would be valid under these constraints. Each
    /// type of name is constrained by its own subtrees only (RFC 5280): a CA that lists
    /// only IP ranges leaves DNS names free, and e-mail addresses and URIs pass a CA that
    /// names only DNS and IP subtrees. An excluded subtree wins over a permitted one.
    pub fn permits(&self, name: &CertName) -> bool {
        match name {
            CertName::Dns(d) => {
                let d = d.trim_start_matches("*.");
                (self.dns.is_empty() || self.dns.iter().any(|c| dns_within(d, c)))
                    && !self.excluded_dns.iter().any(|c| dns_within(d, c))
            }
            CertName::Ip(ip) => {
                let ip = ip.to_canonical();
                (self.ips.is_empty() || self.ips.iter().any(|n| n.contains(&ip)))
                    && !self.excluded_ips.iter().any(|n| n.contains(&ip))
            }
            CertName::Email(_) | CertName::Uri(_) => true,
        }
    }

    /// One line for the output.
    pub fn describe(&self) -> String {
        let list = |dns: &[String], ips: &[IpNet], none: &str| {
            let mut all: Vec<String> = dns.to_vec();
            all.extend(ips.iter().map(|n| n.to_string()));
            if all.is_empty() {
                none.to_string()
            } else {
                all.join(", ")
            }
        };
        let mut text = match (self.dns.is_empty(), self.ips.is_empty()) {
            (false, false) => format!("{}; {}", list(&self.dns, &[], ""), list(&[], &self.ips, "")),
            (false, true) => format!("{}; any address", list(&self.dns, &[], "")),
            (true, false) => format!("any DNS name; {}", list(&[], &self.ips, "")),
            (true, true) => "any name".to_string(),
        };
        if !self.excluded_dns.is_empty() || !self.excluded_ips.is_empty() {
            text.push_str(&format!(
                ", except {}",
                list(&self.excluded_dns, &self.excluded_ips, "")
            ));
        }
        text
    }
}

/// Whether `name` is `constraint` or one of its subdomains.
fn dns_within(name: &str, constraint: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let c = constraint
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    name == c || name.ends_with(&format!(".{c}"))
}

fn net_from_bytes(b: &[u8]) -> Option<IpNet> {
    let (addr, mask): (IpAddr, &[u8]) = match b.len() {
        8 => (IpAddr::from(<[u8; 4]>::try_from(&b[..4]).ok()?), &b[4..]),
        32 => (IpAddr::from(<[u8; 16]>::try_from(&b[..16]).ok()?), &b[16..]),
        _ => return None,
    };
    let prefix = mask.iter().map(|m| m.count_ones()).sum::<u32>() as u8;
    IpNet::new(addr, prefix).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> CertName {
        CertName::parse(s).unwrap()
    }

    #[test]
    fn local_names_and_ranges_only() {
        let c = Constraints::local("Laptop");
        for ok in [
            "localhost",
            "app.localhost",
            "laptop",
            "laptop.local",
            "printer.home.arpa",
            "api.test",
            "*.dev.test",
            "svc.internal",
            "127.0.0.1",
            "::1",
            "192.168.1.20",
            "10.99.0.2",
            "172.31.255.1",
            "100.64.0.1",
            "fd00::5",
            "fe80::1",
            "me@example.com",
        ] {
            assert!(c.permits(&n(ok)), "{ok}");
        }
        for bad in [
            "example.com",
            "google.com",
            "localhost.evil.com",
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "testing",
        ] {
            assert!(!c.permits(&n(bad)), "{bad}");
        }
    }

    /// A CA made elsewhere: each type of name is constrained by its own subtrees, and
    /// excluded subtrees hold.
    #[test]
    fn each_type_of_name_by_its_own_subtrees_and_exclusions_hold() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                "10.0.0.0".parse().unwrap(),
                8,
            ))],
            excluded_subtrees: vec![
                GeneralSubtree::DnsName("corp.example".into()),
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                    "10.9.0.0".parse().unwrap(),
                    16,
                )),
            ],
        });
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let c = Constraints::from_x509(&cert).unwrap();
        for ok in ["app.example", "10.1.2.3", "svc.local"] {
            assert!(c.permits(&n(ok)), "{ok}");
        }
        for bad in [
            "corp.example",
            "git.corp.example",
            "10.9.1.1",
            "192.168.1.1",
        ] {
            assert!(!c.permits(&n(bad)), "{bad}");
        }
        assert_eq!(
            c.describe(),
            "any DNS name; 10.0.0.0/8, except corp.example, 10.9.0.0/16"
        );
    }

    /// A host named after a public suffix is left out: its subtree would cover every
    /// site under it.
    #[test]
    fn a_host_named_after_a_public_suffix_is_not_a_subtree() {
        for host in [
            "dev",
            "app",
            "cloud",
            "Android",
            "github.io",
            "co.uk",
            "np",
            "ck",
        ] {
            let c = Constraints::local(host);
            assert_eq!(c, Constraints::local(""), "{host}");
            for bad in [
                "google.dev",
                "x.app",
                "evil.github.io",
                "bank.co.uk",
                "www.gov.np",
            ] {
                assert!(!c.permits(&n(bad)), "{host}: {bad}");
            }
        }
        assert!(is_public_suffix("DEV.") && !is_public_suffix("laptop"));
        for host in ["laptop", "thinkpad-7", "build.corp.example"] {
            assert!(
                Constraints::local(host).dns.contains(&host.to_string()),
                "{host}"
            );
        }
    }
}
