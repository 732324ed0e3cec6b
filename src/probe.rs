//! `rtcdev probe`: checks STUN and TURN servers from a terminal or CI with webrtc-rs:
//! the mapped address and round trip of each STUN server, the relayed address of each
//! TURN server, and then whether data really crosses the relay (two relay-only peer
//! connections echoing over a data channel). Failures become a sentence and a next step.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use tokio::net::UdpSocket;
use webrtc::api::APIBuilder;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;

use crate::ice::IceServer;

/// Default time a server gets before it counts as unreachable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages echoed across the relay.
pub const RELAY_ECHOES: usize = 10;

/// `stun:`/`turn:`/`turns:` URL parts.
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
    /// Parses an ICE server URL (RFC 7064 / 7065).
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
        let default_port = if scheme.ends_with('s') { 5349 } else { 3478 };
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

    fn is_turn(&self) -> bool {
        self.scheme.starts_with("turn")
    }
}

/// One server to check.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its URL.
    pub url: IceUrl,
    /// TURN username.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

/// The probe's configuration.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Servers.
    pub targets: Vec<Target>,
    /// Per-server timeout.
    pub timeout: Duration,
    /// rtcdev's CA directory, trusted (besides the system store) for `turns:`.
    pub ca_dir: Option<std::path::PathBuf>,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The URL.
    pub url: String,
    /// "ok" or "fail".
    pub verdict: &'static str,
    /// What was seen.
    pub details: String,
    /// What to do next, when something failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// STUN: the server-reflexive (mapped) address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped: Option<String>,
    /// TURN: the relayed address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed: Option<String>,
    /// Round trip of the STUN binding / TURN allocation, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// TURN: messages echoed across the relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_echoes: Option<usize>,
    /// TURN: median round trip of the relay echoes, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_rtt_ms: Option<f64>,
    /// Failure class: dns, unreachable, refused, tls, auth, forbidden, no-relay-data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'static str>,
}

impl Row {
    fn ok(url: &IceUrl, details: String) -> Self {
        Row {
            url: url.raw.clone(),
            verdict: "ok",
            details,
            hint: None,
            mapped: None,
            relayed: None,
            rtt_ms: None,
            relay_echoes: None,
            relay_rtt_ms: None,
            failure: None,
        }
    }

    fn fail(url: &IceUrl, failure: &'static str, details: String, hint: &str) -> Self {
        Row {
            url: url.raw.clone(),
            verdict: "fail",
            details,
            hint: Some(hint.to_string()),
            mapped: None,
            relayed: None,
            rtt_ms: None,
            relay_echoes: None,
            relay_rtt_ms: None,
            failure: Some(failure),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One row per server.
    pub servers: Vec<Row>,
    /// With two or more STUN servers: how the NAT maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
}

impl Report {
    /// Whether every server passed.
    pub fn ok(&self) -> bool {
        self.servers.iter().all(|r| r.verdict == "ok")
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let w = self
            .servers
            .iter()
            .map(|r| r.url.len())
            .max()
            .unwrap_or(3)
            .max(3);
        t.push_str(&format!("{:w$}  {:7}  DETAILS\n", "URL", "VERDICT"));
        for r in &self.servers {
            t.push_str(&format!(
                "{:w$}  {:7}  {}\n",
                r.url,
                r.verdict.to_uppercase(),
                r.details
            ));
            if let Some(h) = &r.hint {
                t.push_str(&format!("{:w$}  {:7}  → {h}\n", "", ""));
            }
        }
        if let Some(nat) = &self.nat {
            t.push_str(&format!("\nNAT: {nat}\n"));
        }
        t
    }
}

async fn resolve(url: &IceUrl) -> Result<SocketAddr, Row> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let found = tokio::net::lookup_host((host, url.port)).await;
    match found.map(|mut it| it.next()) {
        Ok(Some(addr)) => Ok(addr),
        _ => Err(Row::fail(
            url,
            "dns",
            format!("cannot resolve {}", url.host),
            "check the host name, or use its IP address",
        )),
    }
}

async fn udp_socket_for(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => "127.0.0.1:0"
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(ip) if ip.is_loopback() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
        IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    };
    UdpSocket::bind(local).await
}

