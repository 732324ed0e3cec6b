//! What stands between the network and the `turn` crate's server: every packet a
//! listener receives passes [`TurnGuard::inbound`] first, every packet it sends passes
//! [`TurnGuard::outbound`].
//!
//! - **Bounded state.** The crate stores a nonce for every unauthenticated request and
//!   never forgets one a client does not come back with: a flood of 20-byte requests
//!   grew it without bound. Here the crate issues a nonce only when the guard asks it
//!   for one (at most one in [`NONCE_REUSE`]); every other challenge (401, or 438 for a
//!   nonce the crate does not know) is answered by the guard with that shared nonce, so
//!   the crate's table gains a handful of entries an hour whatever arrives.
//! - **No amplifier.** Requests without credentials are rate-limited per source
//!   address; past the rate they are dropped unanswered.
//! - **Peers.** CreatePermission, ChannelBind and Send to a peer the [`PeerPolicy`]
//!   refuses are answered 403 (or dropped, for an indication).
//! - **Quotas.** Allocations per user name and per client address (486) and in all
//!   (508), as coturn's `user-quota` and `total-quota`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use turn::proto::peeraddr::PeerAddress;
use webrtc::stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use webrtc::stun::error_code::{
    CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY, CODE_STALE_NONCE,
    CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
};
use webrtc::stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_SEND,
    Message, MessageType, Setter,
};
use webrtc::stun::textattrs::TextAttribute;
use webrtc::util::Conn;

use super::policy::PeerPolicy;
use crate::hub::ratelimit::TokenBucket;

/// A nonce the crate issued is handed out for this long, then a fresh one is asked for.
pub const NONCE_REUSE: Duration = Duration::from_secs(20 * 60);
/// A nonce is accepted this long after it was issued (the crate forgets it at 60 min).
const NONCE_ACCEPT: Duration = Duration::from_secs(50 * 60);
/// While the crate is asked for a nonce, other challenges wait (are dropped; clients
/// retransmit) at most this long.
const NONCE_ASK_WAIT: Duration = Duration::from_secs(1);
/// Unauthenticated requests a second from one address, sustained.
pub const UNAUTH_RATE_PER_SEC: u32 = 20;
/// Unauthenticated requests from one address in a burst.
pub const UNAUTH_BURST: u32 = 60;
/// Addresses the rate table remembers; past it, quiet ones are forgotten and new ones
/// share one bucket.
const RATE_TABLE_MAX: usize = 4096;
/// An address quiet this long is forgotten by the rate table.
const RATE_TABLE_IDLE: Duration = Duration::from_secs(60);
/// Allocate requests waiting for the crate's answer, remembered at most.
const PENDING_MAX: usize = 4096;
/// Allocations per user name and per client address unless told otherwise.
pub const DEFAULT_USER_QUOTA: usize = 64;
/// Allocations in all unless told otherwise.
pub const DEFAULT_TOTAL_QUOTA: usize = 1024;

/// What happens to an inbound packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Hand it to the crate.
    Pass,
    /// Drop it unanswered.
    Drop,
    /// Answer it with these bytes, and do not hand it on.
    Answer(Vec<u8>),
}

/// `/healthz` and log figures.
#[derive(Debug, Default, Serialize)]
pub struct TurnReport {
    /// Allocations open.
    pub allocations: usize,
    /// Unauthenticated requests dropped by the per-address rate.
    pub unauthenticated_dropped: u64,
    /// Permissions, channels and sends refused by the peer rules.
    pub peers_refused: u64,
    /// Allocations refused by a quota.
    pub quota_refused: u64,
    /// Nonces the crate was asked for.
    pub nonces_issued: u64,
}

#[derive(Default)]
struct Nonces {
    current: Option<(String, Instant)>,
    previous: Option<(String, Instant)>,
    asking_since: Option<Instant>,
}

/// Allocation bookkeeping: who holds which, keyed by (client address, listener address).
#[derive(Default)]
struct Allocs {
    open: HashMap<(SocketAddr, SocketAddr), String>,
    /// Allocate requests passed to the crate: transaction id to (client, user).
    pending: HashMap<[u8; 12], (SocketAddr, String)>,
}

