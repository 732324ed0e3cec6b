//! What `serve` prints at start: the URLs (or them as JSON), the QR code for a phone,
//! the CA and its fingerprint.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

use super::{AppState, Content, QrMode, ServeConfig};
use crate::net;

/// The URLs `serve` prints (and `--json` gives).
#[derive(Debug, Clone, Serialize)]
pub struct Urls {
    /// On this machine.
    pub local: Vec<String>,
    /// On the LAN.
    pub network: Vec<String>,
    /// The room.
    pub room: String,
    /// The room on the best address.
    pub room_url: String,
    /// The link the QR code carries.
    pub phone_url: String,
    /// LAN addresses the certificate leaves out (public ones, under a name-constrained
    /// CA): browsers refuse HTTPS there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_in_certificate: Vec<IpAddr>,
    /// The addresses of `network`, in its order.
    #[serde(skip)]
    network_ips: Vec<IpAddr>,
    #[serde(skip)]
    port: u16,
    /// The local CA certificate, if rtcdev's CA is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Its SHA-256 fingerprint, as openssl prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
}

pub(super) fn urls(addr: SocketAddr, state: &AppState, uncovered: &[IpAddr]) -> Urls {
    let port = addr.port();
    let (local_hosts, lan) = if addr.ip().is_unspecified() {
        (vec!["localhost".to_string()], state.lan())
    } else if addr.ip().is_loopback() {
        (vec![net::url_host(&addr.ip())], Vec::new())
    } else {
        (Vec::new(), vec![addr.ip()])
    };
    let local: Vec<String> = local_hosts
        .iter()
        .map(|h| format!("https://{h}:{port}/"))
        .collect();
    let network: Vec<String> = lan
        .iter()
        .map(|ip| format!("https://{}:{port}/", net::url_host(ip)))
        .collect();
    let room = state.room().to_string();
    // A LAN address the certificate covers, else this machine (a browser refuses HTTPS
    // on the others).
    let covered = lan
        .iter()
        .zip(&network)
        .find(|(ip, _)| !uncovered.contains(ip))
        .map(|(_, url)| url);
    let base = covered
        .or(local.first())
        .or(network.first())
        .cloned()
        .unwrap_or_default();
    Urls {
        room_url: format!("{base}?room={room}"),
        phone_url: state.phone_link(&room),
        room,
        local,
        network,
        not_in_certificate: uncovered.to_vec(),
        network_ips: lan,
        port,
        ca_file: state.ca().map(|c| c.path.clone()),
        ca_fingerprint: state
            .ca()
            .map(|c| crate::cert::ca::fingerprint_sha256(&c.der)),
    }
}

/// The banner; `phone`: a phone on the LAN has a link ([`AppState::phone_host`]).
pub(super) fn banner(u: &Urls, config: &ServeConfig, phone: bool) -> String {
    if config.json {
        return serde_json::to_string(u).unwrap_or_default() + "\n";
    }
    let mut t = format!("\n  rtcdev serve v{}\n\n", env!("CARGO_PKG_VERSION"));
    for l in &u.local {
        t.push_str(&format!("  ➜  Local:   {l}\n"));
    }
    for ip in &u.network_ips {
        t.push_str(&network_line(ip, u.port, &u.not_in_certificate));
    }
    t.push_str(&format!("  ➜  Room:    {}\n", u.room_url));
    let has_lan = !u.network_ips.is_empty();
    t.push_str(&phone_line(&u.phone_url, phone, has_lan));
    if !config.quiet {
        t.push_str(&uncovered_note(&u.not_in_certificate, u.port));
        t.push_str(&qr_block(&u.phone_url, config.qr, phone, has_lan));
    }
    if let (Content::Proxy(p), false) = (&config.content, config.quiet) {
        t.push_str(&format!(
            "\n  Proxying to {} (--proxy): it is now reachable from the LAN through rtcdev.\n  \
             It sees each client's address (X-Forwarded-For) and Host; for host names other than\n  \
             IPs and localhost, vite needs server.allowedHosts (webpack-dev-server: allowedHosts).\n",
            p.upstream()
        ));
    }
    if let (Some(ca), false) = (&u.ca_file, config.quiet) {
        t.push_str(&format!(
            "\n  Certificate by the local CA {} (trust it here: rtcdev cert --install)\n",
            ca.display()
        ));
        if let Some(fp) = &u.ca_fingerprint {
            t.push_str(&format!(
                "  CA SHA-256 fingerprint (a phone shows it before trusting; compare):\n  {fp}\n"
            ));
        }
    }
    t.push('\n');
    t
}

