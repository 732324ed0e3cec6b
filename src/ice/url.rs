//! STUN and TURN server URLs: `stun:`, `stuns:`, `turn:` and `turns:` (RFC 7064, RFC 7065).
//!
//! [`IceUrl::parse`] takes a URL as a browser's `iceServers` list or the command line gives
//! it and splits it into scheme, host, port and transport, filling in the defaults (3478,
//! 5349 for the TLS schemes; UDP, TCP for `turns:`). Errors say what to write instead.

use anyhow::{Context, Result, bail};

/// Port of a `stun:` or `turn:` URL that names none (RFC 7064, RFC 7065).
const DEFAULT_PORT: u16 = 3478;
/// Port of a `stuns:` or `turns:` URL that names none.
const DEFAULT_TLS_PORT: u16 = 5349;

/// A `stun:`/`stuns:`/`turn:`/`turns:` URL split into its parts, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceUrl {
    /// The URL as given.
    pub raw: String,
    /// stun, stuns, turn or turns.
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// udp or tcp.
    pub transport: String,
}

impl IceUrl {
    /// Parses an ICE server URL (RFC 7064 / 7065): `SCHEME:HOST[:PORT][?transport=udp|tcp]`,
    /// an IPv6 host in brackets. Anything else is an error that says what to write.
    pub fn parse(raw: &str) -> Result<Self> {
        let (scheme, rest) = raw.split_once(':').with_context(|| {
            format!("{raw:?} is not a STUN/TURN URL; write stun:HOST:PORT or turn:HOST:PORT")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "stun" | "stuns" | "turn" | "turns") {
            bail!("{raw:?}: the scheme must be stun:, stuns:, turn: or turns: (not {scheme}:)");
        }
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        if hostport.starts_with("//") {
            bail!("{raw:?}: no // after the scheme; write {scheme}:HOST:PORT");
        }
        let (host, port) = if let Some(end) = hostport.strip_prefix('[').and_then(|h| h.find(']')) {
            // `end` indexes the text after '[', so the ']' is at `end + 1` in `hostport`.
            let host = &hostport[1..=end];
            let after = &hostport[end + 2..];
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            bail!("{raw:?}: no host");
        }
        let default_port = if scheme.ends_with('s') {
            DEFAULT_TLS_PORT
        } else {
            DEFAULT_PORT
        };
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .with_context(|| format!("{raw:?}: {p:?} is not a port (1-65535)"))?,
        };
        let mut transport = if scheme == "turns" {
            "tcp".to_string()
        } else {
            "udp".to_string()
        };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("transport", t)) if t == "udp" || t == "tcp" => transport = t.to_string(),
                _ => bail!(
                    "{raw:?}: unknown parameter {kv:?}; only ?transport=udp or ?transport=tcp"
                ),
            }
        }
        Ok(IceUrl {
            raw: raw.to_string(),
            scheme,
            host,
            port,
            transport,
        })
    }

    /// Whether this names a TURN server (`turn:` or `turns:`), which is allocated on,
    /// rather than a STUN server, which is only asked for a mapped address.
    pub fn is_turn(&self) -> bool {
        self.scheme.starts_with("turn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ice_urls() {
        let u = IceUrl::parse("turn:127.0.0.1:3478?transport=udp").unwrap();
        assert_eq!(
            (
                u.scheme.as_str(),
                u.host.as_str(),
                u.port,
                u.transport.as_str()
            ),
            ("turn", "127.0.0.1", 3478, "udp")
        );
        assert_eq!(IceUrl::parse("stun:example.org").unwrap().port, 3478);
        assert_eq!(IceUrl::parse("turns:example.org").unwrap().port, 5349);
        assert_eq!(IceUrl::parse("turns:example.org").unwrap().transport, "tcp");
        assert_eq!(IceUrl::parse("stun:[::1]:3479").unwrap().host, "::1");
        assert_eq!(IceUrl::parse("stun:[::1]:3479").unwrap().port, 3479);
        for bad in [
            "stun:",
            "turn:host:99999",
            "http://x",
            "turn:host:0",
            "stun://host",
            "turn:h?transport=sctp",
            "nocolon",
        ] {
            assert!(IceUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tells_turn_from_stun() {
        assert!(IceUrl::parse("turn:h").unwrap().is_turn());
        assert!(IceUrl::parse("turns:h").unwrap().is_turn());
        assert!(!IceUrl::parse("stun:h").unwrap().is_turn());
        assert!(!IceUrl::parse("stuns:h").unwrap().is_turn());
    }
}
