//! Slow, bursty and flooding clients against the hub: it never freezes, bounds what each
//! client may hold, and always shuts down. Real clients on loopback, each bounded in
//! count and time; multi-threaded runtimes, so hub and clients run in parallel.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{NativeClient, Sandbox, TestHub, get_head, http_request, http_request_head, js_dir};
use rtcdev::hub::HubConfig;

/// `rtcdev signal` on a loopback port, with its stderr kept for the test to read.
struct Signal {
    child: std::process::Child,
    addr: SocketAddr,
    stderr: std::path::PathBuf,
}

impl Signal {
    fn start(sb: &Sandbox, extra: &[&str], env: &[(&str, &str)]) -> Signal {
        let stderr = sb.path().join(format!("stderr-{}.log", rand_suffix()));
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rtcdev"));
        cmd.current_dir(sb.path())
            .args(["signal", "--bind", "127.0.0.1", "--port", "0"])
            .args(extra)
            .env("HOME", sb.path())
            .env("RUST_LOG", "rtcdev=info,error")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("RTCDEV_")
                || k == "CAROOT"
                || k == "JAVA_HOME"
                || k.starts_with("XDG_")
            {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("rtcdev");
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let addr = loop {
            let line = lines.next().expect("rtcdev printed its URL").unwrap();
            if let Some(url) = line.trim().strip_prefix("Local:") {
                break url.trim().trim_start_matches("http://").parse().unwrap();
            }
        };
        // Keep reading stdout so later prints never block on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Signal {
            child,
            addr,
            stderr,
        }
    }

