//! Bounds on what clients may hold and do, and the counts `/healthz` reports: hub
//! connections per client address and in total, the rate of new connections per
//! address, and log lines that a flood cannot multiply.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ratelimit::TokenBucket;

/// How many addresses the per-address connection-rate table remembers before it
/// forgets the ones that have been quiet.
const RATE_TABLE_MAX: usize = 4096;
/// An address quiet this long is forgotten by the connection-rate table.
const RATE_TABLE_IDLE: Duration = Duration::from_secs(60);

/// Counts of refused and cut-off work, for `/healthz`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections refused: too many from one address (HTTP 429).
    pub refused_per_address: AtomicU64,
    /// Connections refused: the hub is full (HTTP 503).
    pub refused_full: AtomicU64,
    /// Connections refused: new connections from one address too fast (HTTP 429).
    pub refused_rate: AtomicU64,
    /// Peers disconnected because their send queue overflowed.
    pub queue_overflows: AtomicU64,
    /// Frames refused by the per-connection rate limit.
    pub rate_limited_frames: AtomicU64,
    /// Connections closed for flooding past the rate limit.
    pub closed_for_flooding: AtomicU64,
    /// Joins refused by the per-address join rate.
    pub joins_refused: AtomicU64,
    /// TCP connections closed as they came: their address held its share of the
    /// server's connections (pages, files and hub together).
    pub tcp_refused_per_address: AtomicU64,
    /// TCP connections closed as they came: the process held as many as its open-file
    /// limit leaves room for.
    pub tcp_refused_full: AtomicU64,
}

/// A snapshot of [`Counters`] and the limits themselves.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsReport {
    /// Hub connections open.
    pub connections: usize,
    /// Most hub connections from one address.
    pub max_connections_per_address: usize,
    /// Most hub connections in all.
    pub max_connections: usize,
    /// See [`Counters`].
    pub refused_per_address: u64,
    /// See [`Counters`].
    pub refused_full: u64,
    /// See [`Counters`].
    pub refused_rate: u64,
    /// See [`Counters`].
    pub queue_overflows: u64,
    /// See [`Counters`].
    pub rate_limited_frames: u64,
    /// See [`Counters`].
    pub closed_for_flooding: u64,
    /// See [`Counters`].
    pub joins_refused: u64,
    /// See [`Counters`].
    pub tcp_refused_per_address: u64,
    /// See [`Counters`].
    pub tcp_refused_full: u64,
}

/// Why a connection was refused, with the status and the sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many open from this address.
    PerAddress(IpAddr, usize),
    /// The hub holds as many as it may.
    Full(usize),
    /// New connections from this address come too fast.
    Rate(IpAddr),
}

impl Refusal {
    /// The HTTP status: 429 for one client's excess, 503 when the hub is full.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Refusal::Full(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl axum::response::IntoResponse for Refusal {
    /// The status, the sentence, `Retry-After`, and `Connection: close`: a refused
    /// client holds nothing here, not even its connection.
    fn into_response(self) -> axum::response::Response {
        let mut res = (self.status(), format!("{self}\n")).into_response();
        let h = res.headers_mut();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("5"),
        );
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        res
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PerAddress(ip, n) => write!(
                f,
                "too many hub connections from {ip} (limit {n}; the server's --max-conns-per-ip raises it)"
            ),
            Refusal::Full(n) => write!(
                f,
                "the hub is full ({n} connections; the server's --max-conns raises it)"
            ),
            Refusal::Rate(ip) => write!(
                f,
                "new hub connections from {ip} come too fast; wait a moment and retry"
            ),
        }
    }
}

/// Takes a token of `ip`'s bucket in `table`, forgetting quiet addresses when the table
/// is full.
fn take(table: &Mutex<HashMap<IpAddr, TokenBucket>>, ip: IpAddr, rate: u32, burst: u32) -> bool {
    let now = Instant::now();
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    if t.len() >= RATE_TABLE_MAX && !t.contains_key(&ip) {
        t.retain(|_, b| now.saturating_duration_since(b.last()) < RATE_TABLE_IDLE);
    }
    t.entry(ip)
        .or_insert_with(|| TokenBucket::new(rate, burst))
        .take_at(now)
}

/// Open hub connections per client address and in all.
pub struct ConnLimits {
    max_per_ip: usize,
    max_total: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    rate: Mutex<HashMap<IpAddr, TokenBucket>>,
    joins: Mutex<HashMap<IpAddr, TokenBucket>>,
    rate_per_sec: u32,
    rate_burst: u32,
    join_rate: (u32, u32),
    /// The counts `/healthz` reports.
    pub counters: Counters,
}