/// The guard shared by every listener of one server.
pub struct TurnGuard {
    realm: String,
    policy: PeerPolicy,
    user_quota: usize,
    total_quota: usize,
    relay_ports: Mutex<HashSet<u16>>,
    nonces: Mutex<Nonces>,
    rates: Mutex<HashMap<IpAddr, TokenBucket>>,
    shared_rate: Mutex<TokenBucket>,
    allocs: Mutex<Allocs>,
    unauth_dropped: AtomicU64,
    peers_refused: AtomicU64,
    quota_refused: AtomicU64,
    nonces_issued: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TurnGuard {
    /// A guard for a server of `realm` with these peer rules and quotas.
    pub fn new(realm: &str, policy: PeerPolicy, user_quota: usize, total_quota: usize) -> Self {
        TurnGuard {
            realm: realm.to_string(),
            policy,
            user_quota: user_quota.max(1),
            total_quota: total_quota.max(1),
            relay_ports: Mutex::new(HashSet::new()),
            nonces: Mutex::new(Nonces::default()),
            rates: Mutex::new(HashMap::new()),
            shared_rate: Mutex::new(TokenBucket::new(UNAUTH_RATE_PER_SEC, UNAUTH_BURST)),
            allocs: Mutex::new(Allocs::default()),
            unauth_dropped: AtomicU64::new(0),
            peers_refused: AtomicU64::new(0),
            quota_refused: AtomicU64::new(0),
            nonces_issued: AtomicU64::new(0),
        }
    }

    /// The figures for `/healthz`.
    pub fn report(&self) -> TurnReport {
        TurnReport {
            allocations: lock(&self.allocs).open.len(),
            unauthenticated_dropped: self.unauth_dropped.load(Ordering::Relaxed),
            peers_refused: self.peers_refused.load(Ordering::Relaxed),
            quota_refused: self.quota_refused.load(Ordering::Relaxed),
            nonces_issued: self.nonces_issued.load(Ordering::Relaxed),
        }
    }

    /// A relayed address was handed out / given back.
    pub fn relay_port(&self, port: u16, open: bool) {
        let mut ports = lock(&self.relay_ports);
        if open {
            ports.insert(port);
        } else {
            ports.remove(&port);
        }
    }

    /// An allocation ended (the crate's close notice).
    pub fn allocation_closed(&self, client: SocketAddr, listener: SocketAddr, relay: SocketAddr) {
        lock(&self.allocs).open.remove(&(client, listener));
        self.relay_port(relay.port(), false);
    }

    /// Decides what happens to a packet from `src` on the listener at `local`.
    pub fn inbound(&self, pkt: &[u8], src: SocketAddr, local: SocketAddr) -> Inbound {
        // ChannelData (first two bits 01) goes to a peer the crate bound after a
        // ChannelBind the guard let through.
        if pkt.first().is_none_or(|b| b & 0xC0 == 0x40) {
            return Inbound::Pass;
        }
        let mut m = Message::new();
        m.raw = pkt.to_vec();
        if m.decode().is_err() {
            return Inbound::Pass; // the crate drops what it cannot read
        }
        let method = m.typ.method;
        if m.typ.class == CLASS_INDICATION {
            if method == METHOD_SEND && self.refused_peer(&m).is_some() {
                return Inbound::Drop;
            }
            return Inbound::Pass;
        }
        if m.typ.class != CLASS_REQUEST {
            return Inbound::Pass;
        }
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            if !self.unauthenticated_allowed(src.ip()) {
                return Inbound::Drop;
            }
            if method == METHOD_BINDING {
                return Inbound::Pass;
            }
            return self.challenge(&m, CODE_UNAUTHORIZED);
        }
        let mut nonce = TextAttribute::new(ATTR_NONCE, String::new());
        if nonce.get_from(&m).is_err() {
            return Inbound::Pass; // the crate answers 400
        }
        if !self.nonce_known(&nonce.text) {
            if !self.unauthenticated_allowed(src.ip()) {
                return Inbound::Drop;
            }
            return self.challenge(&m, CODE_STALE_NONCE);
        }
        if method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND {
            if let Some(why) = self.refused_peer(&m) {
                return Inbound::Answer(error_response(&m, CODE_FORBIDDEN, why, None));
            }
        } else if method == METHOD_ALLOCATE {
            let mut user = TextAttribute::new(ATTR_USERNAME, String::new());
            let _ = user.get_from(&m);
            return self.admit_allocation(&m, src, local, user.text);
        }
        Inbound::Pass
    }

    /// Watches what the crate sends to `dst` from the listener at `local`: it learns
    /// the nonce the crate issued and which allocations it granted.
    pub fn outbound(&self, pkt: &[u8], dst: SocketAddr, local: SocketAddr) {
        if pkt.first().is_none_or(|b| b & 0xC0 != 0) {
            return; // ChannelData, or not STUN
        }
        let mut m = Message::new();
        m.raw = pkt.to_vec();
        if m.decode().is_err() {
            return;
        }
        let class = m.typ.class;
        if class == CLASS_ERROR_RESPONSE {
            let mut nonce = TextAttribute::new(ATTR_NONCE, String::new());
            if nonce.get_from(&m).is_ok() {
                let mut n = lock(&self.nonces);
                if n.current.as_ref().is_none_or(|(c, _)| *c != nonce.text) {
                    self.nonces_issued.fetch_add(1, Ordering::Relaxed);
                    n.previous = n.current.replace((nonce.text, Instant::now()));
                }
                n.asking_since = None;
            }
        }
        if m.typ.method == METHOD_ALLOCATE
            && (class == CLASS_SUCCESS_RESPONSE || class == CLASS_ERROR_RESPONSE)
        {
            let mut allocs = lock(&self.allocs);
            if let Some((client, user)) = allocs.pending.remove(&m.transaction_id.0)
                && class == CLASS_SUCCESS_RESPONSE
                && client == dst
            {
                allocs.open.insert((client, local), user);
            }
        }
    }

