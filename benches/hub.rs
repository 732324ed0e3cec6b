//! Hub load generator: N pairs of peers in rooms relay 1 KB messages through a hub,
//! reporting messages/s and round-trip p50/p99, then idle memory per connection.
//! Throughput: async peers, WINDOW messages in flight each, twice: pipelined (every
//! frame a peer has ready goes out in one write, as a pipelining load tool sends; on
//! this 2-core machine the generator shares the cores with the server, and one write
//! per frame made the generator cost more CPU per message than the hub it measured)
//! and one write per frame, as browsers send. Latency at 10,000 msg/s
//! offered: a thread per peer on blocking sockets (an async generator's own wakeups
//! doubled the measured median on this 2-core machine). Each is run `--runs` times
//! (default 3) on a fresh server; the median is reported with the spread of the runs,
//! and the server's CPU time per message relayed (both hub processes' where there are
//! two; redis-server's own is not counted).
//! Runs against a minimal relay (the floor: what the machine and this generator cost),
//! rtcdev's native and socket.io front-ends and the seed article's node server in one run, and with `--redis URL` against rtcdev sharing rooms through Redis
//! (one process, and two processes: rooms spread over them, or every pair split across
//! them). Loopback only;
//! every loop is bounded in count and time.
//!
//!   bench/hub.sh            (builds, prepares the baseline and a redis-server, raises the fd limit)
//!   cargo bench --bench hub -- --rtcdev target/release/rtcdev --baseline DIR [--redis URL]
//!       [--only NAME] [--idle N] [--runs N] [--client-threads N] [--pin]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// The generator's WebSocket settings. tungstenite zero-fills `read_buffer_size` bytes
/// of its read buffer before every read attempt; its 128 KB default made that memset the
/// generator's largest user-space cost, so it reads in signaling-sized chunks, as the
/// hub does.
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PAYLOAD_BYTES: usize = 1024;
const PAIRS: usize = 50;
const WINDOW: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(5);
const OFFERED_PER_SENDER: u64 = 100; // 50 pairs x (100 + 100 echoed) = 10,000 msg/s
const IDLE_CONNECTIONS: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Native,
    SocketIo,
}

struct Server {
    child: Child,
    port: u16,
    name: &'static str,
    proto: Proto,
    /// A second hub process sharing rooms through Redis.
    second: Option<(Child, u16)>,
    /// With a second process: true puts the B peer of every pair there (every message
    /// crosses Redis); false puts every other pair, both peers, there (rooms spread
    /// over the processes, as a balancer spreads them).
    split_pairs: bool,
}

impl Server {
    /// One server process.
    fn single(child: Child, port: u16, name: &'static str, proto: Proto) -> Server {
        Server {
            child,
            port,
            name,
            proto,
            second: None,
            split_pairs: false,
        }
    }

