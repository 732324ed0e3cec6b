//! Opening connections to a STUN/TURN server: name resolution, UDP, TCP and TLS, TURN clients.
//!
//! Failures here come back as a classified [`Row`], ready for the report.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::net::UdpSocket;

use super::report::{Failure, Row, classify_io_error, unreachable};
use crate::ice::stream::StreamConn;
use crate::ice::url::IceUrl;

/// The connection a STUN/TURN client talks over, as the `turn` crate takes it.
pub(super) type ServerConn = Arc<dyn webrtc::util::Conn + Send + Sync>;

/// System CA bundles (Debian/Ubuntu, Fedora/RHEL, others); the first one found is used.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The SOFTWARE attribute the probe's STUN/TURN requests carry.
const SOFTWARE: &str = concat!("rtcdev ", env!("CARGO_PKG_VERSION"));

/// The first address `url`'s host resolves to, or a `dns` failure row.
pub(super) async fn resolve(url: &IceUrl) -> Result<SocketAddr, Row> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let found = tokio::net::lookup_host((host, url.port)).await;
    match found.map(|mut it| it.next()) {
        Ok(Some(addr)) => Ok(addr),
        _ => Err(Row::fail(
            url,
            Failure::Dns,
            format!("cannot resolve {}", url.host),
            "check the host name, or use its IP address",
        )),
    }
}

/// A UDP socket to reach `server` from: bound to loopback for a loopback server, to the
/// unspecified address of the server's family otherwise.
pub(super) async fn udp_socket_for(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local = match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => SocketAddr::from(([127, 0, 0, 1], 0)),
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(ip) if ip.is_loopback() => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    UdpSocket::bind(local).await
}

/// The connection a STUN/TURN client talks over: a UDP socket, a TCP connection
/// (`?transport=tcp`) or a TLS one (`turns:`), framed as RFC 6062 says. Connection
/// failures come back as a classified row.
pub(super) async fn open_conn(
    url: &IceUrl,
    server: SocketAddr,
    timeout: Duration,
    ca_dir: Option<&Path>,
) -> Result<ServerConn, Box<Row>> {
    if url.transport == "udp" {
        return match udp_socket_for(server).await {
            Ok(s) => Ok(Arc::new(s)),
            Err(e) => Err(Box::new(Row::fail(
                url,
                Failure::Local,
                format!("cannot open a UDP socket: {e}"),
                "check local network permissions",
            ))),
        };
    }
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(server)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(Box::new(match classify_io_error(&e) {
                Failure::Refused => Row::fail(
                    url,
                    Failure::Refused,
                    format!("TCP connection to {server} refused"),
                    "nothing listens there over TCP: check the port and that the server has a TCP/TLS listener",
                ),
                failure => Row::fail(
                    url,
                    failure,
                    format!("TCP connect to {server}: {e}"),
                    "check the address and any firewall on the way",
                ),
            }));
        }
        Err(_) => return Err(Box::new(unreachable(url, timeout))),
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if url.scheme != "turns" && url.scheme != "stuns" {
        return Ok(Arc::new(StreamConn::new(tcp, local, server)));
    }
    let config = match tls_client_config(ca_dir) {
        Ok(c) => c,
        Err(e) => {
            return Err(Box::new(Row::fail(
                url,
                Failure::Local,
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
                Failure::Usage,
                format!("{host:?} is not a TLS server name: {e}"),
                "use the host name the server's certificate names",
            )));
        }
    };
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => Ok(Arc::new(StreamConn::new(tls, local, server))),
        Ok(Err(e)) => Err(Box::new(Row::fail(
            url,
            Failure::Tls,
            format!("TLS handshake with {server} failed: {e}"),
            "the certificate must name the host in the URL and chain to a trusted CA: a certificate from rtcdev's CA is trusted here (and everywhere after rtcdev cert --install)",
        ))),
        Err(_) => Err(Box::new(Row::fail(
            url,
            Failure::Unreachable,
            format!(
                "TCP to {server} connected but no TLS handshake within {} ms",
                timeout.as_millis()
            ),
            "is this a TLS port? turns: usually runs on 5349 or 443",
        ))),
    }
}

/// TLS client configuration trusting the system's CA bundle and rtcdev's local CA.
fn tls_client_config(ca_dir: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(location) = crate::cert::CaLocation::resolve(ca_dir) {
        add_local_ca(&mut roots, &location.dir);
    }
    for bundle in SYSTEM_CA_BUNDLES {
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
pub(super) fn add_local_ca(roots: &mut rustls::RootCertStore, dir: &Path) {
    if let Ok(ca) = crate::cert::Ca::load(dir) {
        let _ = roots.add(ca.cert_der.clone());
    }
}

/// A TLS client configuration (rtcdev's crypto provider) trusting `roots`.
pub(super) fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(crate::cert::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A listening `turn` crate client over `conn` to `server`: STUN only without
/// credentials, TURN with them.
pub(super) async fn turn_client(
    conn: ServerConn,
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
        software: SOFTWARE.to_string(),
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