    fn signal(&self, name: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The exit status, waiting at most `limit`.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `GET /healthz`, answered within `limit` or an error saying how it failed.
fn healthz(addr: SocketAddr, limit: Duration) -> Result<serde_json::Value, String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let body = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response: {out:?}"))?
        .1;
    serde_json::from_str(body).map_err(|e| format!("{e}: {out}"))
}

/// The hub deadlock as it was reproduced: 16 socket.io long-polling clients in one room,
/// each posting a batch of 100 messages a second and polling every 50-400 ms, plus
/// native peers in the same room that stop reading. The room's fan-out overflows the
/// slow peers' queues over and over; the hub used to disconnect such a peer inline,
/// under the room lock, and froze for good (no /healthz, no SIGTERM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_bursty_clients_never_freeze_the_hub() {
    let sb = Sandbox::new();
    let mut hub = Signal::start(&sb, &["--max-queue", "65536"], &[]);
    let url = format!("http://{}", hub.addr);

    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut c = NativeClient::connect(&format!("ws://{}/ws", hub.addr)).await;
        c.join("hostile").await;
        // From here on it never reads.
        stuck.push(c);
    }
    let swarm = tokio::process::Command::new("node")
        .arg(js_dir().join("hostile_polling.mjs"))
        .args([&url, "16", "12", "100", "hostile", "50", "400"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");

    // A frozen hub never answers again, so two missed answers in a row catch it; one
    // slow answer alone may be a loaded machine (this test's own swarm on 2 cores), not
    // a freeze. A miss at the end of the load gets its follow-up check too.
    let limit = Duration::from_secs(5);
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut checks = 0;
    let mut missed: Option<String> = None;
    while started.elapsed() < Duration::from_secs(13) || missed.is_some() {
        let addr = hub.addr;
        let t = Instant::now();
        let r = tokio::task::spawn_blocking(move || healthz(addr, limit))
            .await
            .unwrap();
        let at = started.elapsed().as_secs_f64();
        match r {
            Ok(_) => missed = None,
            Err(e) => {
                if let Some(first) = missed {
                    panic!(
                        "/healthz did not answer within {limit:?} twice in a row, {at:.1} s \
                         into the load: {first}; then: {e}"
                    );
                }
                missed = Some(format!("{at:.1} s in: {e}"));
            }
        }
        worst = worst.max(t.elapsed());
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(15), swarm.wait_with_output())
        .await
        .expect("the swarm ends")
        .unwrap();
    let swarm: serde_json::Value = serde_json::from_slice(&out.stdout).expect("swarm summary");
    assert_eq!(swarm["handshakes"], 16, "{swarm}");
    assert!(
        swarm["posted"].as_u64().unwrap() >= 1000,
        "the load really ran: {swarm}"
    );

    let health = healthz(hub.addr, limit).unwrap();
    assert!(
        health["limits"]["queue_overflows"].as_u64().unwrap() >= 1,
        "slow peers were cut off, so the overflow path ran: {health}"
    );
    eprintln!("{checks} /healthz checks, slowest {worst:?}; swarm {swarm}; {health}");

    hub.signal("TERM");
    let status = hub
        .wait(Duration::from_secs(12))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", hub.stderr());
    drop(stuck);
}

/// A shutdown that cannot finish (a test hook hangs a runtime thread, as a deadlock
/// would) still ends the process by the deadline, and says so; a second signal ends it
/// at once.
#[test]
fn a_stuck_shutdown_still_exits() {
    let sb = Sandbox::new();
    let hook = [(rtcdev::server::TEST_HOOK_HANG_SHUTDOWN, "1")];

    let mut hub = Signal::start(&sb, &[], &hook);
    healthz(hub.addr, Duration::from_secs(2)).unwrap();
    hub.signal("TERM");
    let deadline = rtcdev::server::SHUTDOWN_DEADLINE;
    assert!(
        hub.wait(deadline / 2).is_none(),
        "the hook holds the shutdown"
    );
    let status = hub
        .wait(deadline + Duration::from_secs(10))
        .expect("exits by the deadline");
    assert_eq!(status.code(), Some(rtcdev::server::EXIT_DEADLINE));
    assert!(
        hub.stderr().contains("shutdown did not finish"),
        "{}",
        hub.stderr()
    );

    let mut hub = Signal::start(&sb, &[], &hook);
    hub.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    hub.signal("INT");
    let status = hub
        .wait(Duration::from_secs(3))
        .expect("a second signal exits at once");
    assert_eq!(status.code(), Some(rtcdev::server::EXIT_SECOND_SIGNAL));
    assert!(
        hub.stderr().contains("second interrupt"),
        "{}",
        hub.stderr()
    );
}

fn upgrade_head(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// A page of another site cannot use the hub by leaving `Origin` out: the requests an
/// image or a no-cors fetch makes (`Sec-Fetch-Site: cross-site`, no `Origin`) are refused
/// before they open a socket.io session or spend a connection token, so they cannot hold
/// the places of the user's own address; so are navigations aimed at the hub (iframes,
/// window.open). The page's own requests, a typed address and clients outside a
/// browser pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_sites_cannot_use_the_hub_without_their_origin() {
    let hub = TestHub::start(HubConfig {
        max_conns_per_ip: 8,
        ..HubConfig::default()
    })
    .await;
    let head = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
    };
    let image =
        "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\n";
    for (i, eio) in [3, 4, 3, 4, 3, 4, 3, 4, 3, 4].iter().enumerate() {
        let path = format!("/socket.io/?EIO={eio}&transport=polling&t={i}");
        let r = http_request(hub.addr, &head(&path, image)).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(r.text().contains("another site"), "{}", r.text());
    }
    // A navigation aimed at the hub (a hidden iframe, window.open, a GET form) is no
    // better than an image.
    for dest in ["iframe", "document"] {
        let nav = format!(
            "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: {dest}\r\n"
        );
        let r = http_request(hub.addr, &head("/socket.io/?EIO=3&transport=polling", &nav)).await;
        assert_eq!(r.status, 403, "navigation into {dest}: {}", r.text());
    }
    // A value that decodes to a terminal control code (CSI) is named in printable ASCII.
    let odd = http_request(
        hub.addr,
        &head(
            "/socket.io/?EIO=4&transport=polling",
            "Sec-Fetch-Site: x\u{9b}2J\r\n",
        ),
    )
    .await;
    assert_eq!(odd.status, 403);
    assert!(
        odd.text().contains("Sec-Fetch-Site: x??2J"),
        "{}",
        odd.text()
    );
    // What an image pointed at /ws sends: no upgrade, no Origin.
    let head_only = http_request_head(hub.addr, &head("/ws", image)).await;
    assert!(head_only.starts_with("HTTP/1.1 403"), "{head_only}");
    for site in ["same-site", "cross-site", "something-new"] {
        let upgrade = upgrade_head("/ws").replace(
            "\r\n\r\n",
            &format!("\r\nSec-Fetch-Site: {site}\r\nSec-Fetch-Mode: websocket\r\n\r\n"),
        );
        let head = http_request_head(hub.addr, &upgrade).await;
        assert!(head.starts_with("HTTP/1.1 403"), "/ws, {site}: {head}");
    }
    assert_eq!(hub.hub.limits().report().connections, 0);
    for extra in [
        "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\n",
        "Sec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n",
        "",
    ] {
        let r = http_request(
            hub.addr,
            &head("/socket.io/?EIO=4&transport=polling", extra),
        )
        .await;
        assert_eq!(r.status, 200, "{extra:?}: {}", r.text());
    }
}

