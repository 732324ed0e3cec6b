//! The native protocol end to end: a real WebSocket client against the hub served on
//! 127.0.0.1:0, every rule and limit of docs/PROTOCOL.md (short limits where needed).

mod common;

use std::time::Duration;

use common::{NativeClient, TestHub};
use rtcdev::hub::HubConfig;
use rtcdev::ice::{IceConfig, TurnAuth};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_carries_id_and_ice_servers() {
    let config = HubConfig {
        ice: IceConfig {
            stun: vec!["stun:127.0.0.1:3478".into()],
            turn: vec!["turn:127.0.0.1:3478".into()],
            turn_auth: Some(TurnAuth::Secret {
                secret: "s3cret".into(),
                ttl: Duration::from_secs(600),
            }),
        },
        ..HubConfig::default()
    };
    let hub = TestHub::start(config).await;
    let a = NativeClient::connect(&hub.ws_url()).await;
    let b = NativeClient::connect(&hub.ws_url()).await;
    assert_eq!(a.id.len(), 16);
    assert_ne!(a.id, b.id);
    assert_eq!(a.welcome["roomSize"], 16, "the room size, for the page");
    let ice = &a.welcome["iceServers"];
    assert_eq!(ice[0]["urls"], json!(["stun:127.0.0.1:3478"]));
    let user = ice[1]["username"].as_str().unwrap();
    let (expiry, who) = user.split_once(':').unwrap();
    assert_eq!(who, a.id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry > now && expiry <= now + 601);
    assert_eq!(
        ice[1]["credential"].as_str().unwrap(),
        rtcdev::ice::turn_rest_password("s3cret", user)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_signal_leave_in_one_room() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    let mut b = NativeClient::connect(&hub.ws_url()).await;
    let mut c = NativeClient::connect(&hub.ws_url()).await;

    a.send(json!({"type": "join", "room": "r1", "meta": {"name": "Ann"}}))
        .await;
    let joined = a.recv().await;
    assert_eq!(
        joined,
        json!({"type": "joined", "room": "r1", "id": a.id, "peers": []})
    );

    b.send(json!({"type": "join", "room": "r1", "meta": {"name": "Bob"}}))
        .await;
    let joined = b.recv().await;
    assert_eq!(
        joined["peers"],
        json!([{"id": a.id, "meta": {"name": "Ann"}}])
    );
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-joined", "id": b.id, "meta": {"name": "Bob"}})
    );

    let joined = c.join("r1").await;
    let ids: Vec<&str> = joined["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.id.as_str(), b.id.as_str()], "oldest first");
    assert_eq!(c.welcome["iceServers"], json!([]));
    a.recv_type("peer-joined").await;
    b.recv_type("peer-joined").await;

    // To one peer; `from` is the hub's, a forged one is ignored.
    a.send(json!({"type": "signal", "to": b.id, "from": "forged", "data": {"sdp": "offer"}}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "signal", "from": a.id, "data": {"sdp": "offer"}})
    );
    // To the rest of the room.
    a.send(json!({"type": "signal", "data": "hello all"})).await;
    assert_eq!(
        b.recv().await,
        json!({"type": "signal", "from": a.id, "data": "hello all"})
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "signal", "from": a.id, "data": "hello all"})
    );

    b.send(json!({"type": "leave"})).await;
    assert_eq!(a.recv().await, json!({"type": "peer-left", "id": b.id}));
    assert_eq!(c.recv().await, json!({"type": "peer-left", "id": b.id}));
    drop(c);
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "id": c_id(&joined)})
    );
    // b is still connected after leaving.
    b.send(json!({"type": "ping"})).await;
    assert_eq!(b.recv().await, json!({"type": "pong"}));
    assert_eq!(hub.hub.stats().messages_relayed, 3);
}

