//! LAN address discovery and URL building.

use std::net::{IpAddr, Ipv4Addr};

use crate::cert::CertName;

/// The machine's addresses other devices on the network can reach: IPv4 and IPv6,
/// without loopback, unspecified and link-local ones (a phone cannot use a link-local
/// address in a URL). IPv4 first, each family in interface order, no repeats.
pub fn lan_addresses() -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = match local_ip_address::list_afinet_netifas() {
        Ok(list) => list.into_iter().map(|(_, ip)| ip).filter(is_lan).collect(),
        Err(e) => {
            tracing::warn!(%e, "cannot list network interfaces; only localhost names are used");
            Vec::new()
        }
    };
    let mut seen = Vec::new();
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs
}

/// The LAN addresses a device can reach a server on, given the address it listens on:
/// for an unspecified address every LAN address of its family (`[::]` takes IPv4 too,
/// `0.0.0.0` no IPv6), for a loopback address none, otherwise the address itself.
pub fn reachable(bind: IpAddr, lan: &[IpAddr]) -> Vec<IpAddr> {
    if bind.is_unspecified() {
        lan.iter()
            .copied()
            .filter(|ip| ip.is_ipv4() || bind.is_ipv6())
            .collect()
    } else if bind.is_loopback() {
        Vec::new()
    } else {
        vec![bind]
    }
}

/// The addresses to give out for a server listening on `bind`: a loopback address
/// first when clients on this machine can use one, then [`reachable`].
pub fn server_hosts(bind: IpAddr, lan: &[IpAddr]) -> Vec<IpAddr> {
    let mut hosts = match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        IpAddr::V6(v6) if v6.is_unspecified() => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ip if ip.is_loopback() => vec![ip],
        _ => Vec::new(),
    };
    hosts.extend(reachable(bind, lan));
    hosts
}

/// Whether an address is one a LAN peer could reach us on.
pub fn is_lan(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_unspecified() || v4.is_link_local()),
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || link_local || v6.is_multicast())
        }
    }
}

/// The names a certificate for local development covers when none are given:
/// localhost, the loopback addresses, the host name and `<host>.local` (mDNS), and every
/// LAN address.
pub fn default_cert_names() -> Vec<CertName> {
    cert_names_for(&lan_addresses())
}

/// [`default_cert_names`] for a given set of LAN addresses.
pub fn cert_names_for(lan: &[IpAddr]) -> Vec<CertName> {
    let host = crate::cert::ca::hostname();
    let mut inputs: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !host.is_empty() && host != "localhost" {
        inputs.push(host.clone());
        inputs.push(format!("{host}.local"));
    }
    inputs.extend(lan.iter().map(ToString::to_string));
    let mut names = Vec::new();
    for input in inputs {
        // A host name that is not a valid DNS name (spaces, say) is skipped, not fatal.
        if let Ok(name) = CertName::parse(&input)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// This machine's mDNS name, `<host>.local`, when its host name makes one (the
/// certificates rtcdev issues for local development carry it: [`cert_names_for`]).
pub fn mdns_name() -> Option<String> {
    let host = crate::cert::ca::hostname();
    if host.is_empty() || host == "localhost" {
        return None;
    }
    let name = format!("{host}.local");
    CertName::parse(&name).is_ok().then_some(name)
}

/// The host part of a URL for an address: IPv6 in brackets.
pub fn url_host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn reachable_follows_the_bind_address_and_its_family() {
        let lan = ips(&["192.168.1.20", "10.0.0.5", "2001:db8::7"]);
        assert_eq!(
            reachable("0.0.0.0".parse().unwrap(), &lan),
            ips(&["192.168.1.20", "10.0.0.5"])
        );
        assert_eq!(reachable("::".parse().unwrap(), &lan), lan);
        assert!(reachable("127.0.0.1".parse().unwrap(), &lan).is_empty());
        assert!(reachable("::1".parse().unwrap(), &lan).is_empty());
        assert_eq!(
            reachable("10.0.0.5".parse().unwrap(), &lan),
            ips(&["10.0.0.5"])
        );
    }

    #[test]
    fn server_hosts_put_a_loopback_address_first() {
        let lan = ips(&["192.168.1.20", "2001:db8::7"]);
        assert_eq!(
            server_hosts("0.0.0.0".parse().unwrap(), &lan),
            ips(&["127.0.0.1", "192.168.1.20"])
        );
        assert_eq!(
            server_hosts("::".parse().unwrap(), &lan),
            ips(&["127.0.0.1", "192.168.1.20", "2001:db8::7"])
        );
        assert_eq!(
            server_hosts("127.0.0.2".parse().unwrap(), &lan),
            ips(&["127.0.0.2"])
        );
        assert_eq!(
            server_hosts("192.168.1.20".parse().unwrap(), &lan),
            ips(&["192.168.1.20"])
        );
    }

    #[test]
    fn filters_addresses_phones_cannot_reach() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.2",
            "::1",
            "fe80::1",
            "::",
            "ff02::1",
        ] {
            assert!(!is_lan(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.168.1.20", "10.0.0.5", "2001:db8::5", "fd00::1"] {
            assert!(is_lan(&ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn default_names_start_with_localhost() {
        let names = default_cert_names();
        assert_eq!(names[0].to_string(), "localhost");
        assert!(names.iter().any(|n| n.to_string() == "::1"));
        // Loopback: exactly 127.0.0.1 and ::1, each once.
        let loopback: Vec<String> = names
            .iter()
            .filter(|n| matches!(n, CertName::Ip(ip) if ip.is_loopback()))
            .map(ToString::to_string)
            .collect();
        assert_eq!(loopback, vec!["127.0.0.1", "::1"]);
    }

    #[test]
    fn brackets_ipv6_hosts() {
        assert_eq!(url_host(&"10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(url_host(&"fd00::1".parse().unwrap()), "[fd00::1]");
    }
}