fn unreachable(url: &IceUrl, timeout: Duration) -> Row {
    Row::fail(
        url,
        "unreachable",
        format!("no answer within {} ms", timeout.as_millis()),
        "a firewall may drop UDP to this port; check the address and port, or try turn:...?transport=tcp / turns: on 443",
    )
}

async fn stun(url: &IceUrl, timeout: Duration, ca_dir: Option<&std::path::Path>) -> Row {
    let server = match resolve(url).await {
        Ok(a) => a,
        Err(row) => return row,
    };
    let conn = match open_conn(url, server, timeout, ca_dir).await {
        Ok(c) => c,
        Err(row) => return *row,
    };
    let client = match turn_client(conn, server, None, None).await {
        Ok(c) => c,
        Err(e) => return Row::fail(url, "local", format!("{e:#}"), "report this as a bug"),
    };
    let started = Instant::now();
    let result =
        tokio::time::timeout(timeout, client.send_binding_request_to(&server.to_string())).await;
    let _ = client.close().await;
    match result {
        Ok(Ok(mapped)) => {
            let rtt = started.elapsed().as_secs_f64() * 1000.0;
            let mut row = Row::ok(url, format!("mapped address {mapped}, {rtt:.1} ms"));
            row.mapped = Some(mapped.to_string());
            row.rtt_ms = Some(round(rtt));
            row
        }
        Ok(Err(e)) => classify(url, &e.to_string(), timeout),
        Err(_) => unreachable(url, timeout),
    }
}

