//! What `serve` and `signal` share: binding with clear errors, one port for HTTPS and
//! plain HTTP (sniffing the first byte), HTTP/2 answers written together
//! ([`coalesce`]), origins and hosts ([`origin`]), and graceful shutdown.

pub mod coalesce;
pub mod heap;
pub mod origin;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tower_http::add_extension::AddExtension;

use crate::hub::Hub;
use coalesce::Coalesce;

/// A connection must finish its TLS handshake (or send its first byte) within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection must send its first request within this after the handshake.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) a client may send; more gets 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// Connections one client address may hold open at once, pages, files and hub
/// together (a browser opens six or so per host); more are closed as they come. A hub
/// allowed more per address (`--max-conns-per-ip`, behind a load balancer) raises it to
/// that many and [`PAGE_CONNECTIONS`] more. A request head must come within
/// [`HEADER_READ_TIMEOUT`] of the last answer, so an idle HTTP/1.1 connection closes
/// then too.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// What one address may hold on top of its hub connections: pages, files, reports.
pub const PAGE_CONNECTIONS: usize = 64;
/// Descriptors kept back from connections: listeners, files, TURN sockets, Redis.
const RESERVED_DESCRIPTORS: u64 = 256;
/// The open-file limit is raised to at most this (or the hard limit, if lower).
const OPEN_FILES_TARGET: u64 = 65_536;
/// The longest a request head may take, and an HTTP/1.1 connection may sit idle between
/// requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 connections are pinged this often, and closed when a ping goes unanswered.
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// TCP keep-alive on every accepted connection: first probe after 60 s of silence, then
/// every 10 s, closed after 3 unanswered (where the platform lets these be set).
static TCP_KEEPALIVE: std::sync::LazyLock<socket2::TcpKeepalive> = std::sync::LazyLock::new(|| {
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "windows"
    ))]
    let keepalive = keepalive
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    keepalive
});
/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Which side of the shared port a request came in on; an extension on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// Binds a TCP listener, turning the common failures into advice.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "port {} on {} is in use; stop what uses it or pick another with --port",
            addr.port(),
            addr.ip()
        ),
        io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "no permission to listen on port {}; ports below 1024 need root, pick a higher one with --port",
            addr.port()
        ),
        io::ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "{} is not an address of this machine; check --bind",
            addr.ip()
        ),
        _ => anyhow::Error::new(e).context(format!("cannot listen on {addr}")),
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot configure the listener")?;
    Ok(listener)
}

/// Accepts HTTPS and plain HTTP on one port: a TLS handshake starts with 0x16, an HTTP
/// request with a letter. Each request carries the [`Scheme`] it came in on.
#[derive(Clone)]
pub struct SniffAcceptor {
    tls: Option<TlsAcceptor>,
    open: Arc<Open>,
    /// Where refusals are counted for `/healthz`.
    hub: Option<Hub>,
}

/// The connections open, per client address and in all, and how many each may be.
#[derive(Default)]
struct Open {
    per_address: Mutex<HashMap<IpAddr, usize>>,
    total: std::sync::atomic::AtomicUsize,
    max_per_address: usize,
    max_total: usize,
}

/// Why a connection was closed as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// Its address holds its share.
    Address,
    /// The process holds as many as its open-file limit leaves room for.
    Total,
}