/// One open connection; dropping it frees its place.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: Option<IpAddr>,
}

impl ConnLimits {
    /// At most `max_per_ip` connections from one address, `max_total` in all, new
    /// connections from one address at `rate_per_sec` (bursts of `rate_burst`), and
    /// joins from one address at `join_rate` (a second, burst).
    pub fn new(
        max_per_ip: usize,
        max_total: usize,
        rate_per_sec: u32,
        rate_burst: u32,
        join_rate: (u32, u32),
    ) -> Self {
        ConnLimits {
            max_per_ip: max_per_ip.max(1),
            max_total: max_total.max(1),
            open: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            rate: Mutex::new(HashMap::new()),
            joins: Mutex::new(HashMap::new()),
            rate_per_sec,
            rate_burst: rate_burst.max(1),
            join_rate: (join_rate.0, join_rate.1.max(1)),
            counters: Counters::default(),
        }
    }

    /// Whether a new connection from `ip` would be let in, spending a token of its
    /// address's connection rate. `None`: the address is unknown (an in-process server
    /// without connection info); only the total applies.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let ip = ip.map(|ip| ip.to_canonical());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Full(self.max_total));
        }
        let Some(ip) = ip else { return Ok(()) };
        let open = self.lock_open().get(&ip).copied().unwrap_or(0);
        if open >= self.max_per_ip {
            self.counters
                .refused_per_address
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerAddress(ip, self.max_per_ip));
        }
        if !take(&self.rate, ip, self.rate_per_sec, self.rate_burst) {
            self.counters.refused_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Rate(ip));
        }
        Ok(())
    }

    /// Whether a peer at `ip` may join a room now: joins from one address are
    /// rate-limited whichever connection they come on, so nobody tries room names at
    /// the speed of many connections.
    pub fn join_allowed(&self, ip: Option<IpAddr>) -> bool {
        let ip = ip.map(|ip| ip.to_canonical());
        let Some(ip) = ip else { return true };
        let ok = take(&self.joins, ip, self.join_rate.0, self.join_rate.1);
        if !ok {
            self.counters.joins_refused.fetch_add(1, Ordering::Relaxed);
            crate::info_limited!("joins refused", %ip, "refusing joins from an address past its join rate");
        }
        ok
    }

    /// Spends a new-connection token of `ip` without looking at the caps: for a
    /// connection that takes no new place (a socket.io session moving to WebSocket).
    pub fn spend_rate(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let ip = ip.map(|ip| ip.to_canonical());
        let Some(ip) = ip else { return Ok(()) };
        if !take(&self.rate, ip, self.rate_per_sec, self.rate_burst) {
            self.counters.refused_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Rate(ip));
        }
        Ok(())
    }

    /// Takes a place for a connection that was admitted; fails (and counts) when the
    /// caps were reached in the meantime. The place is held until the guard drops.
    pub fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnGuard, Refusal> {
        let ip = ip.map(|ip| ip.to_canonical());
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Full(self.max_total));
        }
        if let Some(ip) = ip {
            let mut open = self.lock_open();
            let n = open.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(open);
                self.total.fetch_sub(1, Ordering::AcqRel);
                self.counters
                    .refused_per_address
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::PerAddress(ip, self.max_per_ip));
            }
            *n += 1;
        }
        Ok(ConnGuard {
            limits: self.clone(),
            ip,
        })
    }

    /// Joins a second one address may make (sustained).
    pub fn join_rate(&self) -> u32 {
        self.join_rate.0
    }

    /// Figures for `/healthz`.
    pub fn report(&self) -> LimitsReport {
        let c = &self.counters;
        LimitsReport {
            connections: self.total.load(Ordering::Relaxed),
            max_connections_per_address: self.max_per_ip,
            max_connections: self.max_total,
            refused_per_address: c.refused_per_address.load(Ordering::Relaxed),
            refused_full: c.refused_full.load(Ordering::Relaxed),
            refused_rate: c.refused_rate.load(Ordering::Relaxed),
            queue_overflows: c.queue_overflows.load(Ordering::Relaxed),
            rate_limited_frames: c.rate_limited_frames.load(Ordering::Relaxed),
            closed_for_flooding: c.closed_for_flooding.load(Ordering::Relaxed),
            joins_refused: c.joins_refused.load(Ordering::Relaxed),
            tcp_refused_per_address: c.tcp_refused_per_address.load(Ordering::Relaxed),
            tcp_refused_full: c.tcp_refused_full.load(Ordering::Relaxed),
        }
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ConnGuard {
    /// The client's address, when known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut open = self.limits.lock_open();
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// Log lines that repeat (one per refused connection, one per slow peer) are written
/// once per [`LOG_EVERY`] for each cause, then with a count of those held back, so a
/// client cannot fill the disk of whoever keeps the logs.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

static LOG_GATE: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);

/// Whether a line for `cause` may be written now: `Some(n)` with the number of lines
/// held back since the last one, `None` to hold this one back.
pub fn log_gate(cause: &str) -> Option<u64> {
    let now = Instant::now();
    let mut gate = LOG_GATE.lock().unwrap_or_else(|p| p.into_inner());
    let map = gate.get_or_insert_with(HashMap::new);
    match map.get_mut(cause) {
        Some((last, held)) if now.saturating_duration_since(*last) < LOG_EVERY => {
            *held += 1;
            None
        }
        Some((last, held)) => {
            let n = *held;
            *last = now;
            *held = 0;
            Some(n)
        }
        None => {
            map.insert(cause.to_string(), (now, 0));
            Some(0)
        }
    }
}

/// `tracing::info!` through [`log_gate`]: the first line of a cause is written, the
/// repeats within [`LOG_EVERY`] are counted and the count rides on the next line.
#[macro_export]
macro_rules! info_limited {
    ($cause:literal, $($arg:tt)+) => {
        if let Some(held) = $crate::hub::limits::log_gate($cause) {
            if held > 0 {
                tracing::info!(similar_lines_held_back = held, $($arg)+);
            } else {
                tracing::info!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// An IPv4-mapped address is its IPv4 one to the caps and rates (a dual-stack
    /// listener sees IPv4 clients so); IPv6 addresses of one /64 are not one address:
    /// phones on one Wi-Fi share it.
    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_one() {
        let limits = Arc::new(ConnLimits::new(1, 100, 1000, 1000, (1, 1)));
        let _c = limits.acquire(ip("10.0.0.9")).unwrap();
        assert!(
            limits.acquire(ip("::ffff:10.0.0.9")).is_err(),
            "the mapped form is the same address"
        );
        assert!(limits.join_allowed(ip("10.0.0.9")));
        assert!(
            !limits.join_allowed(ip("::ffff:10.0.0.9")),
            "one join bucket for both forms"
        );
        let _a = limits.acquire(ip("2001:db8:0:1::a")).unwrap();
        let _b = limits
            .acquire(ip("2001:db8:0:1::b"))
            .expect("another host on the same /64");
    }

    #[test]
    fn caps_per_address_and_in_all() {
        let limits = Arc::new(ConnLimits::new(2, 3, 1000, 1000, (5, 30)));
        let a1 = limits.acquire(ip("10.0.0.1")).unwrap();
        let _a2 = limits.acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limits.admit(ip("10.0.0.1")),
            Err(Refusal::PerAddress("10.0.0.1".parse().unwrap(), 2))
        );
        assert!(limits.acquire(ip("10.0.0.1")).is_err());
        let _b = limits.acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(limits.admit(ip("10.0.0.3")), Err(Refusal::Full(3)));
        assert_eq!(limits.admit(None), Err(Refusal::Full(3)));
        drop(a1);
        assert!(
            limits.admit(ip("10.0.0.1")).is_ok(),
            "a closed one frees its place"
        );
        let r = limits.report();
        assert_eq!(r.connections, 2);
        assert_eq!(r.refused_per_address, 2);
        assert_eq!(r.refused_full, 2);
        assert_eq!(
            Refusal::Full(3).status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn new_connections_per_address_are_rate_limited() {
        let limits = ConnLimits::new(100, 100, 1, 3, (5, 30));
        let ok = (0..10)
            .filter(|_| limits.admit(ip("10.0.0.1")).is_ok())
            .count();
        assert_eq!(ok, 3, "the burst, then the rate");
        assert!(
            limits.admit(ip("10.0.0.2")).is_ok(),
            "other addresses are not held back"
        );
        assert_eq!(limits.report().refused_rate, 7);
    }

    #[test]
    fn joins_per_address_are_rate_limited() {
        let limits = ConnLimits::new(100, 100, 100, 100, (5, 30));
        let ok = (0..100)
            .filter(|_| limits.join_allowed(ip("10.0.0.1")))
            .count();
        assert!((30..=32).contains(&ok), "{ok}");
        assert!(limits.join_allowed(ip("10.0.0.2")));
        assert!(limits.join_allowed(None), "unknown address: not limited");
        assert!(limits.report().joins_refused >= 68);
    }

    #[test]
    fn log_gate_writes_once_then_counts() {
        assert_eq!(log_gate("test cause"), Some(0));
        assert_eq!(log_gate("test cause"), None);
        assert_eq!(log_gate("test cause"), None);
        assert_eq!(log_gate("another cause"), Some(0));
    }
}
