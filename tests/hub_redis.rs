//! Rooms shared across hub processes through a real redis-server on a loopback port:
//! cross-process joins and signals, mixed native and socket.io peers, room isolation and
//! limits across processes, a killed hub process, Redis stopped and restarted.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{NativeClient, Sandbox, SioClient, TestHub};
use rtcdev::hub::HubConfig;
use serde_json::json;

/// A redis-server of its own on a free loopback port, no persistence; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        common::require("redis-server", "redis-server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port, empty, as a restarted Redis without persistence.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16];
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP or SIGCONT: Redis hangs with its data, as on a network partition.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Runs one command on a connection of its own; the reply as Redis sent it (RESP),
    /// e.g. `:0\r\n`.
    fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(request.as_bytes()).unwrap();
        // The replies asked for here are a few bytes: one read has them.
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(redis: &Redis) -> HubConfig {
    HubConfig {
        redis: Some(redis.url()),
        ..HubConfig::default()
    }
}

async fn health(hub: &TestHub) -> serde_json::Value {
    let r = common::http_request(hub.addr, &common::get_head("/healthz")).await;
    serde_json::from_str(&r.text()).unwrap()
}

/// Waits until `/healthz` says Redis is `state`.
async fn wait_redis_state(hub: &TestHub, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = health(hub).await;
        if h["redis"]["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "redis never {state}: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn redis_state(hub: &TestHub) -> String {
    health(hub).await["redis"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `rtcdev signal --redis` as its own process on 127.0.0.1:0; its `/ws` URL.
fn spawn_signal(sb: &Sandbox, redis: &Redis, extra: &[&str]) -> (common::Spawned, String) {
    let url = redis.url();
    let mut args = vec![
        "signal",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--redis",
        &url,
    ];
    args.extend_from_slice(extra);
    ws_url_of(sb.spawn(&args))
}

/// A started `rtcdev signal` and the `/ws` URL it printed.
fn ws_url_of(mut p: common::Spawned) -> (common::Spawned, String) {
    let ws = loop {
        if let Some(u) = p.line().trim().strip_prefix("Local:") {
            break u.trim().replace("http://", "ws://") + "/ws";
        }
    };
    (p, ws)
}

fn ids(joined: &serde_json::Value) -> Vec<String> {
    joined["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_act_as_one_for_native_and_socketio_peers() {
    let redis = Redis::start();
    let a = TestHub::start(config(&redis)).await;
    let b = TestHub::start(config(&redis)).await;
    let h = health(&a).await;
    assert_eq!(h["redis"]["state"], "connected", "{h}");
    assert!(h["redis"]["url"].as_str().unwrap().contains("127.0.0.1"));
    assert_ne!(h["redis"]["node"], health(&b).await["redis"]["node"]);

    // Native on A, socket.io (both transports) and native on B, one room.
    let mut n1 = NativeClient::connect(&a.ws_url()).await;
    assert!(ids(&n1.join("call").await).is_empty());
    let mut s1 = SioClient::connect(&b.http_url(), "websocket", "v4").await;
    s1.emit("join", json!("call")).await;
    let joined = s1.recv_event("joined").await;
    assert_eq!(joined["data"], format!("{},{}", n1.id, s1.id));
    let pj = n1.recv_type("peer-joined").await;
    assert_eq!(pj["id"], s1.id);

    let mut s2 = SioClient::connect(&a.http_url(), "polling", "v4").await;
    s2.emit("join", json!({"room": "call"})).await;
    let joined = s2.recv_event("joined").await;
    assert_eq!(joined["data"], format!("{},{},{}", n1.id, s1.id, s2.id));
    assert_eq!(s1.recv_event("newUserJoined").await["data"], s2.id);
    assert_eq!(n1.recv_type("peer-joined").await["id"], s2.id);

    let mut n2 = NativeClient::connect(&b.ws_url()).await;
    assert_eq!(
        ids(&n2.join("call").await),
        vec![n1.id.clone(), s1.id.clone(), s2.id.clone()]
    );
    // A peer learns a newcomer from `peer-joined` (as clients do), and from then on can
    // address it across processes.
    assert_eq!(n1.recv_type("peer-joined").await["id"], n2.id);

    // A signal with `to` crosses to the other process, `from` set by the hub.
    n1.send(json!({"type": "signal", "to": n2.id, "data": {"sdp": "offer", "from": "forged"}}))
        .await;
    let sig = n2.recv_type("signal").await;
    assert_eq!(sig["from"], n1.id);
    assert_eq!(sig["data"]["sdp"], "offer");
    // socket.io on B to everyone: native on A and B, socket.io on A.
    s1.emit("message", json!({"type": "candidate", "n": 1}))
        .await;
    for sig in [n1.recv_type("signal").await, n2.recv_type("signal").await] {
        assert_eq!(sig["from"], s1.id);
        assert_eq!(sig["data"]["n"], 1);
    }
    let m = s2.recv_event("message").await;
    assert_eq!(m["data"]["from"], s1.id);
    // socket.io on A to native on B with `to`.
    s2.emit("message", json!({"to": n2.id, "answer": true}))
        .await;
    let sig = n2.recv_type("signal").await;
    assert_eq!(sig["from"], s2.id);

    // Room isolation across processes: a peer of another room on B is unknown to A's peers.
    let mut other = NativeClient::connect(&b.ws_url()).await;
    other.join("elsewhere").await;
    n1.send(json!({"type": "signal", "to": other.id, "data": {}}))
        .await;
    let err = n1.recv_type("error").await;
    assert_eq!(err["code"], "unknown-peer", "{err}");
    other
        .send(json!({"type": "signal", "data": {"leak": true}}))
        .await;

    // Leaving and disconnecting are seen across processes.
    n2.send(json!({"type": "leave"})).await;
    assert_eq!(n1.recv_type("peer-left").await["id"], n2.id);
    assert_eq!(s1.recv_event("userLeft").await["data"], n2.id);
    let n1_id = n1.id.clone();
    drop(n1);
    assert_eq!(s1.recv_event("userLeft").await["data"], n1_id);
    // Nothing from the other room reached this one.
    s2.emit("message", json!({"probe": "last"})).await;
    let m = s1.recv_event("message").await;
    assert_eq!(m["data"]["probe"], "last", "{m}");
    s1.close().await;
    s2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_and_room_size_hold_across_two_hubs() {
    let redis = Redis::start();
    let cfg = HubConfig {
        max_peers_per_room: 2,
        rate_per_sec: 10_000,
        rate_burst: 10_000,
        ..config(&redis)
    };
    let a = TestHub::start(cfg.clone()).await;
    let b = TestHub::start(cfg).await;
    let mut x = NativeClient::connect(&a.ws_url()).await;
    let mut y = NativeClient::connect(&b.ws_url()).await;
    x.join("pair").await;
    y.join("pair").await;
    x.recv_type("peer-joined").await;
    // Third peer, on either process: the room is full everywhere.
    for hub in [&a, &b] {
        let mut z = NativeClient::connect(&hub.ws_url()).await;
        z.send(json!({"type": "join", "room": "pair"})).await;
        let err = z.recv_type("error").await;
        assert_eq!(err["code"], "room-full", "{err}");
    }
    const N: u64 = 500;
    for i in 0..N {
        x.send(json!({"type": "signal", "to": y.id, "data": {"seq": i}}))
            .await;
    }
    for i in 0..N {
        let sig = y.recv_type("signal").await;
        assert_eq!(sig["data"]["seq"], i, "out of order");
    }
    // Relayed counts add up across processes.
    let total = health(&a).await["messages_relayed"].as_u64().unwrap()
        + health(&b).await["messages_relayed"].as_u64().unwrap();
    assert!(total >= N, "{total}");
}

#[test]
fn a_killed_hub_process_leaves_its_rooms_within_seconds() {
    let redis = Redis::start();
    let sb = Sandbox::new();
    let (_keep, url_a) = spawn_signal(&sb, &redis, &[]);
    let (mut doomed, url_b) = spawn_signal(&sb, &redis, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut a = NativeClient::connect(&url_a).await;
        let mut b = NativeClient::connect(&url_b).await;
        a.join("r").await;
        assert_eq!(ids(&b.join("r").await), vec![a.id.clone()]);
        a.recv_type("peer-joined").await;
        // SIGKILL: no goodbye; presence must expire.
        doomed.child.kill().unwrap();
        let _ = doomed.child.wait();
        let started = Instant::now();
        let left = tokio::time::timeout(Duration::from_secs(15), a.recv_type("peer-left"))
            .await
            .expect("no peer-left after the hub process died");
        assert_eq!(left["id"], b.id);
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "{:?}",
            started.elapsed()
        );
        // The room has room again on the surviving process.
        let mut c = NativeClient::connect(&url_a).await;
        assert_eq!(ids(&c.join("r").await), vec![a.id.clone()]);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted() {
    let mut redis = Redis::start();
    let a = TestHub::start(config(&redis)).await;
    let b = TestHub::start(config(&redis)).await;
    let mut a1 = NativeClient::connect(&a.ws_url()).await;
    let mut a2 = NativeClient::connect(&a.ws_url()).await;
    let mut b1 = NativeClient::connect(&b.ws_url()).await;
    a1.join("r").await;
    a2.join("r").await;
    b1.join("r").await;

    redis.stop();
    wait_redis_state(&a, "disconnected").await;
    // Peers of one process keep talking.
    a1.send(json!({"type": "signal", "to": a2.id, "data": {"while": "down"}}))
        .await;
    assert_eq!(a2.recv_type("signal").await["data"]["while"], "down");
    // A peer joining during the outage is served by its process.
    let mut a3 = NativeClient::connect(&a.ws_url()).await;
    let joined = a3.join("r").await;
    assert!(ids(&joined).contains(&a1.id), "{joined}");

    redis.restart();
    wait_redis_state(&a, "connected").await;
    wait_redis_state(&b, "connected").await;
    // After the restart (Redis empty) both processes registered their peers again: a
    // newcomer sees all four, and signals cross processes again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = NativeClient::connect(&b.ws_url()).await;
        let seen = ids(&c.join("r").await);
        if [&a1.id, &a2.id, &a3.id, &b1.id]
            .iter()
            .all(|id| seen.contains(id))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "peers not registered again: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // b's subscription may come back a moment after the registrations a newcomer sees:
    // send again every 500 ms until one crosses (a path that never comes back still
    // fails, after 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        a1.send(json!({"type": "signal", "to": b1.id, "data": {"after": "restart"}}))
            .await;
        if let Ok(v) =
            tokio::time::timeout(Duration::from_millis(500), b1.recv_type("signal")).await
        {
            assert_eq!(v["data"]["after"], "restart", "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no signal crossed from A to B within 10 s of the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_during_a_redis_stall_still_reaches_the_room() {
    let redis = Redis::start();
    let a = TestHub::start(config(&redis)).await;
    let b = TestHub::start(config(&redis)).await;
    let mut a1 = NativeClient::connect(&a.ws_url()).await;
    let mut b1 = NativeClient::connect(&b.ws_url()).await;
    a1.join("r").await;
    b1.join("r").await;
    a1.recv_type("peer-joined").await;

    redis.signal("-STOP");
    wait_redis_state(&a, "disconnected").await;
    let gone = a1.id.clone();
    drop(a1);
    // The disconnect is handled while Redis is still stopped: A holds no peer now.
    a.assert_emptied_but(0).await;
    assert_eq!(
        redis_state(&a).await,
        "disconnected",
        "still during the stall"
    );
    redis.signal("-CONT");
    wait_redis_state(&a, "connected").await;
    // Redis kept its data: the stale entry is removed on reconnection and B is told.
    let left = tokio::time::timeout(Duration::from_secs(15), b1.recv_type("peer-left"))
        .await
        .expect("no peer-left after the stall");
    assert_eq!(left["id"], gone);
    let mut c = NativeClient::connect(&a.ws_url()).await;
    assert_eq!(ids(&c.join("r").await), vec![b1.id.clone()]);
}

#[test]
fn unreachable_or_malformed_redis_is_a_clear_error() {
    let sb = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = sb
        .rtcdev()
        .args(["signal", "--bind", "127.0.0.1", "--port", "0", "--redis"])
        .arg(format!("redis://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Redis") && err.contains(&port.to_string()),
        "{err}"
    );

    let out = sb
        .rtcdev()
        .args(["signal", "--redis", "http://nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis://"));
}

/// Twelve peers, six on each of two hub processes, join one room of four at once: the
/// room-size check is atomic in Redis, so exactly four get in, whichever process they
/// came through, and every one of them sees the same room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_across_two_processes_never_overfill_a_room() {
    let redis = Redis::start();
    let sb = Sandbox::new();
    let extra = ["--room-size", "4", "--join-rate", "100"];
    let (_a, url_a) = spawn_signal(&sb, &redis, &extra);
    let (_b, url_b) = spawn_signal(&sb, &redis, &extra);
    let mut clients = Vec::new();
    for i in 0..12 {
        let url = if i % 2 == 0 { &url_a } else { &url_b };
        clients.push(NativeClient::connect(url).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                c.send(json!({"type": "join", "room": "race"})).await;
                loop {
                    let v = c.recv().await;
                    match v["type"].as_str() {
                        Some("joined") => return (c, Some(v)),
                        Some("error") => {
                            assert_eq!(v["code"], "room-full", "{v}");
                            return (c, None);
                        }
                        _ => continue,
                    }
                }
            })
        })
        .collect();
    let mut inside = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (c, Some(joined)) => inside.push((c, joined)),
            (_, None) => refused += 1,
        }
    }
    assert_eq!(inside.len(), 4, "exactly the room size got in");
    assert_eq!(refused, 8);
    let members: Vec<String> = inside.iter().map(|(c, _)| c.id.clone()).collect();
    for (c, joined) in &inside {
        let earlier = ids(joined);
        assert!(earlier.len() < 4, "{joined}");
        assert!(earlier.iter().all(|id| members.contains(id)), "{joined}");
        assert!(!earlier.contains(&c.id));
    }
    // A newcomer from either process is refused: the room is full everywhere.
    for url in [&url_a, &url_b] {
        let mut late = NativeClient::connect(url).await;
        late.send(json!({"type": "join", "room": "race"})).await;
        assert_eq!(late.recv_type("error").await["code"], "room-full");
    }
}

/// A process that stops on SIGTERM takes its peers out of their rooms at once, not when
/// its presence key expires; and `RTCDEV_REDIS` works as `--redis` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_withdraws_its_peers_at_once() {
    let redis = Redis::start();
    let sb = Sandbox::new();
    let url = redis.url();
    let (mut leaving, url_a) = ws_url_of(sb.spawn_env(
        &["signal", "--bind", "127.0.0.1", "--port", "0"],
        &[("RTCDEV_REDIS", &url)],
    ));
    let (_stays, url_b) = spawn_signal(&sb, &redis, &[]);
    // A's node id, to look for its alive key once A has exited.
    let addr_a: std::net::SocketAddr = url_a
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    let h = common::http_request(addr_a, &common::get_head("/healthz")).await;
    let h: serde_json::Value = serde_json::from_str(&h.text()).unwrap();
    let node = h["redis"]["node"]
        .as_str()
        .expect("A's node id")
        .to_string();
    let mut a = NativeClient::connect(&url_a).await;
    let mut b = NativeClient::connect(&url_b).await;
    a.join("r").await;
    // Through Redis (the env variable's): B's joiner sees A's peer.
    assert_eq!(ids(&b.join("r").await), vec![a.id.clone()]);
    a.recv_type("peer-joined").await;
    // Between two real processes, what one peer sends arrives in order (a burst
    // within the default rate limit's 200).
    const N: u64 = 150;
    for i in 0..N {
        a.send(json!({"type": "signal", "to": b.id, "data": {"seq": i}}))
            .await;
    }
    for i in 0..N {
        assert_eq!(
            b.recv_type("signal").await["data"]["seq"],
            i,
            "out of order"
        );
    }
    leaving.sigterm();
    let left = tokio::time::timeout(Duration::from_secs(15), b.recv_type("peer-left"))
        .await
        .expect("peer-left after A stopped");
    assert_eq!(left["id"], a.id);
    assert!(leaving.wait_exit().success());
    // A withdrew on its way out: its alive key is gone at once. Left to expire instead
    // (refreshed every `BEAT` until the shutdown, with a TTL of `ALIVE_TTL`), it would
    // outlive the exit by seconds. Checked on Redis itself rather than by timing the
    // peer-left, which a loaded machine can delay.
    assert_eq!(
        redis.command(&["EXISTS", &format!("rtcdev:alive:{node}")]),
        ":0\r\n",
        "A's alive key outlived its exit"
    );
}

/// Signals to another process while Redis is stalled are dropped, not delivered late
/// after it returns; the ones sent after it returns arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_during_an_outage_are_dropped_not_delivered_late() {
    let redis = Redis::start();
    let a = TestHub::start(config(&redis)).await;
    let b = TestHub::start(config(&redis)).await;
    let mut a1 = NativeClient::connect(&a.ws_url()).await;
    let mut b1 = NativeClient::connect(&b.ws_url()).await;
    a1.join("r").await;
    b1.join("r").await;
    a1.recv_type("peer-joined").await;

    redis.signal("-STOP");
    wait_redis_state(&a, "disconnected").await;
    a1.send(json!({"type": "signal", "to": b1.id, "data": {"n": "during"}}))
        .await;
    redis.signal("-CONT");
    wait_redis_state(&a, "connected").await;
    wait_redis_state(&b, "connected").await;
    a1.send(json!({"type": "signal", "to": b1.id, "data": {"n": "after"}}))
        .await;
    let first = b1.recv_type("signal").await;
    assert_eq!(first["data"]["n"], "after", "{first}");
    // And the one from the outage never comes later either.
    let late = tokio::time::timeout(Duration::from_secs(2), b1.recv_type("signal")).await;
    assert!(
        late.is_err(),
        "a signal from the outage arrived late: {late:?}"
    );
}