impl SniffAcceptor {
    /// With `tls`, both; without, plain HTTP only. With a `hub`, its
    /// `--max-conns-per-ip` raises the cap per address, and refusals are counted in its
    /// `/healthz`.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>, hub: Option<Hub>) -> Self {
        let per_hub = hub.as_ref().map_or(0, |h| h.config().max_conns_per_ip);
        let max_per_address =
            MAX_CONNECTIONS_PER_ADDRESS.max(per_hub.saturating_add(PAGE_CONNECTIONS));
        let files = raise_open_files_limit();
        let max_total = usize::try_from(files.saturating_sub(RESERVED_DESCRIPTORS).max(64))
            .unwrap_or(usize::MAX);
        Self::with_limits(tls, hub, max_per_address, max_total)
    }

    fn with_limits(
        tls: Option<Arc<rustls::ServerConfig>>,
        hub: Option<Hub>,
        max_per_address: usize,
        max_total: usize,
    ) -> Self {
        SniffAcceptor {
            tls: tls.map(TlsAcceptor::from),
            open: Arc::new(Open {
                max_per_address,
                max_total,
                ..Open::default()
            }),
            hub,
        }
    }

    /// A place for a connection from `ip`, if the process has room for one more and
    /// the address has fewer than its share open. `127.0.0.1` and `::1` have no share
    /// of their own (a proxy or a load tool on this machine connects from there for
    /// many clients), but count in the total.
    fn take(&self, ip: IpAddr) -> Result<Slot, Full> {
        use std::sync::atomic::Ordering;
        // An IPv4-mapped address (a dual-stack listener's view of an IPv4 client) is
        // its IPv4 one. Not an IPv6 /64: on the LAN rtcdev serves, every phone on one
        // Wi-Fi shares the network's /64, so each IPv6 address is its own.
        let ip = ip.to_canonical();
        let own = ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from(Ipv6Addr::LOCALHOST);
        // The address's share is looked at first, under its lock (held to the end): a
        // flood from one address is refused without touching the total.
        let mut per_address = (!own).then(|| {
            self.open
                .per_address
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        });
        if let Some(open) = &per_address
            && open.get(&ip).copied().unwrap_or(0) >= self.open.max_per_address
        {
            return Err(Full::Address);
        }
        if self.open.total.fetch_add(1, Ordering::AcqRel) >= self.open.max_total {
            self.open.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Total);
        }
        if let Some(open) = &mut per_address {
            *open.entry(ip).or_insert(0) += 1;
        }
        Ok(Slot {
            open: self.open.clone(),
            ip: (!own).then_some(ip),
        })
    }
}

