//! Which peers the TURN server relays to: never into the host it runs on (loopback, its
//! own addresses on ports it is not relaying) or to addresses that are no one's
//! (unspecified, link-local, multicast, broadcast), unless the user loosens it, as
//! coturn's `--allow-loopback-peers`, `denied-peer-ip` and `allowed-peer-ip` do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

/// The peer rules of one server.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Relay to loopback peers too (`--allow-loopback-peers`).
    pub allow_loopback: bool,
    /// Always allowed, before any other rule (`--allow-peer`).
    pub allow: Vec<IpNet>,
    /// Refused (`--deny-peer`).
    pub deny: Vec<IpNet>,
    /// This host's addresses: peers there are refused but on the server's own relay
    /// ports (one client's relayed address talking to another's).
    pub own: Vec<IpAddr>,
}

/// Why a peer is refused, in the words of the log line and the 403's reason.
pub type Refused = &'static str;

impl PeerPolicy {
    /// Whether the server may relay to `peer`; `is_relay_port` tells whether a port of
    /// this host is one of the server's relayed addresses.
    pub fn check(
        &self,
        peer: SocketAddr,
        is_relay_port: impl Fn(u16) -> bool,
    ) -> Result<(), Refused> {
        // An IPv4-mapped address (`::ffff:127.0.0.1`) meets the IPv4 rules.
        let ip = peer.ip().to_canonical();
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return Err("denied by --deny-peer");
        }
        if ip.is_unspecified() || is_this_network(ip) {
            return Err("unspecified address");
        }
        if ip.is_loopback() {
            return if self.allow_loopback {
                Ok(())
            } else {
                Err("loopback address (allow with --allow-loopback-peers)")
            };
        }
        if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Err("multicast or broadcast address");
        }
        if is_link_local(ip) {
            return Err("link-local address (allow with --allow-peer)");
        }
        if self.own.iter().any(|o| o.to_canonical() == ip) && !is_relay_port(peer.port()) {
            return Err("this host, not one of its relayed addresses (allow with --allow-peer)");
        }
        Ok(())
    }
}

fn is_this_network(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 0)
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Parses a CIDR block or a single address (`10.0.0.0/8`, `192.168.1.5`, `fd00::/8`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR block like 10.0.0.0/8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn policy() -> PeerPolicy {
        PeerPolicy {
            own: vec!["192.168.1.20".parse().unwrap()],
            ..PeerPolicy::default()
        }
    }

    #[test]
    fn refuses_the_host_and_no_ones_addresses_by_default() {
        let p = policy();
        let none = |_| false;
        for refused in [
            "127.0.0.1:53",
            "127.1.2.3:8125",
            "[::1]:53",
            "[::ffff:127.0.0.1]:53",
            "0.0.0.0:80",
            "[::]:80",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "224.0.0.251:5353",
            "255.255.255.255:9",
            "192.168.1.20:22",
            "[::ffff:192.168.1.20]:22",
        ] {
            assert!(p.check(addr(refused), none).is_err(), "{refused}");
        }
        for allowed in ["192.168.1.30:50000", "10.99.0.2:40000", "203.0.113.5:3478"] {
            assert!(p.check(addr(allowed), none).is_ok(), "{allowed}");
        }
        assert!(
            p.check(addr("192.168.1.20:50001"), |port| port == 50001)
                .is_ok(),
            "another client's relayed address on this host"
        );
    }

    #[test]
    fn flags_loosen_and_tighten() {
        let mut p = policy();
        p.allow_loopback = true;
        assert!(p.check(addr("127.0.0.1:53"), |_| false).is_ok());
        p.deny = vec![parse_net("10.0.0.0/8").unwrap()];
        assert_eq!(
            p.check(addr("10.1.2.3:1"), |_| false),
            Err("denied by --deny-peer")
        );
        p.allow = vec![
            parse_net("10.1.2.3").unwrap(),
            parse_net("169.254.0.0/16").unwrap(),
        ];
        assert!(p.check(addr("10.1.2.3:1"), |_| false).is_ok(), "allow wins");
        assert!(p.check(addr("169.254.1.1:1"), |_| false).is_ok());
        assert!(parse_net("nonsense").is_err());
    }
}