fn c_id(joined: &serde_json::Value) -> String {
    joined["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_connection_stays() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    let mut other = NativeClient::connect(&hub.ws_url()).await;
    other.join("elsewhere").await;

    let cases = [
        ("not json".to_string(), "bad-request"),
        ("{\"type\":".to_string(), "bad-request"),
        (json!({"type": "dance"}).to_string(), "bad-request"),
        (
            json!({"type": "join", "room": 7}).to_string(),
            "bad-request",
        ),
        (
            json!({"type": "join", "room": "a".repeat(65)}).to_string(),
            "bad-request",
        ),
        (
            json!({"type": "join", "room": "a/b"}).to_string(),
            "bad-request",
        ),
        (
            json!({"type": "join", "room": "ok", "meta": "x"}).to_string(),
            "bad-request",
        ),
        (
            json!({"type": "signal", "data": 1}).to_string(),
            "not-in-room",
        ),
        (json!({"type": "leave"}).to_string(), "not-in-room"),
    ];
    for (frame, code) in cases {
        a.send_text(frame.clone()).await;
        let err = a.recv().await;
        assert_eq!(err["type"], "error", "{frame}");
        assert_eq!(err["code"], code, "{frame}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    {
        use futures_util::SinkExt;
        a.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2, 3,
        ]))
        .await
        .unwrap();
        assert_eq!(a.recv().await["code"], "bad-request");
    }
    a.join("mine").await;
    a.send(json!({"type": "signal", "to": "nosuchpeer000000", "data": 1}))
        .await;
    assert_eq!(a.recv().await["code"], "unknown-peer");
    // A real peer of another room is just as unknown: messages never cross rooms.
    a.send(json!({"type": "signal", "to": other.id, "data": 1}))
        .await;
    assert_eq!(a.recv().await["code"], "unknown-peer");
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.recv().await, json!({"type": "pong"}));
    other.send(json!({"type": "ping"})).await;
    assert_eq!(
        other.recv().await,
        json!({"type": "pong"}),
        "nothing reached the other room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rooms_refuse_joins() {
    let hub = TestHub::start(HubConfig {
        max_peers_per_room: 2,
        ..HubConfig::default()
    })
    .await;
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    let mut b = NativeClient::connect(&hub.ws_url()).await;
    let mut c = NativeClient::connect(&hub.ws_url()).await;
    a.join("small").await;
    b.join("small").await;
    c.send(json!({"type": "join", "room": "small"})).await;
    assert_eq!(c.recv().await["code"], "room-full");
    drop(b);
    a.recv_type("peer-left").await;
    c.join("small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_with_1009() {
    let hub = TestHub::start(HubConfig {
        max_frame_bytes: 16 * 1024,
        ..HubConfig::default()
    })
    .await;
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    a.send_text(format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(20 * 1024)
    ))
    .await;
    assert_eq!(a.recv().await["code"], "too-large");
    assert_eq!(a.close_code().await, Some(1009));

    // 10 MB: cut off by the WebSocket layer before it is buffered.
    let mut b = NativeClient::connect(&hub.ws_url()).await;
    use futures_util::SinkExt;
    let _ =
        b.ws.send(tokio_tungstenite::tungstenite::Message::text(
            "x".repeat(10 * 1024 * 1024),
        ))
        .await;
    assert_eq!(b.close_code().await, Some(1009));
    // The hub is still up.
    let mut c = NativeClient::connect(&hub.ws_url()).await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited() {
    const RATE: u32 = 10;
    const BURST: u32 = 20;
    let hub = TestHub::start(HubConfig {
        rate_per_sec: RATE,
        rate_burst: BURST,
        ..HubConfig::default()
    })
    .await;
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    // The bucket is full (and can hold no more) from here on.
    let started = std::time::Instant::now();
    for _ in 0..60 {
        a.send(json!({"type": "ping"})).await;
    }
    let is_pong = |v: &serde_json::Value| match v["type"].as_str() {
        Some("pong") => true,
        Some("error") if v["code"] == "rate-limited" => false,
        _ => panic!("{v}"),
    };
    let (mut pongs, mut limited) = (0u64, 0u64);
    let mut last = started;
    // The burst's pongs and the first refusal come for certain, however slow the
    // machine: wait for them, without a bound tight enough to race the load.
    while pongs < u64::from(BURST) || limited < 1 {
        let v = a.recv_within(Duration::from_secs(20)).await;
        last = std::time::Instant::now();
        if is_pong(&v) {
            pongs += 1;
        } else {
            limited += 1;
        }
    }
    // Then whatever else comes: refill, and errors paced a second apart.
    while let Ok(v) = tokio::time::timeout(Duration::from_millis(500), a.recv()).await {
        last = std::time::Instant::now();
        if is_pong(&v) {
            pongs += 1;
        } else {
            limited += 1;
        }
    }
    // Every answer was made by the time the last one arrived: what the bucket refilled
    // and how many error intervals began in that time bound what may have passed.
    let elapsed = last - started;
    let refill = (elapsed.as_secs_f64() * f64::from(RATE)).ceil() as u64;
    assert!(
        pongs <= u64::from(BURST) + refill,
        "burst of {BURST} plus at most {refill} refilled in {elapsed:?}: {pongs} pongs"
    );
    assert!(
        limited <= 1 + elapsed.as_secs(),
        "one error per second, not one per frame: {limited} in {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_between_two_peers_is_kept() {
    let hub = common::unlimited_hub().await;
    let (mut a, mut b) = common::native_pair(&hub, "order").await;
    for i in 0..2000 {
        a.send(json!({"type": "signal", "to": b.id, "data": i}))
            .await;
    }
    for i in 0..2000 {
        assert_eq!(b.recv().await["data"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_is_closed_and_memory_stays_bounded() {
    let config = HubConfig {
        max_queue_bytes: 256 * 1024,
        rate_per_sec: 100_000,
        rate_burst: 100_000,
        // Far beyond the test: the heartbeat cannot be what drops the sleeper.
        heartbeat_timeout: Duration::from_secs(600),
        ..HubConfig::default()
    };
    let hub = TestHub::start(config).await;
    let mut writer = NativeClient::connect(&hub.ws_url()).await;
    let mut sleeper = NativeClient::connect(&hub.ws_url()).await;
    sleeper.join("slow").await;
    writer.join("slow").await;
    // The sleeper never reads again. Loopback socket buffers hold a few MB, then the
    // hub's queue fills and the sleeper is dropped.
    let payload = "y".repeat(60 * 1024);
    let mut left = None;
    for _ in 0..2000 {
        writer
            .send(json!({"type": "signal", "to": sleeper.id, "data": payload}))
            .await;
        // Drain what the hub says to the writer without blocking.
        use futures_util::StreamExt;
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(1), writer.ws.next()).await
        {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "peer-left" || v["code"] == "unknown-peer" {
                    left = Some(v);
                }
            }
        }
        if left.is_some() {
            break;
        }
    }
    let left = left.expect("the sleeper was never disconnected");
    assert!(
        left["type"] == "peer-left" || left["code"] == "unknown-peer",
        "{left}"
    );
    assert_eq!(hub.hub.stats().peers, 1, "only the writer is left");
    let r = hub.hub.limits().report();
    assert_eq!(
        r.queue_overflows, 1,
        "dropped for its queue, not for anything else: {r:?}"
    );
    // What the sleeper finally reads ends with the hub's close, not with more frames:
    // the queue stopped at its bound.
    use futures_util::StreamExt;
    let mut frames = 0usize;
    let mut close = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), sleeper.ws.next()).await
    {
        match msg {
            Ok(tokio_tungstenite::tungstenite::Message::Close(c)) => {
                close = c.map(|c| u16::from(c.code));
                break;
            }
            Ok(_) => frames += 1,
            Err(_) => break,
        }
    }
    assert!(
        frames * 60 * 1024 < 16 * 1024 * 1024,
        "{frames} frames reached it: unbounded"
    );
    if let Some(code) = close {
        assert_eq!(code, 1008);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_dropped_after_the_heartbeat() {
    // Long enough that a, busy on a loaded machine, still answers its pings in time.
    let heartbeat = Duration::from_millis(1500);
    let hub = TestHub::start(HubConfig {
        heartbeat_timeout: heartbeat,
        ..HubConfig::default()
    })
    .await;
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    let mut b = NativeClient::connect(&hub.ws_url()).await;
    a.join("hb").await;
    // b's last frame (its join, or a pong sent while it read `joined`) reaches the hub
    // after this, so the hub may not drop b before a whole heartbeat from here.
    let started = std::time::Instant::now();
    b.join("hb").await;
    a.recv_type("peer-joined").await;
    // b stops reading, so it answers no WebSocket ping. a keeps reading (and so
    // answers pings) and sees b leave.
    let left = loop {
        // Due within a heartbeat and a tick (2 s); the bound below is generous.
        let v = a.recv_within(Duration::from_secs(20)).await;
        if v["type"] == "peer-left" {
            break v;
        }
    };
    assert_eq!(left["id"], b.id);
    let took = started.elapsed();
    assert!(
        took >= heartbeat - Duration::from_millis(100),
        "dropped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "dropped too late: {took:?}");
    // a is alive: it answered pings.
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.recv().await["type"], "pong");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_with_1001() {
    let mut hub = TestHub::start(HubConfig::default()).await;
    let mut a = NativeClient::connect(&hub.ws_url()).await;
    a.join("bye").await;
    let (code, _) = tokio::join!(a.close_code(), hub.stop());
    assert_eq!(code, Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_vanish_leave_nothing_behind() {
    // 200 at once from one address: past the default per-address caps.
    let hub = TestHub::start(HubConfig {
        max_conns_per_ip: 1000,
        conn_rate: (100_000, 100_000),
        join_rate: (100_000, 100_000),
        ..HubConfig::default()
    })
    .await;
    // Bounded: 2000 connections, in batches of 200, each joins then drops.
    for batch in 0..10 {
        let mut clients = Vec::new();
        for _ in 0..200 {
            let (ws, _) = tokio_tungstenite::connect_async(hub.ws_url())
                .await
                .unwrap();
            clients.push(ws);
        }
        for ws in clients.iter_mut() {
            use futures_util::SinkExt;
            ws.send(tokio_tungstenite::tungstenite::Message::text(
                json!({"type": "join", "room": format!("v{batch}")}).to_string(),
            ))
            .await
            .unwrap();
        }
        drop(clients);
    }
    hub.assert_emptied().await;
    let mut c = NativeClient::connect(&hub.ws_url()).await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
}

/// Many peers join a nearly full room at the same moment, each on its own connection
/// and in parallel on a multi-threaded runtime: exactly the free places are taken, the
/// rest get `room-full`, and every member's view agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_into_a_nearly_full_room() {
    let hub = TestHub::start(HubConfig {
        max_peers_per_room: 6,
        ..HubConfig::default()
    })
    .await;
    let mut early = Vec::new();
    for _ in 0..4 {
        let mut c = NativeClient::connect(&hub.ws_url()).await;
        c.join("crowd").await;
        early.push(c);
    }
    // 12 newcomers for 2 places, all sending their join at once.
    let mut newcomers = Vec::new();
    for _ in 0..12 {
        newcomers.push(NativeClient::connect(&hub.ws_url()).await);
    }
    let results = futures_util::future::join_all(newcomers.iter_mut().map(|c| async move {
        c.send(json!({"type": "join", "room": "crowd"})).await;
        c.recv().await
    }))
    .await;
    let joined: Vec<_> = results.iter().filter(|v| v["type"] == "joined").collect();
    let full = results
        .iter()
        .filter(|v| v["type"] == "error" && v["code"] == "room-full")
        .count();
    assert_eq!(joined.len(), 2, "{results:?}");
    assert_eq!(full, 10, "{results:?}");
    assert_eq!(hub.hub.stats().peers, 16);
    // The second of the two saw the first, or the other way round: never neither.
    let sizes: Vec<usize> = joined
        .iter()
        .map(|v| v["peers"].as_array().unwrap().len())
        .collect();
    let mut sorted = sizes.clone();
    sorted.sort();
    assert_eq!(sorted, vec![4, 5], "{sizes:?}");
}

/// Several senders to one receiver at once: each sender's messages arrive in the
/// order it sent them (the per-pair promise), whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_senders_keep_their_own_order() {
    let hub = common::unlimited_hub().await;
    let mut rx = NativeClient::connect(&hub.ws_url()).await;
    rx.join("fan-in").await;
    let mut senders = Vec::new();
    for _ in 0..4 {
        let mut s = NativeClient::connect(&hub.ws_url()).await;
        s.join("fan-in").await;
        senders.push(s);
    }
    const N: usize = 300;
    let to = rx.id.clone();
    let sends = senders.iter_mut().enumerate().map(|(k, s)| {
        let to = to.clone();
        async move {
            for i in 0..N {
                s.send(json!({"type": "signal", "to": to, "data": {"k": k, "i": i}}))
                    .await;
            }
        }
    });
    let (_, got) = tokio::join!(futures_util::future::join_all(sends), async {
        let mut next = std::collections::HashMap::new();
        let mut count = 0;
        while count < 4 * N {
            let v = rx.recv().await;
            if v["type"] != "signal" {
                continue;
            }
            let from = v["from"].as_str().unwrap().to_string();
            let i = v["data"]["i"].as_u64().unwrap();
            let expect = next.entry(from.clone()).or_insert(0u64);
            assert_eq!(i, *expect, "out of order from {from}");
            *expect += 1;
            count += 1;
        }
        count
    });
    assert_eq!(got, 4 * N);
}

/// A leave racing a stream of signals to the leaver: once `leave` is answered the
/// leaver gets nothing more from the room, the sender is told it is gone, and every
/// signal is either delivered before the leave or refused after it: none is lost or
/// delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_racing_signals_ends_delivery() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let hub = common::unlimited_hub().await;
    let (mut a, mut b) = common::native_pair(&hub, "race").await;
    let b_id = b.id.clone();
    // a keeps sending until b's leave is answered (bounded), so the leave lands while
    // signals to b are in flight however the two sides are scheduled; five more follow
    // that were written after the leave was answered.
    const FLOOD_CAP: u64 = 50_000;
    // a stays at most this far ahead of what b has received: however the machine
    // schedules the two sides, what is in flight when the leave lands (and so the
    // refusals a is owed) stays bounded.
    const LEAD: u64 = 1000;
    let left = AtomicBool::new(false);
    let seen = AtomicU64::new(0);
    let flood = async {
        let mut sent = 0;
        while sent < FLOOD_CAP && !left.load(Ordering::SeqCst) {
            if sent >= seen.load(Ordering::SeqCst) + LEAD {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            a.send(json!({"type": "signal", "to": b_id, "data": {"i": sent}}))
                .await;
            sent += 1;
        }
        assert!(
            sent < FLOOD_CAP,
            "b's leave was not answered within the flood"
        );
        for _ in 0..5 {
            a.send(json!({"type": "signal", "to": b_id, "data": {"i": sent}}))
                .await;
            sent += 1;
        }
        (a, sent)
    };
    let leave = async {
        // Leave in the middle of the flood: after the 50th signal arrived.
        let mut delivered = 0u64;
        while delivered < 50 {
            if b.recv().await["type"] == "signal" {
                delivered += 1;
                seen.store(delivered, Ordering::SeqCst);
            }
        }
        b.send(json!({"type": "leave"})).await;
        // The leave is not answered; a ping after it is, and it is queued behind
        // everything the hub delivered to b before the leave.
        b.send(json!({"type": "ping"})).await;
        loop {
            let v = b.recv().await;
            match v["type"].as_str() {
                Some("pong") => break,
                Some("signal") => {
                    delivered += 1;
                    seen.store(delivered, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        left.store(true, Ordering::SeqCst);
        (b, delivered)
    };
    let ((mut a, sent), (mut b, delivered)) = tokio::join!(flood, leave);
    // From here on b is in no room: nothing more reaches it.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), b.recv_type("signal"))
            .await
            .is_err(),
        "a signal reached a peer that had left"
    );
    // a learns b left before any refusal (the hub queues peer-left to a first), then
    // every signal that was not delivered, and a later one, is refused as unknown-peer.
    let v = a.recv().await;
    assert_eq!(v["type"], "peer-left", "{v}");
    a.send(json!({"type": "signal", "to": b_id, "data": {}}))
        .await;
    // Each refusal is certain to come: await every one (a lost signal shows as one that
    // never does), then no more may follow (none was delivered and refused both).
    let mut refused = 0;
    while delivered + refused < sent + 1 {
        let Some(v) = a.try_recv(std::time::Duration::from_secs(20)).await else {
            panic!(
                "no refusal for 20 s: {sent} sent and one after the leave, {delivered} \
                 delivered, {refused} refused"
            );
        };
        if v["type"] == "error" {
            assert_eq!(v["code"], "unknown-peer", "{v}");
            refused += 1;
        }
    }
    if let Ok(v) =
        tokio::time::timeout(std::time::Duration::from_millis(500), a.recv_type("error")).await
    {
        panic!("{sent} sent, {delivered} delivered, {refused} refused, and then: {v}");
    }
    assert!(
        delivered >= 50 && refused >= 6,
        "{delivered} delivered, {refused} refused"
    );
}

/// A phone that changes networks comes back on a new connection before the hub noticed
/// the old one was dead: with the token its `welcome` carried it takes its place back.
/// It keeps its id and its room, the others are told nothing (their connections to it
/// stand), what they send reaches the new connection, and the old one is closed with
/// 4001 without taking the place with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_the_place_back_silently() {
    let hub = TestHub::start(HubConfig::default()).await;
    let (mut a, mut b) = common::native_pair(&hub, "r").await;
    let token = b.welcome["resume"].as_str().unwrap().to_string();
    assert!(token.len() >= 40, "{token}");

    let mut back = NativeClient::connect(&hub.ws_url()).await;
    assert_ne!(back.id, b.id);
    back.send(json!({"type": "resume", "id": b.id, "token": token}))
        .await;
    let again = back.recv_type("welcome").await;
    assert_eq!(again["id"], b.id.as_str(), "{again}");
    assert_eq!(again["resume"], token.as_str());
    // The old connection is closed with 4001; its end does not remove the place.
    assert_eq!(
        b.close_code().await,
        Some(rtcdev::hub::native::CLOSE_REPLACED)
    );
    back.send(json!({"type": "join", "room": "r"})).await;
    let joined = back.recv_type("joined").await;
    assert_eq!(joined["resumed"], true, "{joined}");
    assert_eq!(joined["peers"][0]["id"], a.id.as_str());
    // a hears nothing of it: no peer-left, no peer-joined.
    let quiet = tokio::time::timeout(Duration::from_millis(500), a.recv()).await;
    assert!(quiet.is_err(), "a was told something: {quiet:?}");
    // And what a sends to b's id reaches the new connection.
    a.send(json!({"type": "signal", "to": b.id, "data": {"n": 1}}))
        .await;
    let sig = back.recv_type("signal").await;
    assert_eq!(sig["from"], a.id.as_str());
    assert_eq!(sig["data"]["n"], 1);
    assert_eq!(hub.hub.stats().peers, 2);
}

/// A wrong token, someone else's id, or a resume after joining is refused, and the
/// connection keeps the id it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_needs_that_peers_token() {
    let hub = TestHub::start(HubConfig::default()).await;
    let (_a, b) = common::native_pair(&hub, "r").await;
    let mut thief = NativeClient::connect(&hub.ws_url()).await;
    let own_token = thief.welcome["resume"].as_str().unwrap().to_string();
    for (id, token) in [
        (b.id.clone(), own_token.clone()),
        (b.id.clone(), "AAAA".to_string()),
        (b.id.clone(), String::new()),
    ] {
        thief
            .send(json!({"type": "resume", "id": id, "token": token}))
            .await;
        let err = thief.recv_type("error").await;
        assert_eq!(err["code"], "resume-refused", "{err}");
    }
    thief.join("r").await;
    let b_token = b.welcome["resume"].as_str().unwrap().to_string();
    thief
        .send(json!({"type": "resume", "id": b.id, "token": b_token}))
        .await;
    let err = thief.recv_type("error").await;
    assert_eq!(err["code"], "resume-refused", "{err}");
    // b is untouched: still in the room, reachable.
    assert_eq!(hub.hub.stats().peers, 3);
}

/// Back after the hub already dropped the old connection (the others were told it
/// left): the client gets its id again, and joining is an ordinary join the others see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_the_place_was_lost_is_an_ordinary_join() {
    let hub = TestHub::start(HubConfig::default()).await;
    let (mut a, b) = common::native_pair(&hub, "r").await;
    let (id, token) = (
        b.id.clone(),
        b.welcome["resume"].as_str().unwrap().to_string(),
    );
    drop(b);
    assert_eq!(a.recv_type("peer-left").await["id"], id.as_str());
    let mut back = NativeClient::connect(&hub.ws_url()).await;
    back.send(json!({"type": "resume", "id": id, "token": token}))
        .await;
    assert_eq!(back.recv_type("welcome").await["id"], id.as_str());
    let joined = back.join("r").await;
    assert!(joined.get("resumed").is_none(), "{joined}");
    assert_eq!(a.recv_type("peer-joined").await["id"], id.as_str());
}