/// An open connection's place in the counts; given back on drop.
struct Slot {
    open: Arc<Open>,
    /// The address whose share it takes; none for this machine's own.
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip.take() {
            let mut open = self
                .open
                .per_address
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
        self.open
            .total
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Raises this process's soft limit on open files to its hard limit (at most
/// [`OPEN_FILES_TARGET`]), so connections are not refused at a default of 1024 (256
/// on macOS); returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    // On macOS the crate also keeps to the kernel's per-process maximum.
    rlimit::increase_nofile_limit(OPEN_FILES_TARGET).unwrap_or(1024)
}

/// A connection that holds its [`Slot`] for as long as it is open.
pub struct Counted<S> {
    inner: S,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Stream = Counted<Either<Coalesce<TlsStream<TcpStream>>, TcpStream>>;
type Accepted<S> = (Stream, AddExtension<S, Scheme>);

impl<S: Send + 'static> Accept<TcpStream, S> for SniffAcceptor {
    type Stream = Stream;
    type Service = AddExtension<S, Scheme>;
    type Future = Pin<Box<dyn Future<Output = io::Result<Accepted<S>>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let tls = self.tls.clone();
        let ip = stream
            .peer_addr()
            .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
        let slot = self.take(ip);
        if let (Err(full), Some(hub)) = (&slot, &self.hub) {
            let c = &hub.limits().counters;
            let counter = match full {
                Full::Address => &c.tcp_refused_per_address,
                Full::Total => &c.tcp_refused_full,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (max_per_address, max_total) = (self.open.max_per_address, self.open.max_total);
        Box::pin(async move {
            let slot = match slot {
                Ok(slot) => slot,
                // Closed at once: this address holds its share of the server already.
                Err(Full::Address) => {
                    crate::info_limited!(
                        "address over its connections",
                        "refusing a connection: its address has {max_per_address} open"
                    );
                    return Err(io::Error::other("too many connections from one address"));
                }
                Err(Full::Total) => {
                    crate::info_limited!(
                        "server over its connections",
                        "refusing a connection: {max_total} are open, as many as the open-file limit leaves room for"
                    );
                    return Err(io::Error::other("too many connections"));
                }
            };
            let counted = |inner| Counted { inner, _slot: slot };
            let _ = stream.set_nodelay(true);
            // A phone that vanishes (Wi-Fi off, out of range) sends no FIN: the kernel's
            // probes find it gone, so a connection nothing writes to (a proxied
            // WebSocket, an idle HTTP/2 one) gives its place back.
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&TCP_KEEPALIVE);
            let Some(tls) = tls else {
                return Ok((
                    counted(Either::Right(stream)),
                    AddExtension::new(service, Scheme::Http),
                ));
            };
            let mut first = [0u8; 1];
            let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "no data before the timeout")
                })??;
            if n == 1 && first[0] == TLS_HANDSHAKE_BYTE {
                let tls_stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                // HTTP/2 answers are written together (see `coalesce`).
                let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                Ok((
                    counted(Either::Left(Coalesce::new(tls_stream, h2))),
                    AddExtension::new(service, Scheme::Https),
                ))
            } else {
                Ok((
                    counted(Either::Right(stream)),
                    AddExtension::new(service, Scheme::Http),
                ))
            }
        })
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then closes the hub's
/// connections (WebSocket 1001) and gives in-flight requests [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    hub: Option<Hub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let hub_for_counts = hub.clone();
    tokio::spawn(async move {
        shutdown.await;
        if std::env::var_os(TEST_HOOK_HANG_SHUTDOWN).is_some() {
            // Blocks this runtime thread for good, as a deadlock would.
            std::thread::sleep(Duration::from_secs(3600));
        }
        if let Some(hub) = hub {
            hub.shutdown().await;
        }
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let mut server = axum_server::from_tcp(listener).context("cannot use the listener")?;
    server
        .http_builder()
        .http1()
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .header_read_timeout(Some(HEADER_READ_TIMEOUT));
    server
        .http_builder()
        .http2()
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE);
    server
        .acceptor(SniffAcceptor::new(tls, hub_for_counts))
        .first_request_timeout(FIRST_REQUEST_TIMEOUT)
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .context("the server stopped with an error")
}

/// Whatever is still open this long after Ctrl-C or SIGTERM is abandoned: the process
/// exits anyway, and says so.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Exit status when the deadline passed with work still open.
pub const EXIT_DEADLINE: i32 = 1;
/// Exit status on a second Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_SECOND_SIGNAL: i32 = 130;
/// Set (to anything) in tests only: shutdown then hangs a runtime thread for good, to
/// show that the deadline still ends the process.
pub const TEST_HOOK_HANG_SHUTDOWN: &str = "RTCDEV_TEST_HOOK_HANG_SHUTDOWN";

/// Resolves on the first Ctrl-C or SIGTERM. The signals are watched by a thread of
/// their own, not by the async runtime, so that they are seen even when every runtime
/// thread is stuck: from the first one, the process has [`SHUTDOWN_DEADLINE`] to close
/// gracefully before it exits anyway; a second one exits at once.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    if let Some(mut first) = watch_signals() {
        let _ = first.wait_for(|signalled| *signalled).await;
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Starts watching Ctrl-C and SIGTERM now, before anything else runs: a signal that
/// arrives between start-up and the first `shutdown_signal().await` is not lost (the
/// default action would kill the process without a graceful close). `serve`, `signal`
/// and `turn` call it first thing; [`shutdown_signal`] calls it too.
pub fn watch_signals_now() {
    #[cfg(unix)]
    let _ = watch_signals();
}

