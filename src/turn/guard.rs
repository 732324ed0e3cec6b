//! What stands between the network and the `turn` crate's server: every packet a
//! listener receives passes [`TurnGuard::inbound`] first, every packet it sends passes
//! [`TurnGuard::outbound`].
//!
//! - **Bounded state.** The crate stores a nonce for every unauthenticated request and
//!   never forgets one a client does not come back with: a flood of 20-byte requests
//!   grew it without bound. Here no client request ever reaches the crate without a
//!   nonce the guard knows. The guard asks the crate for a fresh nonce itself every
//!   [`NONCE_REFRESH`], with a request of its own whose answer it keeps (it never goes
//!   out), and answers every challenge (401, or 438 for a nonce it does not know) with
//!   that nonce: the crate's table gains six entries an hour whatever arrives.
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
use turn::auth::AuthHandler;
use turn::proto::peeraddr::PeerAddress;
use webrtc::stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use webrtc::stun::error_code::{
    CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY, CODE_STALE_NONCE,
    CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
};
use webrtc::stun::integrity::MessageIntegrity;
use webrtc::stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_SEND,
    Message, MessageType, Setter,
};
use webrtc::stun::textattrs::TextAttribute;
use webrtc::util::Conn;

use super::policy::PeerPolicy;
use crate::hub::ratelimit::TokenBucket;

/// How often the guard asks the crate for a fresh nonce.
pub const NONCE_REFRESH: Duration = Duration::from_secs(10 * 60);
/// A nonce is accepted this long after it was issued (the crate forgets it at 60 min;
/// the current and the previous one are kept, so at most two refreshes old).
const NONCE_ACCEPT: Duration = Duration::from_secs(30 * 60);
/// The source address of the guard's own requests to the crate; no real packet has it.
pub const SELF_SOURCE: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
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
    /// Transaction ids of the guard's own requests, whose answers are kept.
    own: HashSet<[u8; 12]>,
}

