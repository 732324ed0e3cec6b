//! One write for many HTTP/2 responses.
//!
//! hyper runs every HTTP/2 stream as a task of its own, and the `h2` crate writes at
//! most one large DATA frame per write and flushes after it: a browser that asks for
//! ten files at once gets ten TLS records in ten `writev` calls (measured: one
//! `writev` per response under `h2load -m10`, where nginx writes the answers to one
//! read together). [`Coalesce`] sits between hyper and TLS on HTTP/2 connections and
//! holds what is written until the connection's task has let the other ready tasks
//! run once: a flush is answered at once, the task wakes itself (tokio puts a task
//! that wakes itself at the back of the queue, behind the stream tasks that are still
//! answering), and what was held goes out in one write when the connection next reads
//! or shuts down. `h2` reads on every turn of an open connection, so what is held
//! never waits longer than one turn of the scheduler.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before a write waits for the socket instead.
const MAX_HELD: usize = 256 * 1024;
/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose writes are held until the next read (see the module doc), once the
/// client has opened HTTP/2; anything else passes straight through.
pub struct Coalesce<S> {
    inner: S,
    /// Writes are held: the connection speaks HTTP/2.
    hold: bool,
    /// The client may open HTTP/2 (it chose `h2` in the handshake) and has not sent
    /// anything yet. What it sends first decides: the server picks the protocol by it
    /// too, and a client that chose `h2` may still speak HTTP/1.1 (where a WebSocket's
    /// writer, a task that never reads, would wait for good on what is held).
    undecided: bool,
    held: Vec<u8>,
    /// The task was woken to write out what is held.
    armed: bool,
}

impl<S> Coalesce<S> {
    /// Wraps `inner`; holds writes once the client opens HTTP/2, if `h2` (the client
    /// chose it in the TLS handshake).
    pub fn new(inner: S, h2: bool) -> Self {
        Coalesce {
            inner,
            hold: false,
            undecided: h2,
            held: Vec::new(),
            armed: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything held, then flushes the stream below.
    fn write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.held.len() {
                break Pin::new(&mut self.inner).poll_flush(cx);
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.held[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.held.drain(..sent);
        if self.held.capacity() > MAX_HELD && self.held.is_empty() {
            self.held = Vec::new();
        }
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.armed {
            match self.write_out(cx) {
                Poll::Ready(Ok(())) => self.armed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The socket is full: its readiness wakes the task to go on.
                Poll::Pending => {}
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.undecided && buf.filled().len() > before {
            let first = &buf.filled()[before..];
            let n = first.len().min(PREFACE.len());
            self.hold = first[..n] == PREFACE[..n];
            self.undecided = false;
        }
        read
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.hold {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        if self.held.len() >= MAX_HELD {
            ready!(self.write_out(cx))?;
        }
        self.held.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.hold {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.held.len() >= MAX_HELD {
            ready!(self.write_out(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            self.held.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.hold || self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.hold || (self.held.is_empty() && !self.armed) {
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        if !self.armed {
            // Once round the scheduler first: the next read writes it all out.
            self.armed = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.write_out(cx))?;
        self.armed = false;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Once the client opens HTTP/2, held writes go out in one piece at the next read,
    /// or at shutdown; nothing is lost or reordered. A stream that does not speak
    /// HTTP/2 passes writes straight on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_writes_go_out_at_the_next_read_in_order() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut s = Coalesce::new(near, true);
        far.write_all(PREFACE).await.unwrap();
        let mut preface = [0u8; PREFACE.len()];
        s.read_exact(&mut preface).await.unwrap();
        s.write_all(b"one ").await.unwrap();
        s.write_all(b"two ").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 64];
        // Nothing has gone out yet: the far side has nothing to read.
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut got)).await;
        assert!(early.is_err(), "held data went out before the next read");
        // The next read (none is waiting on the far side yet) writes it out.
        far.write_all(b"ping").await.unwrap();
        let mut ping = [0u8; 4];
        s.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        let n = far.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"one two ");
        // More than the limit: the writes wait for the socket and all arrive in order.
        let big: Vec<u8> = (0..3 * MAX_HELD).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        for chunk in big.chunks(10_000) {
            s.write_all(chunk).await.unwrap();
        }
        s.write_all(b"end").await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        let all = reader.await.unwrap();
        assert_eq!(all.len(), big.len() + 3);
        assert_eq!(&all[..big.len()], &big[..]);
        assert_eq!(&all[big.len()..], b"end");

        // Not offered HTTP/2, or offered it and spoken HTTP/1.1 to.
        for (h2, first) in [(false, &PREFACE[..4]), (true, &b"GET / HTTP/1.1\r\n"[..])] {
            let (near, mut far) = tokio::io::duplex(1024);
            let mut s = Coalesce::new(near, h2);
            far.write_all(first).await.unwrap();
            let mut head = vec![0u8; first.len()];
            s.read_exact(&mut head).await.unwrap();
            s.write_all(b"now").await.unwrap();
            s.flush().await.unwrap();
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), far.read(&mut got))
                .await
                .expect("the write was held")
                .unwrap();
            assert_eq!(&got[..n], b"now", "h2 offered: {h2}");
        }
    }
}