    fn admit_allocation(
        &self,
        m: &Message,
        src: SocketAddr,
        local: SocketAddr,
        user: String,
    ) -> Inbound {
        let mut allocs = lock(&self.allocs);
        if allocs.open.contains_key(&(src, local)) {
            return Inbound::Pass; // a retransmission; the crate answers it
        }
        let refusal = if allocs.open.len() >= self.total_quota {
            Some((
                CODE_INSUFFICIENT_CAPACITY,
                "the server's allocations are all taken (--total-quota)",
            ))
        } else if allocs.open.values().filter(|u| **u == user).count() >= self.user_quota {
            Some((
                CODE_ALLOC_QUOTA_REACHED,
                "allocation quota of this user reached (--user-quota)",
            ))
        } else if allocs
            .open
            .keys()
            .filter(|(c, _)| c.ip() == src.ip())
            .count()
            >= self.user_quota
        {
            Some((
                CODE_ALLOC_QUOTA_REACHED,
                "allocation quota of this address reached (--user-quota)",
            ))
        } else {
            None
        };
        if let Some((code, why)) = refusal {
            drop(allocs);
            self.quota_refused.fetch_add(1, Ordering::Relaxed);
            crate::info_limited!("TURN quota", client = %src, user, "TURN allocation refused: {why}");
            return Inbound::Answer(error_response(m, code, why, None));
        }
        if allocs.pending.len() >= PENDING_MAX {
            allocs.pending.clear();
        }
        allocs.pending.insert(m.transaction_id.0, (src, user));
        Inbound::Pass
    }

    /// Answers a request that needs a (new) nonce: with the shared one, or by letting the
    /// crate issue one when there is none fresh, or not at all while it is being asked.
    fn challenge(&self, m: &Message, code: ErrorCode) -> Inbound {
        let now = Instant::now();
        let mut n = lock(&self.nonces);
        if let Some((nonce, at)) = &n.current
            && now.saturating_duration_since(*at) < NONCE_REUSE
        {
            let realm = self.realm.clone();
            let nonce = nonce.clone();
            drop(n);
            return Inbound::Answer(error_response(m, code, "", Some((&nonce, &realm))));
        }
        if n.asking_since
            .is_some_and(|t| now.saturating_duration_since(t) < NONCE_ASK_WAIT)
        {
            return Inbound::Drop;
        }
        n.asking_since = Some(now);
        Inbound::Pass
    }

    fn nonce_known(&self, nonce: &str) -> bool {
        let now = Instant::now();
        let n = lock(&self.nonces);
        [&n.current, &n.previous]
            .into_iter()
            .flatten()
            .any(|(text, at)| text == nonce && now.saturating_duration_since(*at) < NONCE_ACCEPT)
    }

    fn unauthenticated_allowed(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let ok = {
            let mut rates = lock(&self.rates);
            if rates.len() >= RATE_TABLE_MAX && !rates.contains_key(&ip) {
                rates.retain(|_, b| now.saturating_duration_since(b.last()) < RATE_TABLE_IDLE);
            }
            if rates.len() >= RATE_TABLE_MAX && !rates.contains_key(&ip) {
                drop(rates);
                lock(&self.shared_rate).take_at(now)
            } else {
                rates
                    .entry(ip)
                    .or_insert_with(|| TokenBucket::new(UNAUTH_RATE_PER_SEC, UNAUTH_BURST))
                    .take_at(now)
            }
        };
        if !ok {
            self.unauth_dropped.fetch_add(1, Ordering::Relaxed);
            crate::info_limited!("TURN unauthenticated flood", source = %ip, "TURN: dropping unauthenticated requests past the rate");
        }
        ok
    }

    /// The reason the first refused XOR-PEER-ADDRESS of `m` is refused, if one is.
    fn refused_peer(&self, m: &Message) -> Option<&'static str> {
        let ports = lock(&self.relay_ports);
        for raw in m
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        {
            let mut one = Message::new();
            one.transaction_id = m.transaction_id;
            one.add(ATTR_XOR_PEER_ADDRESS, &raw.value);
            let mut peer = PeerAddress::default();
            if peer.get_from(&one).is_err() {
                continue;
            }
            let addr = SocketAddr::new(peer.ip, peer.port);
            if let Err(why) = self.policy.check(addr, |p| ports.contains(&p)) {
                self.peers_refused.fetch_add(1, Ordering::Relaxed);
                crate::info_limited!("TURN peer refused", peer = %addr, "TURN: refusing to relay to {addr}: {why}");
                return Some(why);
            }
        }
        None
    }
}