/// Connections per address and in all are capped before the upgrade or the socket.io
/// handshake, with 429/503 and a sentence naming the flag; `/healthz` is never refused
/// and counts the refusals; a closed connection frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_in_all() {
    let hub = TestHub::start(HubConfig {
        max_conns_per_ip: 3,
        ..HubConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(NativeClient::connect(&hub.ws_url()).await);
    }
    let refused = http_request(hub.addr, &upgrade_head("/ws")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(
        refused.text().contains("--max-conns-per-ip"),
        "{}",
        refused.text()
    );
    let sio = http_request(hub.addr, &get_head("/socket.io/?EIO=4&transport=polling")).await;
    assert_eq!(sio.status, 429, "a socket.io handshake too: {}", sio.text());
    let health = http_request(hub.addr, &get_head("/healthz")).await;
    assert_eq!(health.status, 200, "/healthz is never refused");
    let v: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(v["limits"]["connections"], 3);
    assert_eq!(v["limits"]["refused_per_address"], 2);

    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while hub.hub.limits().report().connections > 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    NativeClient::connect(&hub.ws_url()).await;

    let full = TestHub::start(HubConfig {
        max_conns: 1,
        ..HubConfig::default()
    })
    .await;
    let _one = NativeClient::connect(&full.ws_url()).await;
    let refused = http_request(full.addr, &upgrade_head("/ws")).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("--max-conns"), "{}", refused.text());
}

/// New connections from one address faster than the connection rate get 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_per_address_are_rate_limited() {
    const RATE: u32 = 1;
    const BURST: u32 = 5;
    let hub = TestHub::start(HubConfig {
        conn_rate: (RATE, BURST),
        ..HubConfig::default()
    })
    .await;
    // The address's bucket is made full by the first request, after this.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = http_request(hub.addr, &get_head("/socket.io/?EIO=4&transport=polling")).await;
        statuses.push(r.status);
    }
    // Every request was admitted or refused by now: the burst plus what the bucket
    // refilled in that time is all that may have been let in.
    let elapsed = started.elapsed();
    let refill = (elapsed.as_secs_f64() * f64::from(RATE)).ceil() as usize;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (BURST as usize..=BURST as usize + refill).contains(&ok),
        "burst of {BURST} plus at most {refill} refilled in {elapsed:?}: {statuses:?}"
    );
    assert_eq!(ok + limited, 12, "{statuses:?}");
    assert!(hub.hub.limits().report().refused_rate >= limited as u64);
}