/// The `Phone:` line: the link a phone scans (`phone`: there is one), or why there is
/// none on a LAN.
pub(super) fn phone_line(phone_url: &str, phone: bool, has_lan: bool) -> String {
    if phone {
        format!("  ➜  Phone:   {phone_url}\n")
    } else if has_lan {
        "  ➜  Phone:   none: the certificate covers no LAN address here (see below)\n".into()
    } else {
        String::new()
    }
}

/// The QR code of the phone link, when `mode` and the output call for one.
pub(super) fn qr_block(phone_url: &str, mode: QrMode, phone: bool, has_lan: bool) -> String {
    let show = match mode {
        // Not a link no phone can open.
        QrMode::Always if !phone => {
            return if has_lan {
                String::new() // The `Phone:` line says why.
            } else {
                "\n  No QR code: no address here a phone can reach (listening on loopback, or no network).\n".into()
            };
        }
        QrMode::Always => true,
        QrMode::Never => false,
        QrMode::Auto => phone && std::io::stdout().is_terminal(),
    };
    if !show {
        return String::new();
    }
    match crate::qr::terminal(phone_url) {
        Ok(q) => {
            let mut t = String::from(
                "\n  Scan to join from a phone (it sets up the certificate if needed):\n\n",
            );
            for line in q.lines() {
                t.push_str(&format!("  {line}\n"));
            }
            t
        }
        Err(e) => {
            tracing::warn!(%e, "no QR code");
            String::new()
        }
    }
}

/// A `Network:` line for `ip`, marked when the certificate leaves it out.
pub(super) fn network_line(ip: &IpAddr, port: u16, uncovered: &[IpAddr]) -> String {
    let mark = if uncovered.contains(ip) {
        "  (not in the certificate)"
    } else {
        ""
    };
    format!(
        "  ➜  Network: https://{}:{port}/{mark}\n",
        net::url_host(ip)
    )
}

/// What to do about LAN addresses the certificate leaves out; empty when there are none.
pub(super) fn uncovered_note(uncovered: &[IpAddr], port: u16) -> String {
    if uncovered.is_empty() {
        return String::new();
    }
    let list: Vec<String> = uncovered.iter().map(ToString::to_string).collect();
    let mdns = match net::mdns_name() {
        Some(name) => format!("\n  (or https://{name}:{port}/ where this machine answers mDNS)"),
        None => String::new(),
    };
    format!(
        "\n  The certificate leaves out {}: the local CA vouches only for local names and\n  \
         private addresses (so that its key cannot pass for a public site), and browsers\n  \
         refuse HTTPS there. Use a private address (listen on one, or on all){mdns},\n  or a CA made without \
the limit: rtcdev --ca-dir DIR cert --unconstrained-ca, then\n  \
         rtcdev --ca-dir DIR serve (and trust that CA instead).\n",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_addresses_are_marked_and_explained() {
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let private: IpAddr = "192.168.1.20".parse().unwrap();
        let uncovered = [v6];
        assert_eq!(
            network_line(&v6, 8443, &uncovered),
            "  ➜  Network: https://[2001:db8::7]:8443/  (not in the certificate)\n"
        );
        assert_eq!(
            network_line(&private, 8443, &uncovered),
            "  ➜  Network: https://192.168.1.20:8443/\n"
        );
        let note = uncovered_note(&uncovered, 8443);
        assert!(note.contains("leaves out 2001:db8::7"), "{note}");
        assert!(note.contains("--unconstrained-ca"), "{note}");
        assert_eq!(uncovered_note(&[], 8443), "");
    }
}