/// An error response to `req` with `code`, a reason phrase, and a nonce and realm.
fn error_response(
    req: &Message,
    code: ErrorCode,
    reason: &str,
    nonce: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(req.transaction_id),
        Box::new(MessageType::new(req.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
    ];
    if let Some((nonce, realm)) = nonce {
        setters.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce.to_string())));
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, realm.to_string())));
    }
    let mut m = Message::new();
    match m.build(&setters) {
        Ok(()) => m.raw,
        Err(_) => Vec::new(),
    }
}

/// A listener's `Conn` with the guard in front of the crate.
pub struct GuardedConn {
    inner: Arc<dyn Conn + Send + Sync>,
    guard: Arc<TurnGuard>,
    local: SocketAddr,
}

impl GuardedConn {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        guard: Arc<TurnGuard>,
    ) -> webrtc::util::Result<Self> {
        let local = inner.local_addr()?;
        Ok(GuardedConn {
            inner,
            guard,
            local,
        })
    }
}

#[async_trait::async_trait]
impl Conn for GuardedConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc::util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc::util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc::util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            match self.guard.inbound(&buf[..n], src, self.local) {
                Inbound::Pass => return Ok((n, src)),
                Inbound::Drop => {}
                Inbound::Answer(bytes) => {
                    if !bytes.is_empty() {
                        let _ = self.inner.send_to(&bytes, src).await;
                    }
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc::util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc::util::Result<usize> {
        self.guard.outbound(buf, target, self.local);
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc::util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc::util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The crate's relay address generator, telling the guard which ports are relayed
/// addresses (a peer there is another client's relay, not a service of this host).
pub struct TrackedRelays {
    /// The generator that binds the sockets.
    pub inner: Box<dyn turn::relay::RelayAddressGenerator + Send + Sync>,
    /// The guard to tell.
    pub guard: Arc<TurnGuard>,
}

#[async_trait::async_trait]
impl turn::relay::RelayAddressGenerator for TrackedRelays {
    fn validate(&self) -> Result<(), turn::Error> {
        self.inner.validate()
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let (conn, addr) = self.inner.allocate_conn(use_ipv4, requested_port).await?;
        self.guard.relay_port(addr.port(), true);
        Ok((conn, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::stun::agent::TransactionId;

    fn request(method: webrtc::stun::message::Method, attrs: Vec<Box<dyn Setter>>) -> Vec<u8> {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        setters.extend(attrs);
        let mut m = Message::new();
        m.build(&setters).unwrap();
        m.raw
    }

    fn code_of(bytes: &[u8]) -> u16 {
        let mut m = Message::new();
        m.raw = bytes.to_vec();
        m.decode().unwrap();
        let mut e = ErrorCodeAttribute::default();
        e.get_from(&m).unwrap();
        e.code.0
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_crate_is_asked_for_one_nonce_and_the_rest_are_shared() {
        let g = TurnGuard::new("r", PeerPolicy::default(), 10, 10);
        let (src, local) = (addr("10.0.0.9:5000"), addr("10.0.0.1:3478"));
        let alloc = request(METHOD_ALLOCATE, vec![]);
        assert_eq!(
            g.inbound(&alloc, src, local),
            Inbound::Pass,
            "first: the crate issues"
        );
        assert_eq!(
            g.inbound(&alloc, src, local),
            Inbound::Drop,
            "while it is asked"
        );
        // The crate's 401 goes out with its nonce; the guard learns it.
        let mut m = Message::new();
        m.raw = alloc.clone();
        m.decode().unwrap();
        g.outbound(
            &error_response(&m, CODE_UNAUTHORIZED, "", Some(("n1", "r"))),
            src,
            local,
        );
        for _ in 0..40 {
            match g.inbound(&alloc, src, local) {
                Inbound::Answer(b) => assert_eq!(code_of(&b), 401),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(g.report().nonces_issued, 1);
        // Past the per-address rate, requests are dropped unanswered.
        let answered = (0..200)
            .filter(|_| matches!(g.inbound(&alloc, src, local), Inbound::Answer(_)))
            .count();
        assert!(answered < 60, "{answered}");
        assert!(g.report().unauthenticated_dropped > 100);
        // Another address is not held back.
        assert!(matches!(
            g.inbound(&alloc, addr("10.0.0.10:5000"), local),
            Inbound::Answer(_)
        ));
    }
}
