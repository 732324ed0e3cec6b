//! The allocator, and giving the system back the heap a burst of clients leaves behind.
//!
//! The binary allocates with mimalloc. Against glibc's allocator, same build and
//! machine, alternating (`rtcdev serve` under `h2load -c50 -m10` and `wrk -c50`, server
//! CPU per request, 3 rounds): HTTP/2 9.2-10.0 -> 7.5-8.1 us, HTTP/1.1 9.5-9.8 -> 8.4-8.8
//! us. An HTTP/2 stream or a relayed message is allocated on one worker and freed on the
//! other; glibc takes an arena lock for that, mimalloc hands the block back without one.
//!
//! mimalloc returns a free page to the system a second after it is freed, but only when
//! the thread that owns the page next calls into the allocator. A worker that goes quiet
//! after a burst (sixteen long-polling clients flooding one room, `bench/hostile.sh`)
//! would keep the burst's pages for as long as it stays quiet: 15.3 MB RSS before, 23.2
//! MB after they had left. So each runtime worker collects its own heap when it parks
//! with nothing to do, at most once every [`COLLECT_EVERY`] ([`collect_when_idle`]):
//! 15.8 MB before, 17.0 MB after (glibc with a periodic `malloc_trim`: 14.9 and 15.8).
//! The servers run their accept loops on the workers (`main.rs`), so a connection's task
//! comes from a heap that is collected. What a worker frees in the second after a
//! collection waits for its next park after that second: with clients connected, the
//! hub's heartbeat checks (every 10 s) and HTTP/2 pings (30 s) bring one; a server all
//! its clients have left may keep the pages of that last second until it next wakes.
//!
//! Transparent huge pages are not asked for (the `no_thp` build): with them the process
//! started at 24.7 MB instead of 15.8 on a host whose THP setting is `madvise`. Where it
//! is `always`, the kernel may still back the heap with huge pages.
//!
//! The library's tests and benches run on the system allocator: only the binary
//! installs mimalloc (`main.rs`), and collecting does nothing where it is not installed.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A worker collects its heap at most this often.
pub const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// For the runtime's `on_thread_park`: when this worker last collected more than
/// [`COLLECT_EVERY`] ago, [`release`]. A busy worker parks often, so the interval, not
/// the parking, sets the cost (measured in the figures above).
pub fn collect_when_idle() {
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        release();
    }
}

/// Frees this thread's empty heap pages and returns the free memory of the whole
/// process's arenas to the system now (mimalloc's `mi_collect(true)`: the pages of this
/// thread only, the purge process-wide, one thread at a time).
#[allow(unsafe_code)]
pub fn release() {
    // SAFETY: mi_collect takes no pointers; it frees only pages that hold no live block
    // and returns only memory no allocation uses, under mimalloc's own synchronisation.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