/// Pings and binary frames spend rate-limit tokens too, and a peer that keeps sending
/// far past its limit is closed (1008) instead of being answered forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_counts_against_the_rate_limit() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let hub = TestHub::start(HubConfig {
        rate_per_sec: 1,
        rate_burst: 10,
        ..HubConfig::default()
    })
    .await;
    let mut c = NativeClient::connect(&hub.ws_url()).await;
    for _ in 0..10 {
        c.ws.send(Message::Ping(Default::default())).await.unwrap();
    }
    c.send(serde_json::json!({"type": "ping"})).await;
    let v = c.recv_type("error").await;
    assert_eq!(v["code"], "rate-limited", "ten pings spent the burst: {v}");

    for _ in 0..60 {
        if c.ws
            .send(Message::Binary(vec![0u8; 8].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(c.close_code().await, Some(1008), "flooding past the limit");
    let r = hub.hub.limits().report();
    assert!(r.rate_limited_frames >= 40, "{r:?}");
    assert_eq!(r.closed_for_flooding, 1, "{r:?}");
}

/// A socket.io peer that stops polling is cut off when its queue passes `--max-queue`
/// bytes (not a count of packets), and the room is told it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_peer_that_does_not_read_is_cut_off_by_bytes() {
    let hub = TestHub::start(HubConfig {
        max_queue_bytes: 32 * 1024,
        rate_per_sec: 10_000,
        rate_burst: 10_000,
        ..HubConfig::default()
    })
    .await;
    let mut sender = NativeClient::connect(&hub.ws_url()).await;
    sender.join("q").await;
    // One raw polling client that joins, then waits a minute between polls.
    let mut reader = tokio::process::Command::new("node")
        .arg(js_dir().join("hostile_polling.mjs"))
        .args([&hub.http_url(), "1", "8", "0", "q", "60000", "60000"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let joined = sender.recv_type("peer-joined").await;
    let slow = joined["id"].as_str().unwrap().to_string();
    let payload = "x".repeat(1000);
    for i in 0..200 {
        sender
            .send(serde_json::json!({"type": "signal", "data": {"n": i, "pad": payload}}))
            .await;
    }
    let left = sender.recv_type("peer-left").await;
    assert_eq!(left["id"], slow.as_str());
    let r = hub.hub.limits().report();
    assert_eq!(r.queue_overflows, 1, "{r:?}");
    let _ = reader.kill().await;
}

/// A flood of refused connections writes one log line, then a count, not a line each.
#[test]
fn refusals_do_not_flood_the_log() {
    let sb = Sandbox::new();
    let mut hub = Signal::start(&sb, &["--max-conns-per-ip", "1"], &[]);
    let _held = std::net::TcpStream::connect(hub.addr).map(|mut s| {
        s.write_all(upgrade_head("/ws").as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        s
    });
    let mut refused = 0;
    for _ in 0..50 {
        let mut s = std::net::TcpStream::connect(hub.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(upgrade_head("/ws").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if out.starts_with("HTTP/1.1 429") {
            refused += 1;
        }
    }
    assert_eq!(refused, 50);
    hub.signal("TERM");
    hub.wait(Duration::from_secs(12)).expect("exits");
    let lines = hub
        .stderr()
        .lines()
        .filter(|l| l.contains("refusing a hub connection"))
        .count();
    assert_eq!(lines, 1, "{}", hub.stderr());
}

/// socket.io clients that come and go (page reloads) give their place under the
/// per-address cap back: the 40th reload from one address still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_reloads_free_their_connection_slots() {
    let hub = TestHub::start(HubConfig {
        max_conns_per_ip: 4,
        conn_rate: (1000, 1000),
        ..HubConfig::default()
    })
    .await;
    for i in 0..12 {
        let transport = if i % 2 == 0 { "websocket" } else { "polling" };
        let c = common::SioClient::connect(&hub.http_url(), transport, "v4").await;
        c.close().await;
        // The hub frees the slot when it sees the disconnect, which on a loaded machine
        // may come a moment after the client's process ended: wait for it (a slot that
        // never comes back still fails here) before the next connect, which would
        // otherwise race it against the cap of 4.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.hub.limits().report().connections > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            hub.hub.limits().report().connections,
            0,
            "reload {i} ({transport}) gave its slot back"
        );
    }
    let mut c = common::SioClient::connect(&hub.http_url(), "websocket", "v4").await;
    c.emit("join", serde_json::json!("after")).await;
    c.recv_event("joined").await;
}

/// A socket.io session over long-polling, spoken packet by packet.
struct Polling {
    addr: SocketAddr,
    sid: String,
}

impl Polling {
    async fn open(addr: SocketAddr) -> Result<Polling, common::HttpResponse> {
        let r = http_request(addr, &get_head("/socket.io/?EIO=4&transport=polling")).await;
        if r.status != 200 {
            return Err(r);
        }
        let sid = r
            .text()
            .split(r#""sid":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        Ok(Polling { addr, sid })
    }

    async fn post(&self, payload: &str) -> u16 {
        let head = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={} HTTP/1.1\r\nHost: localhost\r\n\
             Connection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{payload}",
            self.sid,
            payload.len()
        );
        http_request(self.addr, &head).await.status
    }

    async fn get(&self) -> String {
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid);
        http_request(self.addr, &get_head(&path)).await.text()
    }

    /// Connects to `/` and waits for the answer, answering pings meanwhile.
    async fn connect(&self) {
        assert_eq!(self.post("40").await, 200);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let answer = self.get().await;
            let packets: Vec<&str> = answer.split('\u{1e}').collect();
            if packets.contains(&"2") {
                self.post("3").await;
            }
            if packets.iter().any(|p| p.starts_with("40")) {
                return;
            }
            seen.push(answer.clone());
        }
        panic!("no connect answer: {seen:?}");
    }
}

/// A socket.io session holds its place under the caps from its handshake to its end. A
/// client that leaves the namespace (`41`) and keeps the session open (socketioxide
/// cannot close it) still counts, so one address cannot hold sessions past its cap; and
/// a session that sends binary attachments (not part of the JSON protocol) is closed at
/// once it has sent one frame's worth of them instead of having up to 10 MB gathered for
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_sessions_hold_their_place_and_refuse_attachments() {
    let hub = TestHub::start(HubConfig {
        max_conns_per_ip: 3,
        ..HubConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let s = Polling::open(hub.addr)
            .await
            .unwrap_or_else(|r| panic!("{}", r.text()));
        s.connect().await;
        assert_eq!(s.post("41").await, 200);
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.hub.limits().report().connections, 3);
    let refused = Polling::open(hub.addr)
        .await
        .err()
        .expect("a fourth session refused");
    assert_eq!(refused.status, 429, "{}", refused.text());

    let hub = TestHub::start(HubConfig::default()).await;
    let s = Polling::open(hub.addr)
        .await
        .unwrap_or_else(|r| panic!("{}", r.text()));
    s.connect().await;
    assert_eq!(hub.hub.limits().report().connections, 1);
    // Attachments are refused in words once complete (hub_socketio's tests); gathering
    // them stops at one frame's worth (64 KiB), here on the second of two 40 KB ones.
    s.post(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    let chunk = format!(
        "b{}",
        base64::engine::general_purpose::STANDARD.encode(vec![7u8; 40_000])
    );
    for _ in 0..2 {
        s.post(&chunk).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while hub.hub.limits().report().connections > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        hub.hub.limits().report().connections,
        0,
        "the session that sent too much in attachments was closed"
    );
}

/// On socket.io, an event the hub cannot read (`message` or `join` without its
/// argument) spends a token and is answered with `bad-request`, and a
/// client closed for flooding that connects to `/` again on the same session finds its
/// rate limit as it left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_events_are_counted_whatever_they_hold() {
    let hub = TestHub::start(HubConfig {
        rate_per_sec: 1,
        rate_burst: 2,
        ..HubConfig::default()
    })
    .await;
    let s = Polling::open(hub.addr)
        .await
        .unwrap_or_else(|r| panic!("{}", r.text()));
    s.connect().await;
    assert_eq!(s.post(r#"42["message"]"#).await, 200);
    let answer = s.get().await;
    assert!(
        answer.contains(r#"42["error",{"code":"bad-request""#) && answer.contains("one argument"),
        "{answer:?}"
    );
    // The second token goes on a join without its room; then flood until cut off.
    assert_eq!(s.post(r#"42["join"]"#).await, 200);
    for _ in 0..12 {
        assert_eq!(s.post(r#"42["x"]"#).await, 200);
    }
    assert!(hub.hub.limits().report().closed_for_flooding >= 1);
    assert!(hub.hub.limits().report().rate_limited_frames >= 8);
    // Back on the same session at once: the bucket is still empty, so the join is
    // refused, not answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.connect().await;
    s.post(r#"42["join","again"]"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hub.hub.rooms().stats().rooms, 0, "the join was let through");
    // Once the bucket has refilled, the connection back under the same id is the peer
    // (the first connection's checks forget only that connection).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.post(r#"42["join","later"]"#).await;
    let answer = s.get().await;
    assert!(answer.contains(r#"42["joined""#), "{answer:?}");
    assert_eq!(hub.hub.rooms().stats().rooms, 1);
}

/// A socket.io session's moves to WebSocket are new connections for the rate limit: a
/// client cannot open WebSocket after WebSocket on one session without spending tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_upgrades_spend_connection_tokens() {
    let hub = TestHub::start(HubConfig {
        conn_rate: (1, 3),
        ..HubConfig::default()
    })
    .await;
    let s = Polling::open(hub.addr)
        .await
        .unwrap_or_else(|r| panic!("{}", r.text()));
    let upgrade = upgrade_head(&format!(
        "/socket.io/?EIO=4&transport=websocket&sid={}",
        s.sid
    ));
    let mut heads = Vec::new();
    for _ in 0..6 {
        heads.push(http_request_head(hub.addr, &upgrade).await);
    }
    let refused = heads
        .iter()
        .filter(|h| h.starts_with("HTTP/1.1 429"))
        .count();
    assert!(refused >= 3, "{heads:?}");
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.x: another client
/// address on this machine).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Opens `n` connections from `from` into `held`, then gives the server a moment to
/// count them.
async fn hold_from(held: &mut Vec<tokio::net::TcpStream>, from: [u8; 4], to: SocketAddr, n: usize) {
    for _ in 0..n {
        held.push(connect_from(from, to).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Whether `/healthz` asked from `from` was answered.
async fn served_from(from: [u8; 4], to: SocketAddr) -> (bool, Option<String>) {
    let answer = healthz_from(from, to).await;
    let served = answer
        .as_deref()
        .is_some_and(|r| r.starts_with("HTTP/1.1 200"));
    (served, answer)
}

async fn healthz_from(from: [u8; 4], to: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = connect_from(from, to).await;
    s.write_all(get_head("/healthz").as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// One client address holds at most `MAX_CONNECTIONS_PER_ADDRESS` connections at once,
/// whatever they are for (idle ones too): more are closed as they come, so one device
/// cannot take every descriptor the process has. Other addresses are not affected, and
/// a closed connection gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_a_bounded_number_of_connections() {
    use rtcdev::server::MAX_CONNECTIONS_PER_ADDRESS;
    let sb = Sandbox::new();
    let hub = Signal::start(&sb, &[], &[]);
    let mut held = Vec::new();
    hold_from(
        &mut held,
        [127, 0, 0, 2],
        hub.addr,
        MAX_CONNECTIONS_PER_ADDRESS,
    )
    .await;
    let (served, over) = served_from([127, 0, 0, 2], hub.addr).await;
    assert!(!served, "one connection more was served: {over:?}");
    let other = healthz_from([127, 0, 0, 3], hub.addr)
        .await
        .unwrap_or_default();
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    let body: serde_json::Value =
        serde_json::from_str(other.split("\r\n\r\n").nth(1).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {other}"));
    assert!(
        body["limits"]["tcp_refused_per_address"].as_u64() >= Some(1),
        "the refusal is counted: {body}"
    );
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = healthz_from([127, 0, 0, 2], hub.addr)
        .await
        .unwrap_or_default();
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

/// Accepted connections carry TCP keep-alive, so one whose device vanished without a
/// FIN (Wi-Fi off) is found gone and gives its place back even when nothing writes to
/// it: `ss` shows the keep-alive timer on the server's side of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_connections_carry_tcp_keepalive() {
    common::require("ss", "iproute2");
    let sb = Sandbox::new();
    let hub = Signal::start(&sb, &[], &[]);
    let held = connect_from([127, 0, 0, 2], hub.addr).await;
    let client_port = held.local_addr().unwrap().port();
    let mut shown = String::new();
    for _ in 0..50 {
        let out = std::process::Command::new("ss")
            .args(["-tno", "state", "established"])
            .arg(format!(
                "( sport = :{} and dport = :{client_port} )",
                hub.addr.port()
            ))
            .output()
            .unwrap();
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if shown.contains("127.0.0.2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shown.contains("127.0.0.2"),
        "the connection is not listed: {shown}"
    );
    assert!(
        shown.contains("timer:(keepalive"),
        "no keep-alive on the server's side: {shown}"
    );
}

/// A hub told to take more connections from one address (`--max-conns-per-ip`, for a
/// load balancer or nginx on another host in front of it) takes them: the cap per
/// address follows it, with room for pages on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_conns_per_ip_raises_the_address_cap_too() {
    use rtcdev::server::{MAX_CONNECTIONS_PER_ADDRESS, PAGE_CONNECTIONS};
    let sb = Sandbox::new();
    let per_ip = MAX_CONNECTIONS_PER_ADDRESS + 44;
    let hub = Signal::start(&sb, &["--max-conns-per-ip", &per_ip.to_string()], &[]);
    let mut held = Vec::new();
    hold_from(&mut held, [127, 0, 0, 2], hub.addr, per_ip).await;
    let (served, answer) = served_from([127, 0, 0, 2], hub.addr).await;
    assert!(
        served,
        "connection {} of one address was refused: {answer:?}",
        per_ip + 1
    );
    hold_from(&mut held, [127, 0, 0, 2], hub.addr, PAGE_CONNECTIONS).await;
    let (served, over) = served_from([127, 0, 0, 2], hub.addr).await;
    assert!(
        !served,
        "the cap still holds past --max-conns-per-ip and the pages' share: {over:?}"
    );
}

/// Joins from one address are rate-limited whichever connection they come on: trying
/// room names from many connections at once gets `rate-limited` past the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_per_address_are_rate_limited() {
    let hub = TestHub::start(HubConfig::default()).await;
    let (rate, burst) = HubConfig::default().join_rate;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(NativeClient::connect(&hub.ws_url()).await);
    }
    // The address's join bucket is made full by the first join, after this.
    let started = Instant::now();
    let (mut joined, mut limited) = (0, 0);
    for i in 0..60 {
        let c = &mut clients[i % 4];
        c.send(serde_json::json!({"type": "join", "room": format!("guess-{i}")}))
            .await;
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("joined") => joined += 1,
            Some("error") if v["code"] == "rate-limited" => {
                assert!(v["message"].as_str().unwrap().contains("joins"), "{v}");
                limited += 1
            }
            _ => panic!("{v}"),
        }
    }
    // Every join was answered by now: the burst plus what the bucket refilled in that
    // time is all that may have been let in.
    let elapsed = started.elapsed();
    let refill = (elapsed.as_secs_f64() * f64::from(rate)).ceil() as u32;
    assert!(
        (burst..=burst + refill).contains(&joined),
        "{joined} joined, {limited} refused: burst of {burst} plus at most {refill} \
         refilled in {elapsed:?}"
    );
    assert_eq!(joined + limited, 60);
    assert!(hub.hub.limits().report().joins_refused >= u64::from(limited));
}

/// On socket.io too, every event counts against the rate limit (events the hub does
/// not know as well), and a peer that keeps flooding past it is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_floods_are_limited_and_cut_off() {
    let hub = TestHub::start(HubConfig {
        rate_per_sec: 1,
        rate_burst: 5,
        ..HubConfig::default()
    })
    .await;
    let mut c = common::SioClient::connect(&hub.http_url(), "websocket", "v4").await;
    for i in 0..40 {
        c.emit("bogus", serde_json::json!({ "n": i })).await;
    }
    let v = c.recv_event("error").await;
    assert_eq!(v["data"]["code"], "rate-limited", "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.hub.stats().peers > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = hub.hub.limits().report();
    assert_eq!(
        hub.hub.stats().peers,
        0,
        "the flooding peer was disconnected: {r:?}"
    );
    assert_eq!(r.closed_for_flooding, 1, "{r:?}");
    assert!(r.rate_limited_frames >= 20, "{r:?}");
}
