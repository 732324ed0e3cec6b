//! `rtcdev turn`: a STUN + TURN server (UDP) on the webrtc-rs `turn` crate, with
//! long-term credentials and TURN REST credentials (coturn's `use-auth-secret`). The
//! [`guard`] stands in front of the crate: bounded state, peer rules and quotas.

pub mod guard;
pub mod policy;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::net::UdpSocket;
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::relay_range::RelayAddressGeneratorRanges;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use webrtc::util::vnet::net::Net;

use crate::cert::tls::TlsSource;
use crate::ice::{IceConfig, IceServer, TurnAuth, turn_rest_password};
use crate::net;

/// The STUN/TURN port unless told otherwise (RFC 8489).
pub const DEFAULT_PORT: u16 = 3478;
/// Relay ports unless told otherwise (the IANA dynamic range, as coturn).
pub const DEFAULT_RELAY_PORTS: (u16, u16) = (49152, 65535);
/// Tries to find a free relay port before an allocation fails.
const RELAY_PORT_RETRIES: u16 = 10;

/// Everything `rtcdev turn` needs.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Address to listen on.
    pub bind: IpAddr,
    /// UDP port.
    pub port: u16,
    /// The realm in every 401 answer; long-term keys are made with it (RFC 8489 9.2).
    pub realm: String,
    /// Long-term users: name and password.
    pub users: Vec<(String, String)>,
    /// TURN REST shared secret.
    pub secret: Option<String>,
    /// The address relayed candidates carry (default: the bind address, or the first
    /// LAN address when bound to all).
    pub external_ip: Option<IpAddr>,
    /// Relay port range.
    pub relay_ports: (u16, u16),
    /// TURN over TLS (`turns:`): the port and where its certificate comes from (loaded
    /// when the server starts).
    pub tls: Option<(u16, TlsSource)>,
    /// Peer rules and quotas.
    pub guard: GuardConfig,
    /// How long the TURN REST credentials it hands out (with `secret`) stay valid.
    pub rest_ttl: Duration,
}

/// What the [`guard`] lets through.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Relay to loopback peers too.
    pub allow_loopback_peers: bool,
    /// Peers always allowed (before every other rule).
    pub allow_peers: Vec<ipnet::IpNet>,
    /// Peers refused.
    pub deny_peers: Vec<ipnet::IpNet>,
    /// Allocations per user name and per client address.
    pub user_quota: usize,
    /// Allocations in all.
    pub total_quota: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            allow_loopback_peers: false,
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            user_quota: guard::DEFAULT_USER_QUOTA,
            total_quota: guard::DEFAULT_TOTAL_QUOTA,
        }
    }
}

impl GuardConfig {
    /// The peer rules in one line, for the start-up banner.
    pub fn describe(&self) -> String {
        let mut s =
            String::from("peers on loopback, link-local and this host's own ports are refused");
        if self.allow_loopback_peers {
            s = String::from(
                "loopback peers allowed (--allow-loopback-peers); link-local and this host's own ports refused",
            );
        } else {
            s.push_str(" (--allow-loopback-peers, --allow-peer CIDR loosen it)");
        }
        if !self.deny_peers.is_empty() {
            s.push_str(&format!("; denied: {}", join(&self.deny_peers)));
        }
        if !self.allow_peers.is_empty() {
            s.push_str(&format!("; allowed: {}", join(&self.allow_peers)));
        }
        s
    }
}

fn join(nets: &[ipnet::IpNet]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

struct Auth {
    users: HashMap<String, String>,
    secret: Option<String>,
}

impl AuthHandler for Auth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        if let Some(password) = self.users.get(username) {
            return Ok(generate_auth_key(username, realm, password));
        }
        if let Some(secret) = &self.secret {
            // coturn's REST scheme: "<unix expiry>[:<id>]", password HMAC-SHA1 of it.
            let expiry: u64 = username
                .split(':')
                .next()
                .and_then(|e| e.parse().ok())
                .ok_or_else(|| {
                    turn::Error::Other(format!("{username:?} is not a TURN REST username"))
                })?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if expiry < now {
                crate::info_limited!("TURN expired credentials", %src, username, "expired TURN REST credentials");
                return Err(turn::Error::Other("expired credentials".into()));
            }
            return Ok(generate_auth_key(
                username,
                realm,
                &turn_rest_password(secret, username),
            ));
        }
        crate::info_limited!("TURN unknown user", %src, username, "unknown TURN user");
        Err(turn::Error::Other("unknown user".into()))
    }
}

