//! The outgoing queue of one connection, bounded in bytes, shared by both front-ends.
//!
//! The room core pushes into it while it holds its lock, so a push only queues: it
//! never writes to a socket, never disconnects and never calls into a library. A peer
//! whose queue overflows is marked once and its connection's own task, which drains
//! the queue, closes it (outside any lock of the core).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

/// The pushing half, held by the peer's sink.
pub struct QueueTx<T> {
    tx: mpsc::UnboundedSender<(T, usize)>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    overflowed: AtomicBool,
    /// Fired once, when the queue overflows. (A oneshot, not a `Notify`: polling it
    /// takes no lock, and the connection polls it for every frame.)
    kick: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

/// The draining half, owned by the connection's task.
pub struct QueueRx<T> {
    rx: mpsc::UnboundedReceiver<(T, usize)>,
    queued: Arc<AtomicUsize>,
}

/// Resolves when the queue has overflowed: the peer does not read.
pub type Overflow = oneshot::Receiver<()>;

/// A queue that holds at most `max_bytes` (as its items are counted by the pusher),
/// and the signal of its overflow.
pub fn out_queue<T>(max_bytes: usize) -> (QueueTx<T>, QueueRx<T>, Overflow) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (kick, overflow) = oneshot::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            queued: queued.clone(),
            max_bytes,
            overflowed: AtomicBool::new(false),
            kick: std::sync::Mutex::new(Some(kick)),
        },
        QueueRx { rx, queued },
        overflow,
    )
}

impl<T> QueueTx<T> {
    /// Queues `item` of `bytes`. Past the bound, nothing more is queued and the
    /// connection is told once; returns false then.
    pub fn push(&self, item: T, bytes: usize) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        if self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes > self.max_bytes {
            self.overflowed.store(true, Ordering::Relaxed);
            let kick = self.kick.lock().map(|mut k| k.take());
            if let Ok(Some(kick)) = kick {
                let _ = kick.send(());
            }
            return false;
        }
        self.tx.send((item, bytes)).is_ok()
    }
}

impl<T> QueueRx<T> {
    /// The next item; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<T> {
        let (item, bytes) = self.rx.recv().await?;
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        Some(item)
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let (item, bytes) = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounded_in_bytes_and_kicks_once() {
        let (tx, mut rx, mut overflow) = out_queue::<u32>(10);
        assert!(tx.push(1, 4));
        assert!(tx.push(2, 4));
        assert!(!tx.push(3, 4), "12 bytes do not fit in 10");
        assert!(!tx.push(4, 1), "after an overflow nothing more is queued");
        overflow.try_recv().expect("the connection was told");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn draining_makes_room() {
        let (tx, mut rx, mut overflow) = out_queue::<u32>(8);
        for i in 0..100 {
            assert!(tx.push(i, 8));
            assert_eq!(rx.recv().await, Some(i));
        }
        assert!(overflow.try_recv().is_err());
    }
}
