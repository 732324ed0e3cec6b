//! The outgoing queue of one connection, bounded in bytes.
//!
//! The room core pushes into it while it holds its lock, so a push only queues: it
//! never writes to a socket, never disconnects and never calls into a library. A peer
//! whose queue overflows is marked once and its connection's own task closes it
//! (outside any lock of the core).
//!
//! [`Outbox`] is the front-ends' queue. On socket.io it is drained by whichever task
//! gets to it first, once that task holds no lock: the sender of a relayed message hands
//! it on itself, instead of waking the recipient's task to do it (any task may hand
//! socketioxide a packet); one drainer at a time keeps the queue's order. The native
//! front-end reads and writes its WebSocket in one task, which alone empties its
//! outbox ([`Outbox::pop`]). [`out_queue`], a channel, is the echo peer's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
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

/// What a drainer's `send` did with the item at the head of an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Handed on (or dropped for good): the next one.
    Sent,
    /// Not now: it stays at the head, and draining stops.
    Stop,
}

/// How a [`Outbox::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Everything queued was handed on.
    Empty,
    /// Another task is draining; it hands on what this one queued too, or, if it
    /// stops, leaves it to the connection's task.
    Busy,
    /// `send` stopped at an item, which is still at the head.
    Stopped,
}

/// A connection's outgoing queue, bounded in bytes (see the module doc). It is emptied
/// one of two ways, never both: by any task that holds no lock ([`Outbox::drain`],
/// socket.io) or by the connection's task alone ([`Outbox::pop`], native). Pushing wakes
/// no one: the pusher either drains or wakes the connection's task ([`Outbox::wake`]).
pub struct Outbox<T> {
    queue: Mutex<Items<T>>,
    /// Held by the one task draining.
    draining: AtomicBool,
    /// A wake not yet seen by the connection's task.
    woke: AtomicBool,
    /// The connection's task, while it waits.
    waiter: AtomicWaker,
    max_bytes: usize,
    /// Fired once, when the queue overflows.
    kick: Mutex<Option<oneshot::Sender<()>>>,
}

struct Items<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    overflowed: bool,
}

impl<T> Outbox<T> {
    /// An outbox that holds at most `max_bytes` (as its items are counted by the
    /// pusher), and the signal of its overflow.
    pub fn new(max_bytes: usize) -> (Self, Overflow) {
        let (kick, overflow) = oneshot::channel();
        let outbox = Outbox {
            queue: Mutex::new(Items {
                items: VecDeque::new(),
                bytes: 0,
                overflowed: false,
            }),
            draining: AtomicBool::new(false),
            woke: AtomicBool::new(false),
            waiter: AtomicWaker::new(),
            max_bytes,
            kick: Mutex::new(Some(kick)),
        };
        (outbox, overflow)
    }

    fn items(&self) -> std::sync::MutexGuard<'_, Items<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` of `bytes`, waking no one. Past the bound, nothing more is queued
    /// and the connection is told once; returns false then.
    pub fn push(&self, item: T, bytes: usize) -> bool {
        let mut q = self.items();
        if q.overflowed {
            return false;
        }
        if q.bytes + bytes > self.max_bytes {
            q.overflowed = true;
            drop(q);
            let kick = self.kick.lock().map(|mut k| k.take());
            if let Ok(Some(kick)) = kick {
                let _ = kick.send(());
            }
            return false;
        }
        q.bytes += bytes;
        q.items.push_back((item, bytes));
        true
    }

    /// Wakes the connection's task ([`Outbox::woken`]); a wake with no one waiting is
    /// kept for the next wait. Wakes that come before the task has seen the first cost
    /// one atomic operation each: a burst of pushes wakes the task once.
    pub fn wake(&self) {
        if !self.woke.swap(true, Ordering::AcqRel) {
            self.waiter.wake();
        }
    }