/// Allocation bookkeeping: who holds which, keyed by (client address, listener address)
/// (the crate's 5-tuple; UDP and TCP listeners share a port, so one key may hold two).
#[derive(Default)]
struct Allocs {
    open: HashMap<(SocketAddr, SocketAddr), Vec<String>>,
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
    /// The server's credentials, to answer a wrong password 401 as the RFC and coturn do
    /// (the crate answers 400, which browsers do not report as a credential failure).
    auth: Option<Arc<dyn AuthHandler + Send + Sync>>,
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
            auth: None,
        }
    }

    /// Checks signed requests against these credentials before the crate sees them.
    pub fn with_auth(mut self, auth: Arc<dyn AuthHandler + Send + Sync>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// A signed request whose user is unknown or whose MESSAGE-INTEGRITY does not match
    /// that user's key: answered 401 with a nonce (RFC 8489 9.2.4), within the rate of
    /// unauthenticated answers. `None` lets it through.
    fn wrong_credentials(&self, m: &Message, src: SocketAddr) -> Option<Inbound> {
        let auth = self.auth.as_ref()?;
        let mut user = TextAttribute::new(ATTR_USERNAME, String::new());
        let mut realm = TextAttribute::new(ATTR_REALM, String::new());
        if user.get_from(m).is_err() || realm.get_from(m).is_err() {
            return None; // the crate answers 400: a malformed request
        }
        let signed = auth
            .auth_handle(&user.text, &realm.text, src)
            .is_ok_and(|key| MessageIntegrity(key).check(&mut m.clone()).is_ok());
        if signed {
            return None;
        }
        if !self.unauthenticated_allowed(src.ip()) {
            return Some(Inbound::Drop);
        }
        Some(self.challenge(m, CODE_UNAUTHORIZED))
    }

    /// The figures for `/healthz`.
    pub fn report(&self) -> TurnReport {
        TurnReport {
            allocations: lock(&self.allocs).open.values().map(Vec::len).sum(),
            unauthenticated_dropped: self.unauth_dropped.load(Ordering::Relaxed),
            peers_refused: self.peers_refused.load(Ordering::Relaxed),
            quota_refused: self.quota_refused.load(Ordering::Relaxed),
            nonces_issued: self.nonces_issued.load(Ordering::Relaxed),
        }
    }

    /// A relayed address was handed out / given back.
    fn relay_port(&self, port: u16, open: bool) {
        let mut ports = lock(&self.relay_ports);
        if open {
            ports.insert(port);
        } else {
            ports.remove(&port);
        }
    }

    /// An allocation ended (the crate's close notice).
    pub fn allocation_closed(&self, client: SocketAddr, listener: SocketAddr, relay: SocketAddr) {
        let mut allocs = lock(&self.allocs);
        if let Some(users) = allocs.open.get_mut(&(client, listener)) {
            users.pop();
            if users.is_empty() {
                allocs.open.remove(&(client, listener));
            }
        }
        drop(allocs);
        self.relay_port(relay.port(), false);
    }

    /// The guard's own request for a fresh nonce: an unauthenticated Allocate, to be
    /// handed to the crate as if from [`SELF_SOURCE`]; its answer never goes out.
    pub fn nonce_request(&self) -> Vec<u8> {
        let tid = webrtc::stun::agent::TransactionId::new();
        lock(&self.nonces).own.insert(tid.0);
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(tid),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        ];
        match m.build(&setters) {
            Ok(()) => m.raw,
            Err(_) => Vec::new(),
        }
    }

    /// Whether the crate has issued a nonce the guard can hand out.
    pub fn has_nonce(&self) -> bool {
        lock(&self.nonces).current.is_some()
    }

    /// Decides what happens to a packet from `src`.
    pub fn inbound(&self, pkt: &[u8], src: SocketAddr) -> Inbound {
        if src == SELF_SOURCE {
            return Inbound::Drop;
        }
        // ChannelData (first two bits 01) goes to a peer the crate bound after a
        // ChannelBind the guard let through.
        if pkt.first().is_none_or(|b| b & 0xC0 == 0x40) {
            return Inbound::Pass;
        }
        let mut m = Message::new();
        m.raw = pkt.to_vec();
        // What is not STUN, and STUN responses (a server is never asked anything), have
        // no meaning here: dropped before the library, which would log an error for each.
        if m.decode().is_err() {
            return Inbound::Drop;
        }
        let method = m.typ.method;
        if m.typ.class == CLASS_INDICATION {
            if method == METHOD_SEND && self.refused_peer(&m).is_some() {
                return Inbound::Drop;
            }
            return Inbound::Pass;
        }
        if m.typ.class != CLASS_REQUEST {
            return Inbound::Drop;
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
        if let Some(refused) = self.wrong_credentials(&m, src) {
            return refused;
        }
        if method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND {
            if let Some(why) = self.refused_peer(&m) {
                return Inbound::Answer(error_response(&m, CODE_FORBIDDEN, why, None));
            }
        } else if method == METHOD_ALLOCATE {
            let mut user = TextAttribute::new(ATTR_USERNAME, String::new());
            let _ = user.get_from(&m);
            return self.admit_allocation(&m, src, user.text);
        }
        Inbound::Pass
    }

    /// Watches what the crate sends to `dst` from the listener at `local`: it learns
    /// the nonce the crate issued, which allocations it granted and on which relay
    /// ports. Returns false for the answer to the guard's own request, which is kept.
    pub fn outbound(&self, pkt: &[u8], dst: SocketAddr, local: SocketAddr) -> bool {
        // Only Allocate answers matter here (the guard's own request is an Allocate
        // too); relayed data (Data indications, ChannelData) passes without a copy or
        // a decode.
        let [b0, b1, ..] = *pkt else { return true };
        let mut typ = MessageType::default();
        typ.read_value(u16::from_be_bytes([b0, b1]));
        if b0 & 0xC0 != 0 || typ.method != METHOD_ALLOCATE {
            return true;
        }
        let mut m = Message::new();
        m.raw = pkt.to_vec();
        if m.decode().is_err() {
            return true;
        }
        let class = m.typ.class;
        {
            let mut n = lock(&self.nonces);
            let own = n.own.remove(&m.transaction_id.0);
            if dst == SELF_SOURCE || own {
                let mut nonce = TextAttribute::new(ATTR_NONCE, String::new());
                if class == CLASS_ERROR_RESPONSE && nonce.get_from(&m).is_ok() {
                    self.nonces_issued.fetch_add(1, Ordering::Relaxed);
                    n.previous = n.current.replace((nonce.text, Instant::now()));
                }
                return false;
            }
        }
        if class == CLASS_SUCCESS_RESPONSE || class == CLASS_ERROR_RESPONSE {
            let mut allocs = lock(&self.allocs);
            if let Some((client, user)) = allocs.pending.remove(&m.transaction_id.0)
                && class == CLASS_SUCCESS_RESPONSE
                && client == dst
            {
                allocs.open.entry((client, local)).or_default().push(user);
                drop(allocs);
                let mut relayed = turn::proto::relayaddr::RelayedAddress::default();
                if relayed.get_from(&m).is_ok() {
                    self.relay_port(relayed.port, true);
                }
            }
        }
        true
    }

    fn admit_allocation(&self, m: &Message, src: SocketAddr, user: String) -> Inbound {
        let mut allocs = lock(&self.allocs);
        let total: usize = allocs.open.values().map(Vec::len).sum();
        let of_user = allocs
            .open
            .values()
            .flatten()
            .filter(|u| **u == user)
            .count();
        let of_address: usize = allocs
            .open
            .iter()
            .filter(|((c, _), _)| c.ip() == src.ip())
            .map(|(_, users)| users.len())
            .sum();
        let refusal = if total >= self.total_quota {
            Some((
                CODE_INSUFFICIENT_CAPACITY,
                "the server's allocations are all taken (--total-quota)",
            ))
        } else if of_user >= self.user_quota {
            Some((
                CODE_ALLOC_QUOTA_REACHED,
                "allocation quota of this user reached (--user-quota)",
            ))
        } else if of_address >= self.user_quota {
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

    /// Answers a request that needs a (new) nonce with the current one. Before the
    /// crate has issued any (the first moments after start), the request is dropped:
    /// no client request ever reaches the crate to make it issue one.
    fn challenge(&self, m: &Message, code: ErrorCode) -> Inbound {
        let n = lock(&self.nonces);
        match &n.current {
            Some((nonce, _)) => {
                let nonce = nonce.clone();
                drop(n);
                Inbound::Answer(error_response(m, code, "", Some((&nonce, &self.realm))))
            }
            None => Inbound::Drop,
        }
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
    /// The guard's own requests to hand to the crate (one listener carries them).
    own: Option<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Vec<u8>>>>,
}

impl GuardedConn {
    /// Wraps `inner`; with `own`, it also hands the guard's own requests to the crate.
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        guard: Arc<TurnGuard>,
        own: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
    ) -> webrtc::util::Result<Self> {
        let local = inner.local_addr()?;
        Ok(GuardedConn {
            inner,
            guard,
            local,
            own: own.map(tokio::sync::Mutex::new),
        })
    }

    async fn next(&self, buf: &mut [u8]) -> webrtc::util::Result<(usize, SocketAddr)> {
        if let Some(own) = &self.own {
            let mut own = own.lock().await;
            tokio::select! {
                biased;
                Some(pkt) = own.recv() => {
                    let n = pkt.len().min(buf.len());
                    buf[..n].copy_from_slice(&pkt[..n]);
                    return Ok((n, SELF_SOURCE));
                }
                r = self.inner.recv_from(buf) => return r,
            }
        }
        self.inner.recv_from(buf).await
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
            let (n, src) = self.next(buf).await?;
            if src == SELF_SOURCE && self.own.is_some() {
                return Ok((n, src));
            }
            match self.guard.inbound(&buf[..n], src) {
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
        if !self.guard.outbound(buf, target, self.local) {
            return Ok(buf.len()); // the answer to the guard's own request
        }
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
    fn challenges_share_the_guards_nonce_and_floods_are_dropped() {
        let g = TurnGuard::new("r", PeerPolicy::default(), 10, 10);
        let (src, local) = (addr("10.0.0.9:5000"), addr("10.0.0.1:3478"));
        let alloc = request(METHOD_ALLOCATE, vec![]);
        assert_eq!(
            g.inbound(&alloc, src),
            Inbound::Drop,
            "no nonce yet: dropped, not passed"
        );
        // The guard's own request, and the crate's answer to it, which is kept.
        let own = g.nonce_request();
        let mut m = Message::new();
        m.raw = own;
        m.decode().unwrap();
        let answer = error_response(&m, CODE_UNAUTHORIZED, "", Some(("n1", "r")));
        assert!(!g.outbound(&answer, SELF_SOURCE, local), "never sent");
        assert!(g.has_nonce());
        for _ in 0..40 {
            match g.inbound(&alloc, src) {
                Inbound::Answer(b) => assert_eq!(code_of(&b), 401),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(g.report().nonces_issued, 1);
        // A client's packet claiming the guard's own source is dropped.
        assert_eq!(g.inbound(&alloc, SELF_SOURCE), Inbound::Drop);
        // Past the per-address rate, requests are dropped unanswered.
        let answered = (0..200)
            .filter(|_| matches!(g.inbound(&alloc, src), Inbound::Answer(_)))
            .count();
        assert!(answered < 60, "{answered}");
        assert!(g.report().unauthenticated_dropped > 100);
        // Another address is not held back.
        assert!(matches!(
            g.inbound(&alloc, addr("10.0.0.10:5000")),
            Inbound::Answer(_)
        ));
    }

    /// A signed request whose nonce the guard does not know (an expired one, say) is
    /// answered 438 by the guard and never reaches the crate, whatever it asks for; with
    /// a known nonce, a loopback peer gets 403.
    #[test]
    fn unknown_nonces_never_reach_the_crate() {
        let g = TurnGuard::new("r", PeerPolicy::default(), 10, 10);
        let own = g.nonce_request();
        let mut m = Message::new();
        m.raw = own;
        m.decode().unwrap();
        let local = addr("10.0.0.1:3478");
        g.outbound(
            &error_response(&m, CODE_UNAUTHORIZED, "", Some(("n1", "r"))),
            SELF_SOURCE,
            local,
        );
        let signed = |nonce: &str| {
            let mut setters: Vec<Box<dyn Setter>> = vec![
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(METHOD_CHANNEL_BIND, CLASS_REQUEST)),
                Box::new(PeerAddress {
                    ip: "127.0.0.1".parse().unwrap(),
                    port: 6379,
                }),
                Box::new(TextAttribute::new(ATTR_NONCE, nonce.to_string())),
            ];
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, "alice".into())));
            let mut m = Message::new();
            m.build(&setters).unwrap();
            m.add(ATTR_MESSAGE_INTEGRITY, &[0u8; 20]);
            m.write_length();
            m.raw
        };
        let src = addr("10.0.0.9:5000");
        match g.inbound(&signed("expired-nonce"), src) {
            Inbound::Answer(b) => assert_eq!(code_of(&b), 438),
            other => panic!("{other:?}"),
        }
        match g.inbound(&signed("n1"), src) {
            Inbound::Answer(b) => assert_eq!(code_of(&b), 403),
            other => panic!("{other:?}"),
        }
    }
}