#[cfg(unix)]
fn watch_signals() -> Option<tokio::sync::watch::Receiver<bool>> {
    use std::sync::OnceLock;
    static FIRST: OnceLock<Option<tokio::sync::watch::Receiver<bool>>> = OnceLock::new();
    FIRST
        .get_or_init(|| {
            let (tx, rx) = tokio::sync::watch::channel(false);
            match spawn_signal_thread(tx) {
                Ok(()) => Some(rx),
                Err(e) => {
                    tracing::warn!(%e, "cannot watch signals on a thread of their own");
                    None
                }
            }
        })
        .clone()
}

#[cfg(unix)]
fn spawn_signal_thread(first: tokio::sync::watch::Sender<bool>) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("rtcdev-signals".into())
        .spawn(move || {
            let mut seen = false;
            for _ in signals.forever() {
                if !seen {
                    seen = true;
                    let _ = first.send(true);
                    std::thread::spawn(|| {
                        std::thread::sleep(SHUTDOWN_DEADLINE);
                        eprintln!(
                            "rtcdev: shutdown did not finish within {} s; exiting with connections still open",
                            SHUTDOWN_DEADLINE.as_secs()
                        );
                        std::process::exit(EXIT_DEADLINE);
                    });
                } else {
                    eprintln!("rtcdev: second interrupt; exiting now");
                    std::process::exit(EXIT_SECOND_SIGNAL);
                }
            }
        })?;
    Ok(())
}

/// Writes to stdout, ignoring a closed pipe: a server must not die because whoever
/// started it stopped reading its banner.
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places are given back on drop; loopback has no share of its own but counts in
    /// the total; the total holds for every address.
    #[test]
    fn connection_places_per_address_and_in_all() {
        let acceptor = SniffAcceptor::with_limits(None, None, 2, 3);
        let lan = IpAddr::from([192, 168, 1, 20]);
        let mapped: IpAddr = "::ffff:192.168.1.20".parse().unwrap();
        let a = acceptor.take(lan).unwrap();
        let b = acceptor
            .take(mapped)
            .expect("a second place for the same address");
        assert_eq!(
            acceptor.take(lan).err(),
            Some(Full::Address),
            "its v4-mapped form counts as the same address"
        );
        let local = acceptor.take(IpAddr::from([127, 0, 0, 1])).unwrap();
        assert_eq!(
            acceptor.take(IpAddr::from([192, 168, 1, 21])).err(),
            Some(Full::Total)
        );
        assert_eq!(
            acceptor.take(IpAddr::from([127, 0, 0, 1])).err(),
            Some(Full::Total),
            "loopback counts in the total"
        );
        drop(local);
        let other = acceptor.take(IpAddr::from([192, 168, 1, 21])).unwrap();
        drop((a, b, other));
        assert_eq!(
            acceptor
                .open
                .total
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert!(acceptor.open.per_address.lock().unwrap().is_empty());
        let _again = acceptor.take(lan).unwrap();
    }

    /// Each IPv6 address has its own share (phones on one Wi-Fi share its /64), and
    /// `::1` none.
    #[test]
    fn each_ipv6_address_holds_its_own_share() {
        let acceptor = SniffAcceptor::with_limits(None, None, 2, 100);
        let host = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        let _a = acceptor.take(host(1)).unwrap();
        let _b = acceptor.take(host(1)).unwrap();
        assert_eq!(acceptor.take(host(1)).err(), Some(Full::Address));
        let _other = acceptor
            .take(host(2))
            .expect("another phone on the same /64 has its own share");
        let _local = acceptor.take("::1".parse().unwrap()).unwrap();
        let _local = acceptor.take("::1".parse().unwrap()).unwrap();
        let _local = acceptor
            .take("::1".parse().unwrap())
            .expect("::1 has no share");
        assert_eq!(
            acceptor
                .open
                .total
                .load(std::sync::atomic::Ordering::Relaxed),
            6,
            "a refusal for the address takes nothing of the total"
        );
    }
}