    /// Resolves at the next [`Outbox::wake`] (or at once for one that came before).
    /// One task waits on an outbox, its connection's: a second waiter would take the
    /// first one's place.
    pub fn woken(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.woke.swap(false, Ordering::AcqRel) {
                return std::task::Poll::Ready(());
            }
            self.waiter.register(cx.waker());
            // A wake between the look and the registration found no waker to wake.
            if self.woke.swap(false, Ordering::AcqRel) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// The item at the head, taken out. For an outbox that only its connection's task
    /// empties, never together with [`Outbox::drain`].
    pub fn pop(&self) -> Option<T> {
        let mut q = self.items();
        let (item, bytes) = q.items.pop_front()?;
        q.bytes -= bytes;
        Some(item)
    }

    /// Hands the queued items to `send` in order, unless another task is draining
    /// (then that one hands them on, or leaves them to the connection's task when it
    /// stops). `send` runs with no lock held. Call it holding none either.
    pub fn drain(&self, mut send: impl FnMut(&T) -> Step) -> Drained {
        loop {
            if self.draining.swap(true, Ordering::AcqRel) {
                return Drained::Busy;
            }
            // Let go however this ends, a panic in `send` too.
            let turn = Turn(&self.draining);
            loop {
                let next = self.items().items.pop_front();
                let Some((item, bytes)) = next else { break };
                if send(&item) == Step::Stop {
                    // Nobody else pops while this task drains: the head is still free.
                    self.items().items.push_front((item, bytes));
                    drop(turn);
                    return Drained::Stopped;
                }
                self.items().bytes -= bytes;
            }
            drop(turn);
            // A push that came while this task drained found it busy and left its item
            // to this task: look again, after letting go.
            if self.items().items.is_empty() {
                return Drained::Empty;
            }
        }
    }
}

/// The drainer's turn: given back when dropped.
struct Turn<'a>(&'a AtomicBool);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn popping_makes_room_in_order_and_a_wake_is_kept() {
        let (outbox, mut overflow) = Outbox::<u32>::new(8);
        for i in 0..100 {
            assert!(outbox.push(i, 4));
            assert!(outbox.push(i + 1000, 4));
            outbox.wake();
            // The wake came before the wait: it was kept.
            outbox.woken().await;
            assert_eq!(outbox.pop(), Some(i));
            assert_eq!(outbox.pop(), Some(i + 1000));
            assert_eq!(outbox.pop(), None);
        }
        assert!(
            overflow.try_recv().is_err(),
            "what was popped freed its bytes"
        );
        assert!(outbox.push(1, 8));
        assert!(!outbox.push(2, 1), "the bound still holds");
        overflow.try_recv().expect("the connection was told");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outbox_is_bounded_in_bytes_and_kicks_once() {
        let (outbox, mut overflow) = Outbox::<u32>::new(10);
        assert!(outbox.push(1, 4));
        assert!(outbox.push(2, 4));
        assert!(!outbox.push(3, 4), "12 bytes do not fit in 10");
        assert!(
            !outbox.push(4, 1),
            "after an overflow nothing more is queued"
        );
        overflow.try_recv().expect("the connection was told");
        let mut got = Vec::new();
        assert_eq!(
            outbox.drain(|i| {
                got.push(*i);
                Step::Sent
            }),
            Drained::Empty
        );
        assert_eq!(got, [1, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_item_stays_at_the_head_and_frees_no_room() {
        let (outbox, _overflow) = Outbox::<u32>::new(8);
        assert!(outbox.push(1, 4));
        assert!(outbox.push(2, 4));
        let mut got = Vec::new();
        let stopped = outbox.drain(|i| {
            if *i == 2 {
                return Step::Stop;
            }
            got.push(*i);
            Step::Sent
        });
        assert_eq!(stopped, Drained::Stopped);
        assert!(!outbox.push(3, 8), "item 2 still counts");
        let (outbox, _overflow) = Outbox::<u32>::new(8);
        assert!(outbox.push(1, 4));
        assert!(outbox.push(2, 4));
        assert_eq!(
            outbox.drain(|i| if *i == 2 { Step::Stop } else { Step::Sent }),
            Drained::Stopped
        );
        assert!(outbox.push(3, 4), "item 1 was handed on and freed its room");
        assert_eq!(
            outbox.drain(|i| {
                got.push(*i);
                Step::Sent
            }),
            Drained::Empty
        );
        assert_eq!(got, [1, 2, 3]);
    }

    /// Four threads push and drain at once: every item is handed on exactly once, one
    /// drainer at a time, and each pusher's items in the order it pushed them.
    #[test]
    fn concurrent_drainers_keep_each_pushers_order_and_lose_nothing() {
        const PUSHERS: u32 = 4;
        const EACH: u32 = 20_000;
        let (outbox, _overflow) = Outbox::<(u32, u32)>::new(usize::MAX);
        let handed = Mutex::new(Vec::new());
        let inside = AtomicBool::new(false);
        std::thread::scope(|s| {
            for p in 0..PUSHERS {
                let (outbox, handed, inside) = (&outbox, &handed, &inside);
                s.spawn(move || {
                    for n in 0..EACH {
                        assert!(outbox.push((p, n), 1));
                        outbox.drain(|item| {
                            assert!(!inside.swap(true, Ordering::SeqCst), "two drainers at once");
                            handed.lock().unwrap().push(*item);
                            inside.store(false, Ordering::SeqCst);
                            Step::Sent
                        });
                    }
                });
            }
        });
        let handed = handed.into_inner().unwrap();
        assert_eq!(handed.len(), (PUSHERS * EACH) as usize, "every item, once");
        let mut next = [0u32; PUSHERS as usize];
        for (p, n) in handed {
            assert_eq!(n, next[p as usize], "pusher {p}'s items in order");
            next[p as usize] += 1;
        }
    }

    #[test]
    fn a_drainer_that_panics_gives_its_turn_back() {
        let (outbox, _overflow) = Outbox::<u32>::new(8);
        assert!(outbox.push(1, 1));
        assert!(outbox.push(2, 1));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            outbox.drain(|_| panic!("a send that fails badly"))
        }));
        assert!(panicked.is_err());
        let mut got = Vec::new();
        let drained = outbox.drain(|i| {
            got.push(*i);
            Step::Sent
        });
        assert_eq!((drained, got), (Drained::Empty, vec![2]));
    }

    /// Pushes and wakes from other threads while the task waits: every item arrives, in
    /// order, and no wake is lost (a lost one leaves the task waiting for good).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_from_other_threads_are_never_lost() {
        const N: u32 = 20_000;
        let (outbox, _overflow) = Outbox::<u32>::new(usize::MAX);
        let outbox = Arc::new(outbox);
        let pushers: Vec<_> = (0..2u32)
            .map(|t| {
                let outbox = outbox.clone();
                std::thread::spawn(move || {
                    for i in 0..N {
                        assert!(outbox.push(t * N + i, 1));
                        outbox.wake();
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32, N];
        let mut got = 0;
        while got < 2 * N {
            // The deadline is looked at first: a `timeout` would poll the wait once
            // more when it fires, and hide the lost wake.
            tokio::select! {
                biased;
                _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => panic!("a wake was lost"),
                _ = outbox.woken() => {}
            }
            while let Some(item) = outbox.pop() {
                let from = (item / N) as usize;
                assert_eq!(item, next[from], "each pusher's items in its order");
                next[from] += 1;
                got += 1;
            }
        }
        for p in pushers {
            p.join().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_before_the_wait_is_kept() {
        let (outbox, _overflow) = Outbox::<u32>::new(8);
        outbox.wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), outbox.woken())
            .await
            .expect("the earlier wake was kept");
    }
}
