//! Gives the system back the heap a burst of clients leaves behind.
//!
//! glibc keeps what a thread frees in that thread's arena and returns only the free top
//! of an arena to the system. A burst of hub traffic (sixteen long-polling clients
//! flooding one room; measured with `bench/hostile.sh`: 1.2 MB of private memory
//! before, 8.3 MB after they had left, 0.4 MB of it in use) leaves the arenas of tokio's
//! workers full of free holes below a few live allocations, and the process would stay
//! at its peak for as long as it runs. Every [`TRIM_EVERY`] the trimmer asks glibc to
//! give every free page back (`malloc_trim(0)`: 2.7 MB after the same burst). What is
//! left is pinned by glibc's per-thread caches (at most seven free chunks of each small
//! size per thread), a bound that does not grow with the attack.
//!
//! Those per-thread caches are what kept a server's memory above where it started after
//! an attack (`bench/hostile.sh`: +10 to +12 % after the first polling swarm, with
//! glibc's seven chunks per size; +2 to +4 % with one). A cache size can only be set when
//! a process starts, through `GLIBC_TUNABLES`, so the long-running commands (`serve`,
//! `signal`, `turn`) start themselves once more with one chunk per size
//! ([`relaunch_with_small_thread_caches`]): same process id, same arguments, a few
//! milliseconds. A `GLIBC_TUNABLES` that sets `glibc.malloc.tcache_count` itself is left
//! as it is (that is also how to keep glibc's default: `tcache_count=7`).
//!
//! Other allocators (musl, macOS, Windows) return memory themselves; there this does
//! nothing.

use std::time::Duration;

/// How often the heap is trimmed.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Trims the heap every [`TRIM_EVERY`], for as long as the task runs. A trim costs about
/// 40 us with nothing to give back and under 1 ms after a burst (measured), so it needs
/// no trigger: memory freed by any part (hub sessions, TURN allocations, HTTP
/// connections) goes back within seconds.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        // malloc_trim walks and locks every arena: off the async workers.
        let (trimmed, took) = tokio::task::spawn_blocking(|| {
            let started = std::time::Instant::now();
            (release(), started.elapsed())
        })
        .await
        .unwrap_or_default();
        tracing::debug!(trimmed, ?took, "gave freed heap back to the system");
    }
}

/// The glibc tunable the servers run with: one free chunk of each small size cached per
/// thread instead of seven.
pub const THREAD_CACHE_TUNABLE: &str = "glibc.malloc.tcache_count=1";

/// Replaces this process with this binary, same arguments, and [`THREAD_CACHE_TUNABLE`]
/// added to `GLIBC_TUNABLES`, unless that already sets the cache size. Returns only when
/// nothing was to be done or the exec failed (then the process goes on as it is). Call
/// it first thing, while the process has one thread. Processes rtcdev starts (a browser
/// for `--open`, certutil) inherit the setting; it changes nothing but their memory
/// caching.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn relaunch_with_small_thread_caches() {
    use std::os::unix::process::CommandExt;
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("glibc.malloc.tcache_count") {
        return;
    }
    let tunables = if current.is_empty() {
        THREAD_CACHE_TUNABLE.to_string()
    } else {
        format!("{current}:{THREAD_CACHE_TUNABLE}")
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // /proc/self/exe: this very binary, even if its file was replaced meanwhile.
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .exec();
    eprintln!("rtcdev: could not restart with smaller allocator caches ({err}); going on as is");
}

/// Elsewhere than glibc there is nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn relaunch_with_small_thread_caches() {}

/// Asks the allocator to return every free page to the system; whether it returned any.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() -> bool {
    // SAFETY: malloc_trim takes no pointers and glibc serializes it with every other
    // allocator call; it only releases pages that hold no live allocation.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Asks the allocator to return every free page to the system; elsewhere than glibc
/// the allocator does so itself, and this does nothing.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() -> bool {
    false
}