async fn turn_client(
    conn: Arc<dyn webrtc::util::Conn + Send + Sync>,
    server: SocketAddr,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<turn::client::Client> {
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.unwrap_or_default().to_string(),
        password: password.unwrap_or_default().to_string(),
        realm: String::new(),
        software: format!("rtcdev {}", env!("CARGO_PKG_VERSION")),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .map_err(|e| anyhow!("cannot start a TURN client: {e}"))?;
    client
        .listen()
        .await
        .map_err(|e| anyhow!("cannot start a TURN client: {e}"))?;
    Ok(client)
}

fn classify(url: &IceUrl, err: &str, timeout: Duration) -> Row {
    let lower = err.to_ascii_lowercase();
    if lower.contains("401") || lower.contains("unauthorized") || lower.contains("integrity") {
        Row::fail(
            url,
            "auth",
            format!("401 Unauthorized: the server refused the credentials ({err})"),
            "check the username and password; TURN REST credentials expire: make fresh ones from the shared secret",
        )
    } else if lower.contains("error 400") && lower.contains("allocate") {
        // webrtc-rs (and pion) TURN servers answer a wrong password with 400 after the
        // integrity check fails, where coturn says 401.
        Row::fail(
            url,
            "auth",
            format!("400 on Allocate: the server rejected the credentials ({err})"),
            "check the username and password; TURN REST credentials expire: make fresh ones from the shared secret",
        )
    } else if lower.contains("403")
        || lower.contains("forbidden")
        || lower.contains("486")
        || lower.contains("quota")
    {
        Row::fail(
            url,
            "forbidden",
            format!("refused by the server's policy or quota ({err})"),
            "the server refuses this client or has too many allocations; check its denied-peer/quota settings",
        )
    } else if lower.contains("refused") {
        Row::fail(
            url,
            "refused",
            format!("connection refused ({err})"),
            "nothing listens there: check the port and that the server runs",
        )
    } else if lower.contains("timeout")
        || lower.contains("timed out")
        || lower.contains("all retransmissions failed")
    {
        unreachable(url, timeout)
    } else {
        Row::fail(
            url,
            "error",
            err.to_string(),
            "run with -v for the protocol log",
        )
    }
}

async fn turn(
    target: &Target,
    timeout: Duration,
    secret: Option<&str>,
    ca_dir: Option<&std::path::Path>,
) -> Row {
    let url = &target.url;
    let (username, credential) = match (&target.username, &target.credential, secret) {
        (Some(u), Some(c), _) => (u.clone(), c.clone()),
        (_, _, Some(s)) => crate::ice::turn_rest_credentials(
            s,
            "rtcdev-probe",
            Duration::from_secs(3600),
            SystemTime::now(),
        ),
        _ => {
            return Row::fail(
                url,
                "usage",
                "no credentials for this TURN server".into(),
                "pass --username and --credential, or --secret for TURN REST",
            );
        }
    };
    let server = match resolve(url).await {
        Ok(a) => a,
        Err(row) => return row,
    };
    let conn = match open_conn(url, server, timeout, ca_dir).await {
        Ok(c) => c,
        Err(row) => return *row,
    };
    let client = match turn_client(conn, server, Some(&username), Some(&credential)).await {
        Ok(c) => c,
        Err(e) => return Row::fail(url, "local", format!("{e:#}"), "report this as a bug"),
    };
    let started = Instant::now();
    let allocated = tokio::time::timeout(timeout, client.allocate()).await;
    let rtt = started.elapsed().as_secs_f64() * 1000.0;
    let relayed = match allocated {
        Ok(Ok(conn)) => {
            use webrtc::util::Conn;
            let addr = conn.local_addr();
            let _ = conn.close().await;
            addr
        }
        Ok(Err(e)) => {
            let _ = client.close().await;
            return classify(url, &e.to_string(), timeout);
        }
        Err(_) => {
            let _ = client.close().await;
            return unreachable(url, timeout);
        }
    };
    let _ = client.close().await;
    let relayed = match relayed {
        Ok(a) => a,
        Err(e) => {
            return Row::fail(
                url,
                "error",
                format!("allocation without an address: {e}"),
                "run with -v",
            );
        }
    };
    let (username_for_echo, credential_for_echo) = (username.clone(), credential.clone());
    let ice = IceServer {
        urls: vec![url.raw.clone()],
        username: Some(username),
        credential: Some(credential),
    };
    let echoed = if url.transport == "udp" {
        tokio::time::timeout(timeout * 2, relay_echo(&ice, RELAY_ECHOES)).await
    } else {
        let check = stream_relay_echo(
            url,
            server,
            &username_for_echo,
            &credential_for_echo,
            RELAY_ECHOES,
            timeout,
            ca_dir,
        );
        tokio::time::timeout(timeout * 2, check).await
    };
    match echoed {
        Ok(Ok(rtts)) => {
            let median = rtts[rtts.len() / 2];
            let mut row = Row::ok(
                url,
                format!(
                    "relayed address {relayed}; {} messages crossed the relay, median RTT {median:.1} ms",
                    rtts.len()
                ),
            );
            row.relayed = Some(relayed.to_string());
            row.rtt_ms = Some(round(rtt));
            row.relay_echoes = Some(rtts.len());
            row.relay_rtt_ms = Some(round(median));
            row
        }
        Ok(Err(e)) if classify(url, &format!("{e:#}"), timeout).failure == Some("forbidden") => {
            // The second allocation or a permission was refused: quota (486) or policy (403).
            let mut row = classify(url, &format!("{e:#}"), timeout);
            row.relayed = Some(relayed.to_string());
            row
        }
        Ok(Err(e)) => {
            let mut row = Row::fail(
                url,
                "no-relay-data",
                format!("allocation ok ({relayed}) but no data crossed the relay: {e:#}"),
                "the server allocates but does not relay: check its relay port range is open and peers are allowed (coturn: no-loopback-peers, denied-peer-ip)",
            );
            row.relayed = Some(relayed.to_string());
            row
        }
        Err(_) => {
            let mut row = Row::fail(
                url,
                "no-relay-data",
                format!(
                    "allocation ok ({relayed}) but no data crossed the relay within the timeout"
                ),
                "check the server's relay ports are reachable and peers are allowed",
            );
            row.relayed = Some(relayed.to_string());
            row
        }
    }
}

/// The connection a STUN/TURN client talks over: a UDP socket, a TCP connection
/// (`?transport=tcp`) or a TLS one (`turns:`), framed as RFC 6062 says. Connection
/// failures come back as a classified row.
async fn open_conn(
    url: &IceUrl,
    server: SocketAddr,
    timeout: Duration,
    ca_dir: Option<&std::path::Path>,
) -> Result<Arc<dyn webrtc::util::Conn + Send + Sync>, Box<Row>> {
    if url.transport == "udp" {
        return match udp_socket_for(server).await {
            Ok(s) => Ok(Arc::new(s)),
            Err(e) => Err(Box::new(Row::fail(
                url,
                "local",
                format!("cannot open a UDP socket: {e}"),
                "check local network permissions",
            ))),
        };
    }
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(server)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Box::new(Row::fail(
                url,
                "refused",
                format!("TCP connection to {server} refused"),
                "nothing listens there over TCP: check the port and that the server has a TCP/TLS listener",
            )));
        }
        Ok(Err(e)) => {
            return Err(Box::new(Row::fail(
                url,
                "unreachable",
                format!("TCP connect to {server}: {e}"),
                "check the address and any firewall on the way",
            )));
        }
        Err(_) => return Err(Box::new(unreachable(url, timeout))),
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if url.scheme != "turns" && url.scheme != "stuns" {
        return Ok(Arc::new(crate::ice::stream::StreamConn::new(
            tcp, local, server,
        )));
    }
    let config = match tls_client_config(ca_dir) {
        Ok(c) => c,
        Err(e) => {
            return Err(Box::new(Row::fail(
                url,
                "local",
                format!("{e:#}"),
                "report this as a bug",
            )));
        }
    };
    let host = url
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = match rustls_pki_types::ServerName::try_from(host.clone()) {
        Ok(n) => n,
        Err(e) => {
            return Err(Box::new(Row::fail(
                url,
                "usage",
                format!("{host:?} is not a TLS server name: {e}"),
                "use the host name the server's certificate names",
            )));
        }
    };
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => Ok(Arc::new(crate::ice::stream::StreamConn::new(
            tls, local, server,
        ))),
        Ok(Err(e)) => Err(Box::new(Row::fail(
            url,
            "tls",
            format!("TLS handshake with {server} failed: {e}"),
            "the certificate must name the host in the URL and chain to a trusted CA: a certificate from rtcdev's CA is trusted here (and everywhere after rtcdev cert --install)",
        ))),
        Err(_) => Err(Box::new(Row::fail(
            url,
            "unreachable",
            format!(
                "TCP to {server} connected but no TLS handshake within {} ms",
                timeout.as_millis()
            ),
            "is this a TLS port? turns: usually runs on 5349 or 443",
        ))),
    }
}