/// A running server.
pub struct TurnServer {
    server: Server,
    /// Its guard: figures for `/healthz`.
    pub guard: Arc<guard::TurnGuard>,
    streams: Vec<Arc<crate::ice::stream::StreamMux>>,
    /// The UDP address it listens on (and TCP, same port).
    pub addr: SocketAddr,
    /// The TLS address, when TURN over TLS is on.
    pub tls_addr: Option<SocketAddr>,
    /// The address relayed candidates carry.
    pub relay_ip: IpAddr,
    /// The credentials clients get: the first user's, or REST ones from the secret.
    auth: Option<TurnAuth>,
}

impl TurnServer {
    /// The ICE servers a page should use to reach this server from a device that sees
    /// this machine's `lan` addresses: STUN, and TURN over UDP, TCP (and TLS with a TLS
    /// port), on each address it can be reached on, with its credentials.
    pub fn ice_config(&self, lan: &[IpAddr]) -> IceConfig {
        let port = self.addr.port();
        let hosts = net::server_hosts(self.addr.ip(), lan);
        IceConfig {
            stun: hosts
                .iter()
                .map(|h| format!("stun:{}:{port}", net::url_host(h)))
                .collect(),
            turn: turn_urls(&hosts, port, self.tls_addr.map(|t| t.port())),
            turn_auth: self.auth.clone(),
        }
    }

    /// Stops the server.
    pub async fn close(self) {
        for s in &self.streams {
            s.shutdown();
        }
        let _ = self.server.close().await;
    }
}