    /// The ports peers A and B of pair `i` connect to.
    fn ports(&self, i: usize) -> (u16, u16) {
        match &self.second {
            None => (self.port, self.port),
            Some((_, p)) if self.split_pairs => (self.port, *p),
            Some((_, p)) if i % 2 == 1 => (*p, *p),
            Some(_) => (self.port, self.port),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((c, _)) = &mut self.second {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server on {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rtcdev(bin: &str, name: &'static str, proto: Proto) -> Server {
    let (child, port) = rtcdev_process(bin, None, 0);
    Server::single(child, port, name, proto)
}

/// Hub processes sharing rooms through the Redis at `url`: one, or two with pairs split
/// across them (`split_pairs`) or rooms spread over them.
fn rtcdev_redis(bin: &str, name: &'static str, url: &str, two: bool, split_pairs: bool) -> Server {
    let (child, port) = rtcdev_process(bin, Some(url), 0);
    Server {
        child,
        port,
        name,
        proto: Proto::Native,
        second: two.then(|| rtcdev_process(bin, Some(url), 1)),
        split_pairs,
    }
}

/// With `--pin`, each hub process is held to one CPU (`taskset`): the first of a
/// server on CPU 0, the second on CPU 1, so one process and two processes are compared
/// at one core per process.
static PIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn rtcdev_process(bin: &str, redis: Option<&str>, cpu: usize) -> (Child, u16) {
    let port = free_port();
    let mut cmd = if *PIN.get().unwrap_or(&false) {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), bin]);
        c
    } else {
        Command::new(bin)
    };
    // Limits raised so the hub's flood protection does not cap a throughput test.
    let child = cmd
        .args(["signal", "--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--rate",
            "1000000",
            "--burst",
            "1000000",
            "--max-queue",
            "67108864",
            "--room-size",
            "16",
            // Every load client comes from 127.0.0.1.
            "--max-conns-per-ip",
            "100000",
            "--max-conns",
            "100000",
            "--conn-rate",
            "100000",
            "--join-rate",
            "100000",
        ])
        .args(redis.map(|r| ["--redis", r]).into_iter().flatten())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("rtcdev");
    wait_port(port);
    (child, port)
}

fn baseline(dir: &str, name: &'static str) -> Server {
    let port = free_port();
    let child = Command::new("node")
        .arg("server.js")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("node");
    wait_port(port);
    Server::single(child, port, name, Proto::SocketIo)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

/// One peer: native or socket.io (EIO 4 over websocket, the client side done by hand:
/// open packet, `40` connect, `42[...]` events, `2`/`3` ping/pong).
struct Peer {
    ws: Ws,
    proto: Proto,
    id: String,
}

impl Proto {
    /// The WebSocket URL of the hub on `port`.
    fn url(self, port: u16) -> String {
        match self {
            Proto::Native => format!("ws://127.0.0.1:{port}/ws"),
            Proto::SocketIo => {
                format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
            }
        }
    }

    /// The peer's id from the first frame that names it (native `welcome`, or the
    /// socket.io connect answer `40{"sid":...}`).
    fn id_from(self, text: &str) -> String {
        let v: Value = match self {
            Proto::Native => serde_json::from_str(text).unwrap(),
            Proto::SocketIo => serde_json::from_str(&text[2..]).unwrap(),
        };
        let key = if self == Proto::Native { "id" } else { "sid" };
        v[key].as_str().unwrap().to_string()
    }

    fn join_frame(self, room: &str) -> String {
        match self {
            Proto::Native => json!({"type": "join", "room": room}).to_string(),
            Proto::SocketIo => format!("42{}", json!(["join", room])),
        }
    }

    fn is_joined(self, text: &str) -> bool {
        match self {
            Proto::Native => {
                serde_json::from_str::<Value>(text).is_ok_and(|v| v["type"] == "joined")
            }
            Proto::SocketIo => text.starts_with(r#"42["joined""#),
        }
    }
}

impl Peer {
    async fn connect(port: u16, proto: Proto) -> Peer {
        let url = proto.url(port);
        // Nagle off, as browsers do: otherwise small frames wait for ACKs.
        let (ws, _) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true),
        )
        .await
        .expect("connect timeout")
        .expect("connect");
        let mut p = Peer {
            ws,
            proto,
            id: String::new(),
        };
        if proto == Proto::SocketIo {
            let _open = p.next_text().await; // 0{...}
            p.ws.send(Message::text("40")).await.unwrap();
        }
        p.id = proto.id_from(&p.next_text().await);
        p
    }

    /// The next text frame, not copied out of the WebSocket's buffer.
    async fn next_text(&mut self) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        loop {
            let next = tokio::time::timeout(CONNECT_TIMEOUT, self.ws.next()).await;
            match next
                .expect("no frame within the timeout")
                .expect("closed")
                .expect("ws error")
            {
                Message::Text(t) => {
                    if self.proto == Proto::SocketIo && t.as_str() == "2" {
                        self.ws.send(Message::text("3")).await.unwrap();
                        continue;
                    }
                    return t;
                }
                _ => continue,
            }
        }
    }

    async fn join(&mut self, room: &str) {
        let frame = self.proto.join_frame(room);
        self.ws.send(Message::text(frame)).await.unwrap();
        while !self.proto.is_joined(&self.next_text().await) {}
    }

    fn frame(&self, to: &str, seq: u64, t: u64, pad: &str) -> String {
        frame(self.proto, to, seq, t, pad)
    }

    /// The next relayed message's (seq, t) if one is already here, without waiting.
    async fn ready_message(&mut self) -> Option<(u64, u64)> {
        while let Some(Some(Ok(msg))) = self.ws.next().now_or_never() {
            let Message::Text(text) = msg else { continue };
            if self.proto == Proto::SocketIo && text.as_str() == "2" {
                self.ws.feed(Message::text("3")).await.ok()?;
                continue;
            }
            if let Some(v) = parse_relayed(self.proto, &text) {
                return Some(v);
            }
        }
        None
    }

    /// The next relayed message's (seq, t).
    async fn next_message(&mut self) -> (u64, u64) {
        loop {
            let text = self.next_text().await;
            if let Some(v) = parse_relayed(self.proto, &text) {
                return v;
            }
        }
    }
}

/// A relay frame, built by hand: the load generator must cost the machine little, or
/// it measures itself.
fn frame(proto: Proto, to: &str, seq: u64, t: u64, pad: &str) -> String {
    use std::fmt::Write;
    // Sized once, as the hub does: `format!` would grow it by doubling through the pad.
    let mut out = String::with_capacity(pad.len() + to.len() + 96);
    let _ = match proto {
        Proto::Native => write!(
            out,
            r#"{{"type":"signal","to":"{to}","data":{{"seq":{seq},"t":{t},"pad":"{pad}"}}}}"#
        ),
        Proto::SocketIo => {
            write!(
                out,
                r#"42["message",{{"to":"{to}","seq":{seq},"t":{t},"pad":"{pad}"}}]"#
            )
        }
    };
    out
}

/// (seq, t) of a relayed message, or None for anything else; scanned, not parsed.
fn parse_relayed(proto: Proto, text: &str) -> Option<(u64, u64)> {
    let ours = match proto {
        Proto::Native => text.starts_with(r#"{"type":"signal""#),
        Proto::SocketIo => text.starts_with(r#"42["message""#),
    };
    if !ours {
        return None;
    }
    Some((field_u64(text, "\"seq\":")?, field_u64(text, "\"t\":")?))
}

fn field_u64(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn pairs(server: &Server, n: usize) -> Vec<(Peer, Peer)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let room = format!("bench-{i}");
        let (pa, pb) = server.ports(i);
        let mut a = Peer::connect(pa, server.proto).await;
        let mut b = Peer::connect(pb, server.proto).await;
        a.join(&room).await;
        b.join(&room).await;
        out.push((a, b));
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// What one relay run measured: messages relayed per second (both directions), the
/// total, and round-trip and one-way percentiles in milliseconds.
struct Relay {
    rate: f64,
    rtt_p50: f64,
    rtt_p99: f64,
    total: u64,
    one_way_p50: f64,
    one_way_p99: f64,
}

impl Relay {
    /// From `total` messages relayed in RUN_FOR and the latency samples (microseconds).
    fn from_samples(total: u64, mut rtts: Vec<u64>, mut one_way: Vec<u64>) -> Relay {
        rtts.sort_unstable();
        one_way.sort_unstable();
        Relay {
            rate: total as f64 / RUN_FOR.as_secs_f64(),
            rtt_p50: percentile(&rtts, 0.5),
            rtt_p99: percentile(&rtts, 0.99),
            total,
            one_way_p50: percentile(&one_way, 0.5),
            one_way_p99: percentile(&one_way, 0.99),
        }
    }
}

/// Each A keeps WINDOW messages in flight to its B, which echoes them, for RUN_FOR.
/// Pipelined (`batch`), a peer writes every frame it has ready in one write, as a
/// pipelining load tool does, so the generator costs less CPU than the server it
/// measures; otherwise one write per frame, as a browser sends them.
async fn relay(server: &Server, batch: bool) -> Relay {
    let ps = pairs(server, PAIRS).await;
    let start = Instant::now();
    let relayed = Arc::new(AtomicU64::new(0));
    let rtts = Arc::new(Mutex::new(Vec::<u64>::new()));
    let one_way_all = Arc::new(Mutex::new(Vec::<u64>::new()));
    let pad = "x".repeat(PAYLOAD_BYTES);
    let mut tasks = Vec::new();
    for (a, b) in ps {
        let (relayed, rtts, pad, one_way_all) = (
            relayed.clone(),
            rtts.clone(),
            pad.clone(),
            one_way_all.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let a_id = a.id.clone();
            let b_id = b.id.clone();
            let proto = a.proto;
            let (mut a_tx, mut a_rx) = a.ws.split();
            let mut b = b;
            // B echoes until the deadline: every message that is already here gets its
            // echo in the same write.
            let one_way = one_way_all.clone();
            let echo = tokio::spawn(async move {
                let deadline = start + RUN_FOR + Duration::from_secs(1);
                let mut lat = Vec::new();
                while let Ok(mut next) =
                    tokio::time::timeout_at(deadline.into(), b.next_message()).await
                {
                    let sent = tokio::time::timeout_at(deadline.into(), async {
                        loop {
                            let (seq, t) = next;
                            // Sender and receiver share this process's clock: one hop, A -> hub -> B.
                            lat.push(start.elapsed().as_micros() as u64 - t);
                            let f = b.frame(&a_id, seq, t, &pad);
                            b.ws.feed(Message::text(f)).await?;
                            let ready = if batch { b.ready_message().await } else { None };
                            match ready {
                                Some(m) => next = m,
                                None => break,
                            }
                        }
                        b.ws.flush().await
                    })
                    .await;
                    if lat.len() >= 256 {
                        one_way.lock().await.extend(lat.drain(..));
                    }
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                one_way.lock().await.extend(lat);
            });
            let pad = "x".repeat(PAYLOAD_BYTES);
            let mut local = Vec::new();
            let mut seq = 0u64;
            let mut inflight = 0usize;
            let deadline = start + RUN_FOR;
            while Instant::now() < deadline {
                if inflight < WINDOW {
                    // The window refilled (in one write when pipelined).
                    let sent = tokio::time::timeout_at(deadline.into(), async {
                        while inflight < WINDOW {
                            let t = start.elapsed().as_micros() as u64;
                            let f = frame(proto, &b_id, seq, t, &pad);
                            a_tx.feed(Message::text(f)).await?;
                            if !batch {
                                a_tx.flush().await?;
                            }
                            seq += 1;
                            inflight += 1;
                        }
                        a_tx.flush().await
                    })
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                    continue;
                }
                let m = tokio::time::timeout_at(deadline.into(), a_rx.next()).await;
                let Ok(Some(Ok(mut msg))) = m else { break };
                // This echo and every one already here, before the window is refilled.
                loop {
                    if let Message::Text(text) = &msg {
                        let text = text.as_str();
                        if proto == Proto::SocketIo && text == "2" {
                            let _ = a_tx.send(Message::text("3")).await;
                        } else if let Some((_, t)) = parse_relayed(proto, text) {
                            local.push(start.elapsed().as_micros() as u64 - t);
                            inflight = inflight.saturating_sub(1);
                            relayed.fetch_add(2, Ordering::Relaxed);
                        }
                    }
                    match a_rx.next().now_or_never() {
                        Some(Some(Ok(more))) => msg = more,
                        _ => break,
                    }
                }
            }
            rtts.lock().await.extend(local);
            let _ = echo.await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Relay::from_samples(
        relayed.load(Ordering::Relaxed),
        std::mem::take(&mut *rtts.lock().await),
        std::mem::take(&mut *one_way_all.lock().await),
    )
}

/// A peer on a blocking socket, for the thread-per-peer latency run.
struct SyncPeer {
    ws: tokio_tungstenite::tungstenite::WebSocket<
        tokio_tungstenite::tungstenite::stream::MaybeTlsStream<std::net::TcpStream>,
    >,
    proto: Proto,
    id: String,
}

impl SyncPeer {
    fn connect(port: u16, proto: Proto) -> SyncPeer {
        use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
        let (ws, _) = tokio_tungstenite::tungstenite::client::connect_with_config(
            proto.url(port),
            Some(client_config()),
            3,
        )
        .expect("connect");
        if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_nodelay(true).expect("nodelay");
            tcp.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
        }
        let mut p = SyncPeer {
            ws,
            proto,
            id: String::new(),
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        if proto == Proto::SocketIo {
            p.next_text(deadline).expect("open packet");
            p.send("40".into());
        }
        p.id = proto.id_from(&p.next_text(deadline).expect("welcome or connect answer"));
        p
    }

    fn send(&mut self, text: String) -> bool {
        self.ws.send(Message::text(text)).is_ok()
    }

    /// The next text frame before the deadline (Engine.IO pings answered on the way).
    fn next_text(&mut self, deadline: Instant) -> Option<String> {
        use tokio_tungstenite::tungstenite::Error;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    if self.proto == Proto::SocketIo && t.as_str() == "2" {
                        self.send("3".into());
                        continue;
                    }
                    return Some(t.to_string());
                }
                Ok(_) => continue,
                Err(Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn join(&mut self, room: &str) {
        assert!(self.send(self.proto.join_frame(room)), "join");
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while let Some(t) = self.next_text(deadline) {
            if self.proto.is_joined(&t) {
                return;
            }
        }
        panic!("no joined answer");
    }
}

/// The 10k/s run with one OS thread per peer on blocking sockets: the kernel wakes the
/// very thread whose socket has data, so the generator puts no scheduler of its own
/// (no runtime worker to wake, no task to poll) between the hub and the clock. Each A
/// sends on its schedule and waits for the echo; each B echoes.
fn relay_threads(server: &Server, per_sender: u64) -> Relay {
    let ps: Vec<(SyncPeer, SyncPeer)> = (0..PAIRS)
        .map(|i| {
            let room = format!("bench-{i}");
            let (pa, pb) = server.ports(i);
            let mut a = SyncPeer::connect(pa, server.proto);
            let mut b = SyncPeer::connect(pb, server.proto);
            a.join(&room);
            b.join(&room);
            (a, b)
        })
        .collect();
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let period = Duration::from_secs_f64(1.0 / per_sender as f64);
    let pad = "x".repeat(PAYLOAD_BYTES);
    let micros = move || start.elapsed().as_micros() as u64;
    let (mut rtts, mut one_way) = (Vec::new(), Vec::new());
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, (mut a, mut b)) in ps.into_iter().enumerate() {
            let pad = &pad;
            let (a_id, b_id) = (a.id.clone(), b.id.clone());
            let echo = scope.spawn(move || {
                let mut lat = Vec::new();
                while let Some(text) = b.next_text(deadline + Duration::from_secs(1)) {
                    if let Some((seq, t)) = parse_relayed(b.proto, &text) {
                        lat.push(micros() - t);
                        if !b.send(frame(b.proto, &a_id, seq, t, pad)) {
                            break;
                        }
                    }
                }
                lat
            });
            let send = scope.spawn(move || {
                let mut lat = Vec::new();
                let mut next = start + period.mul_f64(i as f64 / PAIRS as f64);
                let mut seq = 0u64;
                while next < deadline {
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let t = micros();
                    if !a.send(frame(a.proto, &b_id, seq, t, pad)) {
                        break;
                    }
                    // The echo of this message; anything else is skipped.
                    while let Some(text) = a.next_text(deadline + Duration::from_secs(1)) {
                        if parse_relayed(a.proto, &text).is_some_and(|(s, _)| s == seq) {
                            lat.push(micros() - t);
                            break;
                        }
                    }
                    seq += 1;
                    next = (next + period).max(Instant::now());
                }
                lat
            });
            handles.push((send, echo));
        }
        for (send, echo) in handles {
            rtts.extend(send.join().unwrap_or_default());
            one_way.extend(echo.join().unwrap_or_default());
        }
    });
    Relay::from_samples(2 * rtts.len() as u64, rtts, one_way)
}

async fn idle(server: &Server, n: usize) -> (u64, u64, f64) {
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(pid);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        if i % 2000 == 0 {
            eprintln!("  {i} connections held");
        }
        held.push(Peer::connect(server.port, server.proto).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kb(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    drop(held);
    (before, after, per)
}

/// The floor: a minimal relay (tokio-tungstenite, nodelay, no JSON parsing, no rooms, no
/// limits) speaking just enough of the native protocol for the load generator. What the
/// machine and the generator cost on their own; the hub's figures sit on top of it.
fn floor_server(port: u16) -> ! {
    use std::sync::Mutex as StdMutex;
    use tokio::sync::mpsc;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let peers: Arc<StdMutex<HashMap<String, mpsc::UnboundedSender<String>>>> = Arc::default();
        let mut n = 0u64;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            n += 1;
            let id = format!("p{n}");
            let peers = peers.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let (mut tx, mut rx) = ws.split();
                let (out, mut inbox) = mpsc::unbounded_channel::<String>();
                peers.lock().unwrap().insert(id.clone(), out.clone());
                let _ = out.send(format!(r#"{{"type":"welcome","id":"{id}"}}"#));
                let writer = tokio::spawn(async move {
                    while let Some(text) = inbox.recv().await {
                        if tx.feed(Message::text(text)).await.is_err() {
                            return;
                        }
                        while let Ok(more) = inbox.try_recv() {
                            if tx.feed(Message::text(more)).await.is_err() {
                                return;
                            }
                        }
                        if tx.flush().await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(msg)) = rx.next().await {
                    let Message::Text(text) = msg else { continue };
                    let text = text.as_str();
                    if text.contains(r#""type":"join""#) {
                        let _ = out.send(r#"{"type":"joined"}"#.to_string());
                    } else if let Some(rest) = text.split_once(r#""to":""#).map(|(_, r)| r) {
                        let to = rest.split('"').next().unwrap_or_default();
                        let target = peers.lock().unwrap().get(to).cloned();
                        if let Some(t) = target {
                            let _ = t.send(text.to_string());
                        }
                    }
                }
                peers.lock().unwrap().remove(&id);
                writer.abort();
            });
        }
    });
    unreachable!()
}

fn floor(name: &'static str) -> Server {
    let port = free_port();
    let child = Command::new(std::env::current_exe().expect("bench binary"))
        .args(["--floor-serve", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("floor relay");
    wait_port(port);
    Server::single(child, port, name, Proto::Native)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor-serve") {
        floor_server(args[i + 1].parse().expect("--floor-serve PORT"));
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let bin = arg("--rtcdev").unwrap_or_else(|| "target/release/rtcdev".into());
    let _ = PIN.set(args.iter().any(|a| a == "--pin"));
    let base = arg("--baseline");
    let idle_n: usize = arg("--idle")
        .map(|s| s.parse().unwrap())
        .unwrap_or(IDLE_CONNECTIONS);
    // --client-threads 0: the load generator on one thread (no cross-thread wakeups).
    let mut rt = match arg("--client-threads").as_deref() {
        Some("0") => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.parse().expect("--client-threads N"));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = rt.enable_all().build().unwrap();
    let mut rows: Vec<(String, HashMap<String, String>)> = Vec::new();
    // Each server by its name, and how to start a fresh one under it.
    type Make = Box<dyn Fn(&'static str) -> Server>;
    let mut servers: Vec<(&'static str, Make)> = vec![
        ("floor: minimal relay (no hub)", Box::new(floor)),
        ("rtcdev native /ws", {
            let b = bin.clone();
            Box::new(move |name| rtcdev(&b, name, Proto::Native))
        }),
        ("rtcdev socket.io", {
            let b = bin.clone();
            Box::new(move |name| rtcdev(&b, name, Proto::SocketIo))
        }),
    ];
    if let Some(dir) = base.clone() {
        servers.push((
            "seed node+socket.io",
            Box::new(move |name| baseline(&dir, name)),
        ));
    }
    if let Some(url) = arg("--redis") {
        // A fresh Redis database for every server started, so no run sees another's rooms.
        let db = Arc::new(AtomicU64::new(0));
        let fresh = move || {
            format!(
                "{}/{}",
                url.trim_end_matches('/'),
                1 + db.fetch_add(1, Ordering::Relaxed) % 15
            )
        };
        for (name, two, split_pairs) in [
            ("rtcdev native, 1 process, --redis", false, false),
            (
                "rtcdev native, 2 processes via Redis, rooms spread",
                true,
                false,
            ),
            (
                "rtcdev native, 2 processes via Redis, every pair split",
                true,
                true,
            ),
        ] {
            let (b, f) = (bin.clone(), fresh.clone());
            servers.push((
                name,
                Box::new(move |name| rtcdev_redis(&b, name, &f(), two, split_pairs)),
            ));
        }
    }
    println!(
        "hub bench: {PAIRS} pairs, {PAYLOAD_BYTES} B messages, window {WINDOW}, {}s a run; idle: {idle_n} connections\n",
        RUN_FOR.as_secs()
    );
    let only = arg("--only");
    let runs: usize = arg("--runs")
        .map(|s| s.parse().expect("--runs N"))
        .unwrap_or(3)
        .max(1);
    // The servers asked for (`--only`).
    servers.retain(|(name, _)| only.as_deref().is_none_or(|o| name.contains(o)));
    let process_cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit(") ")
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    };
    // The CPU time of the hub: both processes where there are two (redis-server's own
    // is not counted).
    let server_cpu = |server: &Server| -> f64 {
        process_cpu(server.child.id())
            + server
                .second
                .as_ref()
                .map_or(0.0, |(child, _)| process_cpu(child.id()))
    };
    // Throughput, pipelined and one write per frame, each run on a fresh server. Round
    // by round, every server in turn: a stretch of noise on the shared cores falls on
    // all of them, not on one server's runs.
    let mut throughput: Vec<[Vec<(Relay, f64)>; 2]> =
        servers.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for i in 0..runs {
        for ((name, make), runs_of) in servers.iter().zip(throughput.iter_mut()) {
            for (m, batch) in [true, false].into_iter().enumerate() {
                let mode = if batch {
                    "pipelined"
                } else {
                    "one write per frame"
                };
                eprintln!("{name}: max throughput ({mode}), round {}/{runs}", i + 1);
                let server = make(name);
                let cpu0 = server_cpu(&server);
                let r = rt.block_on(relay(&server, batch));
                let cpu = server_cpu(&server) - cpu0;
                runs_of[m].push((r, cpu));
            }
        }
    }
    for ((name, make), runs_of) in servers.iter().zip(throughput) {
        let mut row = HashMap::new();
        // The median run by msg/s, with the spread; the server's CPU time per message
        // is the median of the runs' own.
        for (mut maxes, mode) in runs_of.into_iter().zip(["max", "1w"]) {
            let mut per_msg: Vec<f64> = maxes
                .iter()
                .map(|(r, cpu)| cpu * 1e6 / r.total.max(1) as f64)
                .collect();
            per_msg.sort_by(f64::total_cmp);
            maxes.sort_by(|a, b| a.0.rate.total_cmp(&b.0.rate));
            let (r, cpu) = &maxes[maxes.len() / 2];
            let (lo, hi) = (maxes[0].0.rate, maxes[maxes.len() - 1].0.rate);
            let mut put = |key: &str, value: String| row.insert(format!("{mode} {key}"), value);
            put("msg/s", format!("{:.0}", r.rate));
            put("range", format!("{lo:.0}-{hi:.0}"));
            put("p50 ms", format!("{:.2}", r.rtt_p50));
            put("p99 ms", format!("{:.2}", r.rtt_p99));
            put("total", r.total.to_string());
            put("server cpu s", format!("{cpu:.2}"));
            put("cpu us/msg", format!("{:.1}", per_msg[per_msg.len() / 2]));
            put(
                "cpu us/msg exact",
                format!("{}", per_msg[per_msg.len() / 2]),
            );
            put(
                "cpu us/msg range",
                format!("{:.1}-{:.1}", per_msg[0], per_msg[per_msg.len() - 1]),
            );
        }
        // Latency at 10k msg/s, a thread per peer; the median of the runs and the
        // spread of their p99s, since one run on a shared machine can catch a stall.
        let mut lats = Vec::new();
        let mut s = make(name);
        for i in 0..runs {
            if i > 0 {
                drop(s);
                s = make(name);
            }
            eprintln!("{}: 10k/s offered, run {}/{runs}", s.name, i + 1);
            lats.push(relay_threads(&s, OFFERED_PER_SENDER));
        }
        let median = |f: fn(&Relay) -> f64| {
            let mut v: Vec<f64> = lats.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let p99s: Vec<f64> = lats.iter().map(|r| r.rtt_p99).collect();
        let (lo, hi) = p99s
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let mut put = |key: &str, value: String| row.insert(format!("10k/s {key}"), value);
        put("msg/s", format!("{:.0}", median(|r| r.rate)));
        put("p50 ms", format!("{:.3}", median(|r| r.rtt_p50)));
        put("p99 ms", format!("{:.3}", median(|r| r.rtt_p99)));
        put("p99 range", format!("{lo:.2}-{hi:.2}"));
        put(
            "one-way p50 ms",
            format!("{:.3}", median(|r| r.one_way_p50)),
        );
        put(
            "one-way p99 ms",
            format!("{:.3}", median(|r| r.one_way_p99)),
        );
        drop(s);
        println!("{name}: {row:?}");
        rows.push((name.to_string(), row));
    }
    // Idle connections last: 10,000 closed sockets linger in TIME_WAIT and would
    // disturb the relay runs that follow them.
    for ((name, make), (_, row)) in servers.iter().zip(rows.iter_mut()) {
        if name.contains("Redis") || name.contains("--redis") || name.starts_with("floor") {
            row.insert("idle B/conn".into(), "-".into());
            continue;
        }
        let s = make(name);
        eprintln!("{name}: idle");
        let (before, after, per) = rt.block_on(idle(&s, idle_n));
        row.insert("idle RSS before KB".into(), before.to_string());
        row.insert("idle RSS after KB".into(), after.to_string());
        row.insert("idle B/conn".into(), format!("{per:.0}"));
        drop(s);
        std::thread::sleep(Duration::from_secs(2));
    }
    println!(
        "\n| server | max msg/s, pipelined (median of {runs}) | range | server CPU µs/msg (median, range) | RTT p50 / p99 at max (ms) | max msg/s, one write per frame | range | server CPU µs/msg (median, range) | msg/s at 10k offered | one-way p50 / p99 at 10k (ms) | RTT p50 / p99 at 10k (ms) | RTT p99 range, {runs} runs | idle bytes/conn ({idle_n} held) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, r) in &rows {
        println!(
            "| {name} | {} | {} | {} ({}) | {} / {} | {} | {} | {} ({}) | {} | {} / {} | {} / {} | {} | {} |",
            r["max msg/s"],
            r["max range"],
            r["max cpu us/msg"],
            r["max cpu us/msg range"],
            r["max p50 ms"],
            r["max p99 ms"],
            r["1w msg/s"],
            r["1w range"],
            r["1w cpu us/msg"],
            r["1w cpu us/msg range"],
            r["10k/s msg/s"],
            r["10k/s one-way p50 ms"],
            r["10k/s one-way p99 ms"],
            r["10k/s p50 ms"],
            r["10k/s p99 ms"],
            r["10k/s p99 range"],
            r["idle B/conn"]
        );
    }
    // The goals: server CPU per message against the article's server, same run.
    let exact = |r: &HashMap<String, String>, key: &str| -> Option<f64> {
        r.get(&format!("{key} cpu us/msg exact"))?.parse().ok()
    };
    if let Some((_, node)) = rows.iter().find(|(n, _)| n.starts_with("seed node")) {
        println!();
        for (name, goal) in [("rtcdev native /ws", 10.0), ("rtcdev socket.io", 5.0)] {
            let Some((_, r)) = rows.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let ratio = |key: &str| Some(exact(node, key)? / exact(r, key)?);
            let (Some(max), Some(one)) = (ratio("max"), ratio("1w")) else {
                continue;
            };
            let met = |x: f64| if x >= goal { "met" } else { "not met" };
            println!(
                "{name}: node's server CPU per message / rtcdev's: pipelined {max:.1}x ({}), one write per frame {one:.1}x ({}); goal {goal}x",
                met(max),
                met(one)
            );
        }
        // The best ratio any relay on the same stack (tokio + tungstenite, no hub
        // logic) reaches against node in this run: what the kernel and the stack
        // leave, whatever the hub does.
        if let Some((_, floor)) = rows.iter().find(|(n, _)| n.starts_with("floor")) {
            let ratio = |key: &str| Some(exact(node, key)? / exact(floor, key)?);
            if let (Some(max), Some(one)) = (ratio("max"), ratio("1w")) {
                println!(
                    "floor (a relay with no hub logic): node's server CPU per message / the floor's: pipelined {max:.1}x, one write per frame {one:.1}x: no hub on this stack does better here"
                );
            }
        }
    }
}