/// TLS client configuration trusting the system's CA bundle and rtcdev's local CA.
fn tls_client_config(ca_dir: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(location) = crate::cert::CaLocation::resolve(ca_dir) {
        add_local_ca(&mut roots, &location.dir);
    }
    for bundle in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(iter) = rustls_pki_types::CertificateDer::pem_file_iter(bundle) {
            for cert in iter.flatten() {
                let _ = roots.add(cert);
            }
            break;
        }
    }
    client_config(roots)
}

/// Adds rtcdev's CA in `dir` to `roots`, when there is one.
fn add_local_ca(roots: &mut rustls::RootCertStore, dir: &std::path::Path) {
    if let Ok(ca) = crate::cert::Ca::load(dir) {
        let _ = roots.add(ca.cert_der.clone());
    }
}

/// A TLS client configuration (rtcdev's crypto provider) trusting `roots`.
fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(crate::cert::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The relay check over TCP or TLS, where webrtc-rs's ICE agent cannot allocate: two
/// TURN clients, each over its own connection, allocate; B echoes what arrives on its
/// relayed address; A sends `n` messages to B's relayed address through its own. Every
/// message crosses the server's relay twice. Round trips in ms, sorted.
async fn stream_relay_echo(
    url: &IceUrl,
    server: SocketAddr,
    username: &str,
    credential: &str,
    n: usize,
    timeout: Duration,
    ca_dir: Option<&std::path::Path>,
) -> Result<Vec<f64>> {
    use webrtc::util::Conn;
    let open = || async {
        let conn = open_conn(url, server, timeout, ca_dir)
            .await
            .map_err(|row| anyhow!("{}", row.details))?;
        let client = turn_client(conn, server, Some(username), Some(credential)).await?;
        let relay = client
            .allocate()
            .await
            .map_err(|e| anyhow!("second allocation: {e}"))?;
        anyhow::Ok((client, Arc::new(relay)))
    };
    let (client_a, relay_a) = open().await?;
    let (client_b, relay_b) = open().await?;
    let (addr_a, addr_b) = (relay_a.local_addr()?, relay_b.local_addr()?);
    // B's permission for A first, so A's first message is let through.
    relay_b.send_to(b"hello", addr_a).await?;
    let echo = {
        let relay_b = relay_b.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((len, from)) = relay_b.recv_from(&mut buf).await {
                if relay_b.send_to(&buf[..len], from).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut rtts = Vec::with_capacity(n);
    let mut buf = vec![0u8; 2048];
    let result = async {
        for i in 0..n {
            let msg = format!("rtcdev-probe {i}");
            let started = Instant::now();
            // A message lost before the permissions settle is sent again.
            'attempt: for _ in 0..10 {
                relay_a.send_to(msg.as_bytes(), addr_b).await?;
                let wait = tokio::time::sleep(Duration::from_millis(300));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => continue 'attempt,
                        got = relay_a.recv_from(&mut buf) => {
                            let (len, _) = got?;
                            if &buf[..len] == msg.as_bytes() {
                                rtts.push(started.elapsed().as_secs_f64() * 1000.0);
                                break 'attempt;
                            }
                        }
                    }
                }
            }
            if rtts.len() != i + 1 {
                bail!("message {i} did not come back across the relay");
            }
        }
        anyhow::Ok(())
    }
    .await;
    echo.abort();
    let _ = relay_a.close().await;
    let _ = relay_b.close().await;
    let _ = client_a.close().await;
    let _ = client_b.close().await;
    result?;
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

fn round(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// Two relay-only peer connections in this process, a data channel between them, `n`
/// messages echoed: the round trips in ms, sorted.
pub async fn relay_echo(server: &IceServer, n: usize) -> Result<Vec<f64>> {
    let mut setting = SettingEngine::default();
    setting.set_include_loopback_candidate(true);
    // Relay pairs are the only ones here: nominate at once instead of waiting the
    // default 2 s for better pairs that will not come.
    setting.set_relay_acceptance_min_wait(Some(Duration::ZERO));
    let api = APIBuilder::new().with_setting_engine(setting).build();
    let config = RTCConfiguration {
        ice_servers: vec![RTCIceServer {
            urls: server.urls.clone(),
            username: server.username.clone().unwrap_or_default(),
            credential: server.credential.clone().unwrap_or_default(),
        }],
        ice_transport_policy: RTCIceTransportPolicy::Relay,
        ..Default::default()
    };
    let a = Arc::new(api.new_peer_connection(config.clone()).await?);
    let b = Arc::new(api.new_peer_connection(config).await?);
    let result = async {
        // b echoes everything it receives.
        b.on_data_channel(Box::new(|dc| {
            Box::pin(async move {
                let echo = dc.clone();
                dc.on_message(Box::new(move |msg: DataChannelMessage| {
                    let echo = echo.clone();
                    Box::pin(async move {
                        let _ = echo.send(&msg.data).await;
                    })
                }));
            })
        }));
        let dc = a.create_data_channel("probe", None).await?;
        let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
        dc.on_open(Box::new(move || {
            Box::pin(async move {
                let _ = open_tx.send(()).await;
            })
        }));
        let (msg_tx, mut msg_rx) = tokio::sync::mpsc::channel::<Instant>(n.max(1));
        dc.on_message(Box::new(move |_msg| {
            let tx = msg_tx.clone();
            Box::pin(async move {
                let _ = tx.send(Instant::now()).await;
            })
        }));
        // Non-trickle: gather everything, then exchange whole descriptions.
        let t0 = Instant::now();
        let offer = a.create_offer(None).await?;
        let mut gathered = a.gathering_complete_promise().await;
        a.set_local_description(offer).await?;
        let _ = gathered.recv().await;
        let offer = with_relay_candidate(&a).await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "offer gathered");
        b.set_remote_description(offer).await?;
        let answer = b.create_answer(None).await?;
        let mut gathered = b.gathering_complete_promise().await;
        b.set_local_description(answer).await?;
        let _ = gathered.recv().await;
        let answer = with_relay_candidate(&b).await?;
        a.set_remote_description(answer).await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "answer set");
        open_rx
            .recv()
            .await
            .context("the data channel did not open")?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "channel open");
        let mut rtts = Vec::with_capacity(n);
        for i in 0..n {
            let sent = Instant::now();
            dc.send_text(format!("rtcdev probe {i}")).await?;
            let got = msg_rx.recv().await.context("echo lost")?;
            rtts.push(got.duration_since(sent).as_secs_f64() * 1000.0);
        }
        rtts.sort_by(|x, y| x.total_cmp(y));
        Ok::<_, anyhow::Error>(rtts)
    }
    .await;
    let t1 = Instant::now();
    let _ = a.close().await;
    let _ = b.close().await;
    tracing::debug!(ms = t1.elapsed().as_millis() as u64, "closed");
    result
}