/// Binds and starts the server.
pub async fn start(config: &TurnConfig) -> Result<TurnServer> {
    if config.users.is_empty() && config.secret.is_none() {
        bail!("a TURN server needs --user NAME:PASS or --secret S");
    }
    let (lo, hi) = config.relay_ports;
    if lo == 0 || lo > hi {
        bail!("--relay-ports {lo}-{hi} is not a port range like 49152-65535");
    }
    let addr = SocketAddr::new(config.bind, config.port);
    let in_use = |proto: &str, addr: SocketAddr, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "{proto} port {} on {} is in use (another TURN server, coturn?); pick another with --port",
            addr.port(),
            addr.ip()
        ),
        _ => anyhow::Error::new(e).context(format!("cannot listen on {proto} {addr}")),
    };
    // TCP on the same port as UDP (RFC 8656), TLS on its own port. With port 0 the
    // system picks the UDP port, which may be taken for TCP: then another is tried.
    let mut tries = if config.port == 0 { 8 } else { 1 };
    let (socket, local, tcp) = loop {
        tries -= 1;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| in_use("UDP", addr, e))?;
        let local = socket
            .local_addr()
            .context("cannot read the bound address")?;
        let tcp_addr = SocketAddr::new(config.bind, local.port());
        match tokio::net::TcpListener::bind(tcp_addr).await {
            Ok(tcp) => break (socket, local, tcp),
            Err(e) if tries > 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(in_use("TCP", tcp_addr, e)),
        }
    };
    let tcp = crate::ice::stream::StreamMux::start(tcp, None)
        .context("cannot read the TCP listener's address")?;
    let tls = match &config.tls {
        Some((port, source)) => {
            let server_config = source.server_config()?;
            let tls_addr = SocketAddr::new(config.bind, *port);
            let l = tokio::net::TcpListener::bind(tls_addr)
                .await
                .map_err(|e| in_use("TLS (TCP)", tls_addr, e))?;
            let tls_local = l.local_addr().context("cannot read the TLS address")?;
            let acceptor = crate::ice::stream::TurnTls::new(&server_config);
            let mux = crate::ice::stream::StreamMux::start(l, Some(acceptor))
                .context("cannot start the TLS listener")?;
            Some((mux, tls_local))
        }
        None => None,
    };
    let lan = net::lan_addresses();
    let relay_ip = config.external_ip.unwrap_or_else(|| {
        if config.bind.is_unspecified() {
            lan.iter()
                .copied()
                .find(IpAddr::is_ipv4)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            config.bind
        }
    });
    // This host's addresses, which the peer rules keep relays away from.
    let mut own = lan;
    own.push(relay_ip);
    if !config.bind.is_unspecified() {
        own.push(config.bind);
    }
    let auth = Arc::new(Auth {
        users: config.users.iter().cloned().collect(),
        secret: config.secret.clone(),
    });
    let g = &config.guard;
    let guard = Arc::new(
        guard::TurnGuard::new(
            &config.realm,
            policy::PeerPolicy {
                allow_loopback: g.allow_loopback_peers,
                allow: g.allow_peers.clone(),
                deny: g.deny_peers.clone(),
                own,
            },
            g.user_quota,
            g.total_quota,
        )
        .with_auth(auth.clone()),
    );
    let relay = || {
        Box::new(RelayAddressGeneratorRanges {
            relay_address: relay_ip,
            min_port: lo,
            max_port: hi,
            max_retries: RELAY_PORT_RETRIES,
            address: config.bind.to_string(),
            net: Arc::new(Net::new(None)),
        })
    };
    let guarded = |conn: Arc<dyn webrtc::util::Conn + Send + Sync>,
                   own: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>|
     -> Result<_> {
        let c: Arc<dyn webrtc::util::Conn + Send + Sync> = Arc::new(
            guard::GuardedConn::new(conn, guard.clone(), own)
                .map_err(|e| anyhow::anyhow!("cannot read a listener's address: {e}"))?,
        );
        Ok(c)
    };
    // The guard's own nonce requests go to the crate through the UDP listener.
    let (own_tx, own_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let mut conn_configs = vec![
        ConnConfig {
            conn: guarded(Arc::new(socket), Some(own_rx))?,
            relay_addr_generator: relay(),
        },
        ConnConfig {
            conn: guarded(tcp.clone(), None)?,
            relay_addr_generator: relay(),
        },
    ];
    let mut streams = vec![tcp];
    let tls_addr = match tls {
        Some((mux, addr)) => {
            streams.push(mux.clone());
            conn_configs.push(ConnConfig {
                conn: guarded(mux, None)?,
                relay_addr_generator: relay(),
            });
            Some(addr)
        }
        None => None,
    };
    let (closed_tx, mut closed_rx) =
        tokio::sync::mpsc::channel::<turn::allocation::AllocationInfo>(64);
    let watcher = guard.clone();
    tokio::spawn(async move {
        while let Some(info) = closed_rx.recv().await {
            watcher.allocation_closed(
                info.five_tuple.src_addr,
                info.five_tuple.dst_addr,
                info.relay_addr,
            );
        }
    });
    let server = Server::new(ServerConfig {
        conn_configs,
        realm: config.realm.clone(),
        auth_handler: auth,
        channel_bind_timeout: Duration::from_secs(0),
        alloc_close_notify: Some(closed_tx),
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the TURN server: {e}"))?;
    // A fresh nonce now and every NONCE_REFRESH, until the server closes.
    let asker = guard.clone();
    tokio::spawn(async move {
        loop {
            if own_tx.send(asker.nonce_request()).await.is_err() {
                return;
            }
            tokio::time::sleep(guard::NONCE_REFRESH).await;
        }
    });
    let ready = tokio::time::Instant::now() + Duration::from_secs(2);
    while !guard.has_nonce() && tokio::time::Instant::now() < ready {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if !guard.has_nonce() {
        tracing::warn!("the TURN server has issued no nonce yet; the first clients may retry");
    }
    Ok(TurnServer {
        server,
        guard,
        streams,
        addr: local,
        tls_addr,
        relay_ip,
        auth: match (config.users.first(), &config.secret) {
            (Some((username, password)), _) => Some(TurnAuth::Static {
                username: username.clone(),
                password: password.clone(),
            }),
            (None, Some(secret)) => Some(TurnAuth::Secret {
                secret: secret.clone(),
                ttl: config.rest_ttl,
            }),
            (None, None) => None,
        },
    })
}

/// What `rtcdev turn` prints.
#[derive(Debug, Clone, Serialize)]
pub struct TurnUrls {
    /// A `stun:` URL for each address the server can be reached on.
    pub stun: Vec<String>,
    /// `turn:` URLs over UDP and TCP (and `turns:` with `--tls-port`) for each address.
    pub turn: Vec<String>,
    /// Ready to paste into `RTCConfiguration.iceServers`.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

/// `turn:` over UDP and TCP on `port` (TCP gets through networks that block UDP, as
/// many corporate and hotel ones do), and `turns:` on `tls_port`, for each host.
fn turn_urls(hosts: &[IpAddr], port: u16, tls_port: Option<u16>) -> Vec<String> {
    let mut turn = Vec::new();
    for h in hosts {
        let h = net::url_host(h);
        turn.push(format!("turn:{h}:{port}?transport=udp"));
        turn.push(format!("turn:{h}:{port}?transport=tcp"));
        if let Some(t) = tls_port {
            turn.push(format!("turns:{h}:{t}?transport=tcp"));
        }
    }
    turn
}

/// URLs for every address the server is reachable on.
pub fn urls(addr: SocketAddr, config: &TurnConfig, tls_addr: Option<SocketAddr>) -> TurnUrls {
    let hosts = net::server_hosts(addr.ip(), &net::lan_addresses());
    let port = addr.port();
    let stun: Vec<String> = hosts
        .iter()
        .map(|h| format!("stun:{}:{port}", net::url_host(h)))
        .collect();
    let turn = turn_urls(&hosts, port, tls_addr.map(|t| t.port()));
    let (username, credential) = match (config.users.first(), &config.secret) {
        (Some((u, p)), _) => (Some(u.clone()), Some(p.clone())),
        (None, Some(secret)) => {
            let (u, p) = crate::ice::turn_rest_credentials(
                secret,
                "rtcdev",
                config.rest_ttl,
                SystemTime::now(),
            );
            (Some(u), Some(p))
        }
        (None, None) => (None, None),
    };
    let ice_servers = vec![
        IceServer {
            urls: stun.clone(),
            username: None,
            credential: None,
        },
        IceServer {
            urls: turn.clone(),
            username,
            credential,
        },
    ];
    TurnUrls {
        stun,
        turn,
        ice_servers,
    }
}

/// A random password for the default user.
pub fn random_password() -> String {
    use base64::Engine;
    let bytes: [u8; 12] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Parses `NAME:PASS`.
pub fn parse_user(s: &str) -> Result<(String, String)> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok((u.to_string(), p.to_string())),
        _ => bail!("--user {s:?}: write it as NAME:PASSWORD"),
    }
}

/// Parses `LOW-HIGH`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--relay-ports {s:?}: write it as LOW-HIGH, e.g. 49152-65535"))?;
    let lo: u16 = a
        .trim()
        .parse()
        .with_context(|| format!("--relay-ports {s:?}: {a:?} is not a port"))?;
    let hi: u16 = b
        .trim()
        .parse()
        .with_context(|| format!("--relay-ports {s:?}: {b:?} is not a port"))?;
    if lo == 0 || lo > hi {
        bail!("--relay-ports {s:?}: LOW must be 1..=HIGH");
    }
    Ok((lo, hi))
}

/// Runs until `shutdown`.
pub async fn run(
    config: TurnConfig,
    json: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let server = start(&config).await?;
    let u = urls(server.addr, &config, server.tls_addr);
    let text = if json {
        serde_json::to_string(&u)? + "\n"
    } else {
        let mut t = format!(
            "rtcdev turn: STUN and TURN on UDP and TCP {}{} (relayed addresses on {})\n  {}; at most {} allocations per user and per address, {} in all\n\n",
            server.addr,
            server
                .tls_addr
                .map(|a| format!(", TURN over TLS on {a}"))
                .unwrap_or_default(),
            server.relay_ip,
            config.guard.describe(),
            config.guard.user_quota,
            config.guard.total_quota,
        );
        for s in &u.stun {
            t.push_str(&format!("  STUN: {s}\n"));
        }
        for s in &u.turn {
            t.push_str(&format!("  TURN: {s}\n"));
        }
        t.push_str(&format!(
            "\n  iceServers: {}\n\n",
            serde_json::to_string(&u.ice_servers)?
        ));
        t
    };
    crate::server::print_stdout(&text);
    shutdown.await;
    server.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_and_ranges() {
        assert_eq!(parse_user("a:b:c").unwrap(), ("a".into(), "b:c".into()));
        assert!(parse_user("nocolon").is_err());
        assert_eq!(parse_port_range("50000-50100").unwrap(), (50000, 50100));
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("x-1").is_err());
    }

    #[test]
    fn rest_auth_checks_expiry() {
        let auth = Auth {
            users: HashMap::new(),
            secret: Some("s".into()),
        };
        let src: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let future = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let user = format!("{future}:x");
        assert_eq!(
            auth.auth_handle(&user, "r", src).unwrap(),
            generate_auth_key(&user, "r", &turn_rest_password("s", &user))
        );
        assert!(auth.auth_handle("1000:x", "r", src).is_err(), "expired");
        assert!(auth.auth_handle("bob", "r", src).is_err());
    }
}
