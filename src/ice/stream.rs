//! STUN/TURN over TCP and TLS (RFC 6062 framing, RFC 8656 section 11): a byte stream
//! carries whole STUN messages and ChannelData messages back to back, each
//! self-delimiting by its length field (ChannelData padded to 4 bytes). The webrtc-rs
//! `turn` crate speaks datagrams through its `Conn` trait; the two adapters here give it
//! streams:
//!
//! - [`StreamMux`]: the server side. Accepted TCP (or TLS) connections become one packet
//!   `Conn`; each connection is addressed by its peer address, as a UDP client would be.
//! - [`StreamConn`]: the client side, one connection to one server (the probe).
//!
//! The relay itself stays UDP, as the TURN specification has it for TCP and TLS clients.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::util::Conn;

/// Largest STUN or ChannelData message (the 16-bit length plus a header).
const MAX_FRAME: usize = 65_535 + 20;
/// Messages queued towards one connection before it counts as not reading.
const PER_CONN_QUEUE: usize = 256;
/// Messages from all connections waiting for the server.
const INBOX: usize = 4096;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one listener holds at once.
const MAX_CONNECTIONS: usize = 4096;
/// A connection must send its first whole message within this (after the TLS
/// handshake), or it is closed.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that sends nothing for longer than an allocation lives (10 minutes,
/// RFC 8656; a client refreshes before then) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(11 * 60);

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Reads one STUN or ChannelData message. `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let total = match head[0] >> 6 {
        // STUN: 20-byte header, then `len` bytes of attributes.
        0b00 => 20 + len,
        // ChannelData: 4-byte header, `len` bytes, padded to 4 on streams.
        0b01 => 4 + len.div_ceil(4) * 4,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "neither STUN nor ChannelData",
            ));
        }
    };
    if !(4..=MAX_FRAME).contains(&total) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut frame = vec![0u8; total];
    frame[..4].copy_from_slice(&head);
    if head[0] >> 6 == 0b00 {
        // The magic cookie first: a TLS ClientHello or HTTP on this port is refused at
        // once instead of waiting for bytes that never come.
        r.read_exact(&mut frame[4..8]).await?;
        if frame[4..8] != STUN_MAGIC_COOKIE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not STUN (no magic cookie): a TLS client on a plain TCP port?",
            ));
        }
        r.read_exact(&mut frame[8..]).await?;
    } else {
        r.read_exact(&mut frame[4..]).await?;
    }
    Ok(Some(frame))
}

/// Pads a ChannelData message to 4 bytes for a stream (STUN messages already are).
fn padded(buf: &[u8]) -> Vec<u8> {
    let mut v = buf.to_vec();
    if buf.first().is_some_and(|b| b >> 6 == 0b01) {
        v.resize(buf.len().div_ceil(4) * 4, 0);
    }
    v
}

fn unsupported(what: &str) -> webrtc::util::Error {
    webrtc::util::Error::Other(format!("{what} is not supported on a stream mux"))
}

/// Something that turns an accepted TCP connection into a byte stream (TLS or not).
pub type Acceptor = Option<TurnTls>;

/// TLS for TURN (`turns:`). A client that names TURN's protocol in its handshake (ALPN
/// `stun.turn`, RFC 7443) gets it; one that names other protocols only (a native app
/// asking for `http/1.1`, a browser opening the port to look at its certificate) is not
/// refused for that, as coturn does not refuse it: it gets no protocol.
#[derive(Clone)]
pub struct TurnTls {
    turn: Arc<rustls::ServerConfig>,
    other: Arc<rustls::ServerConfig>,
}

/// The protocol TURN over TLS names in its handshake (RFC 7443).
const TURN_ALPN: &[u8] = b"stun.turn";

impl TurnTls {
    /// From a server configuration (its certificate; its ALPN list is replaced).
    pub fn new(config: &rustls::ServerConfig) -> Self {
        let with = |alpn: Vec<Vec<u8>>| {
            let mut c = config.clone();
            c.alpn_protocols = alpn;
            Arc::new(c)
        };
        TurnTls {
            turn: with(vec![TURN_ALPN.to_vec()]),
            other: with(Vec::new()),
        }
    }

    async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let offers = start
            .client_hello()
            .alpn()
            .map(|mut names| names.any(|n| n == TURN_ALPN));
        let config = match offers {
            Some(false) => self.other.clone(),
            _ => self.turn.clone(),
        };
        start.into_stream(config).await
    }
}

/// Accepted stream connections as one packet `Conn` for the TURN server.
pub struct StreamMux {
    local: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    cancel: CancellationToken,
}

impl StreamMux {
    /// Serves `listener` (TLS when `tls` is set) until the mux is closed.
    pub fn start(listener: TcpListener, tls: Acceptor) -> io::Result<Arc<StreamMux>> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(INBOX);
        let mux = Arc::new(StreamMux {
            local,
            inbox: tokio::sync::Mutex::new(rx),
            writers: Arc::new(Mutex::new(HashMap::new())),
            cancel: CancellationToken::new(),
        });
        let (writers, cancel) = (mux.writers.clone(), mux.cancel.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = cancel.cancelled() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(%e, "TURN stream accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if writers.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_CONNECTIONS {
                    tracing::info!(%peer, "too many TURN stream connections; refusing");
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                let (tx, writers, cancel, tls) =
                    (tx.clone(), writers.clone(), cancel.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_stream(tcp, peer, tx, writers, cancel).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(s)) => serve_stream(s, peer, tx, writers, cancel).await,
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, %e, "TURN TLS handshake failed")
                                }
                                Err(_) => tracing::info!(%peer, "TURN TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
        });
        Ok(mux)
    }
}

impl StreamMux {
    /// Stops accepting, drops every connection and ends the server's read loop.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// Moves frames between one connection and the mux until either side ends.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    inbox: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    cancel: CancellationToken,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(PER_CONN_QUEUE);
    writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(peer, out_tx);
    let write = async {
        while let Some(frame) = out_rx.recv().await {
            wr.write_all(&frame).await?;
        }
        io::Result::Ok(())
    };
    let read = async {
        let mut wait = FIRST_MESSAGE_TIMEOUT;
        loop {
            let Ok(frame) = tokio::time::timeout(wait, read_frame(&mut rd)).await else {
                tracing::debug!(%peer, "closing a silent TURN stream connection");
                return;
            };
            wait = IDLE_TIMEOUT;
            match frame {
                Ok(Some(frame)) => {
                    if inbox.send((frame, peer)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::info!(%peer, %e, "dropping a TURN stream connection");
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = read => {}
        _ = write => {}
    }
    writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&peer);
    let _ = wr.shutdown().await;
}

#[async_trait::async_trait]
impl Conn for StreamMux {
    async fn connect(&self, _addr: SocketAddr) -> webrtc::util::Result<()> {
        Err(unsupported("connect"))
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc::util::Result<usize> {
        Err(unsupported("recv"))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc::util::Result<(usize, SocketAddr)> {
        let mut inbox = self.inbox.lock().await;
        let (frame, from) = tokio::select! {
            _ = self.cancel.cancelled() => None,
            f = inbox.recv() => f,
        }
        .ok_or(webrtc::util::Error::ErrClosedListener)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok((n, from))
    }

    async fn send(&self, _buf: &[u8]) -> webrtc::util::Result<usize> {
        Err(unsupported("send"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc::util::Result<usize> {
        let tx = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target)
            .cloned();
        match tx {
            // A connection that does not read loses messages, as a UDP client would.
            Some(tx) => {
                let _ = tx.try_send(padded(buf));
                Ok(buf.len())
            }
            // The client hung up; its allocation lives until it expires. Dropped, as
            // a datagram to a vanished UDP client would be.
            None => {
                tracing::debug!(%target, "no TURN stream connection; dropping a message");
                Ok(buf.len())
            }
        }
    }

    fn local_addr(&self) -> webrtc::util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// A no-op, as for a UDP socket: the turn crate closes its listening conn whenever
    /// an allocation ends. [`StreamMux::shutdown`] stops the listener.
    async fn close(&self) -> webrtc::util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// One client connection to a STUN/TURN server over a stream, as a packet `Conn`.
pub struct StreamConn {
    local: SocketAddr,
    server: SocketAddr,
    rd: tokio::sync::Mutex<Box<dyn AsyncRead + Unpin + Send + Sync>>,
    wr: tokio::sync::Mutex<Box<dyn AsyncWrite + Unpin + Send + Sync>>,
}

impl StreamConn {
    /// Wraps a connected stream to `server`.
    pub fn new<S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static>(
        stream: S,
        local: SocketAddr,
        server: SocketAddr,
    ) -> StreamConn {
        let (rd, wr) = tokio::io::split(stream);
        StreamConn {
            local,
            server,
            rd: tokio::sync::Mutex::new(Box::new(rd)),
            wr: tokio::sync::Mutex::new(Box::new(wr)),
        }
    }
}

fn io_err(e: io::Error) -> webrtc::util::Error {
    webrtc::util::Error::from(e)
}

#[async_trait::async_trait]
impl Conn for StreamConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc::util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc::util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc::util::Result<(usize, SocketAddr)> {
        let mut rd = self.rd.lock().await;
        match read_frame(&mut *rd).await.map_err(io_err)? {
            Some(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok((n, self.server))
            }
            None => Err(webrtc::util::Error::Other(
                "the server closed the connection".into(),
            )),
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc::util::Result<usize> {
        self.send_to(buf, self.server).await
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc::util::Result<usize> {
        let mut wr = self.wr.lock().await;
        wr.write_all(&padded(buf)).await.map_err(io_err)?;
        wr.flush().await.map_err(io_err)?;
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc::util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }

    async fn close(&self) -> webrtc::util::Result<()> {
        let _ = self.wr.lock().await.shutdown().await;
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_stun_and_padded_channel_data() {
        // A STUN binding request header (no attributes) and ChannelData of 5 bytes.
        let mut stun = vec![0x00, 0x01, 0x00, 0x00];
        stun.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        stun.extend_from_slice(&[7u8; 12]);
        let chan = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
        let mut wire = stun.clone();
        wire.extend_from_slice(&padded(&chan));
        assert_eq!(wire.len(), 20 + 12);
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), stun);
        let c = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(&c[..9], &chan);
        assert_eq!(c.len(), 12);
        assert!(read_frame(&mut r).await.unwrap().is_none());
        // Garbage (top bits 11) is an error, not a panic or a huge allocation.
        let mut r = &[0xFFu8, 0xFF, 0xFF, 0xFF][..];
        assert!(read_frame(&mut r).await.is_err());
        // A truncated frame is an error.
        let mut r = &stun[..10];
        assert!(read_frame(&mut r).await.is_err());
        // A TLS ClientHello is refused after 8 bytes.
        let mut r = &[0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0x03][..];
        assert!(read_frame(&mut r).await.is_err());
    }
}