/// The local description once it carries a relayed candidate: webrtc-rs may report
/// gathering complete before the TURN allocation has added it.
async fn with_relay_candidate(
    pc: &webrtc::peer_connection::RTCPeerConnection,
) -> Result<webrtc::peer_connection::sdp::session_description::RTCSessionDescription> {
    loop {
        let desc = pc
            .local_description()
            .await
            .context("no local description")?;
        if desc.sdp.contains("typ relay") {
            return Ok(desc);
        }
        // Bounded by the caller's timeout.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Compares the mapped addresses one socket gets from several STUN servers.
async fn nat_mapping(urls: &[&IceUrl], timeout: Duration) -> Option<String> {
    let mut servers = Vec::new();
    for u in urls {
        servers.push(resolve(u).await.ok()?);
    }
    let socket = udp_socket_for(*servers.first()?).await.ok()?;
    let client = turn_client(Arc::new(socket), servers[0], None, None)
        .await
        .ok()?;
    let mut mapped = Vec::new();
    for s in &servers {
        let m = tokio::time::timeout(timeout, client.send_binding_request_to(&s.to_string()))
            .await
            .ok()?
            .ok()?;
        mapped.push(m);
    }
    let _ = client.close().await;
    Some(if mapped.windows(2).all(|w| w[0] == w[1]) {
        format!(
            "one socket maps to {} at every server: endpoint-independent mapping, direct connections can work (STUN is enough)",
            mapped[0]
        )
    } else {
        let list: Vec<String> = mapped.iter().map(ToString::to_string).collect();
        format!(
            "one socket maps to different addresses per server ({}): a symmetric NAT, peers behind it need TURN",
            list.join(", ")
        )
    })
}

/// Runs every check; STUN and TURN servers are checked concurrently.
pub async fn run(config: &ProbeConfig, secret: Option<&str>) -> Report {
    let checks = config.targets.iter().map(|t| async move {
        if t.url.is_turn() {
            turn(t, config.timeout, secret, config.ca_dir.as_deref()).await
        } else {
            stun(&t.url, config.timeout, config.ca_dir.as_deref()).await
        }
    });
    let servers = futures_util::future::join_all(checks).await;
    let stuns: Vec<&IceUrl> = config
        .targets
        .iter()
        .zip(&servers)
        .filter(|(t, r)| !t.url.is_turn() && r.verdict == "ok")
        .map(|(t, _)| &t.url)
        .collect();
    let nat = if stuns.len() >= 2 {
        nat_mapping(&stuns, config.timeout).await
    } else {
        None
    };
    Report { servers, nat }
}

/// The text of `--ice-servers`: a file, or an https:// URL (trusting the local CA, as
/// `rtcdev serve`'s /config.json needs).
pub async fn fetch_ice_servers(source: &str, ca_dir: Option<&std::path::Path>) -> Result<String> {
    if !source.starts_with("https://") && !source.starts_with("http://") {
        return std::fs::read_to_string(source)
            .with_context(|| format!("cannot read --ice-servers {source}"));
    }
    let uri: http::Uri = source
        .parse()
        .with_context(|| format!("--ice-servers {source:?} is not a URL"))?;
    let host = uri
        .host()
        .context("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let tcp = tokio::time::timeout(
        DEFAULT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| anyhow!("{source}: no answer within {:?}", DEFAULT_TIMEOUT))?
    .with_context(|| format!("cannot connect to {source}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = Vec::new();
    if https {
        let location = crate::cert::CaLocation::resolve(ca_dir)?;
        let mut roots = rustls::RootCertStore::empty();
        add_local_ca(&mut roots, &location.dir);
        let config = client_config(roots)?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| format!("{source}: TLS failed (is the server's CA rtcdev's local CA? see rtcdev cert --caroot)"))?;
        tls.write_all(request.as_bytes()).await?;
        tokio::time::timeout(DEFAULT_TIMEOUT, tls.read_to_end(&mut raw))
            .await
            .map_err(|_| anyhow!("{source}: timed out"))??;
    } else {
        let mut tcp = tcp;
        tcp.write_all(request.as_bytes()).await?;
        tokio::time::timeout(DEFAULT_TIMEOUT, tcp.read_to_end(&mut raw))
            .await
            .map_err(|_| anyhow!("{source}: timed out"))??;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{source}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{source}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Reads an `iceServers` list as a browser gets it: `[...]` or `{"iceServers": [...]}`.
pub fn parse_ice_servers(text: &str, source: &str) -> Result<Vec<Target>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("{source} is not JSON: {e}"))?;
    let list = match &v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => o
            .get("iceServers")
            .and_then(|l| l.as_array())
            .cloned()
            .ok_or_else(|| anyhow!("{source} has no \"iceServers\" list"))?,
        _ => bail!("{source}: expected an iceServers list"),
    };
    let mut targets = Vec::new();
    for entry in list {
        let urls: Vec<String> = match &entry["urls"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|u| u.as_str().map(String::from))
                .collect(),
            _ => bail!("{source}: an entry has no \"urls\""),
        };
        for u in urls {
            targets.push(Target {
                url: IceUrl::parse(&u)?,
                username: entry["username"].as_str().map(String::from),
                credential: entry["credential"].as_str().map(String::from),
            });
        }
    }
    Ok(targets)
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
    fn reads_browser_ice_server_lists() {
        let t = parse_ice_servers(r#"{"iceServers":[{"urls":"stun:a:1"},{"urls":["turn:b:2"],"username":"u","credential":"p"}]}"#, "x").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].username.as_deref(), Some("u"));
        assert!(
            parse_ice_servers("not json", "f.json")
                .unwrap_err()
                .to_string()
                .contains("f.json is not JSON")
        );
    }
}
