//! The socket.io front-end with the official socket.io-client (node): every event of a
//! two-party call page, both transports, a v2 (EIO3) client, and rooms mixed with native peers.

mod common;

use std::time::Duration;

use common::{NativeClient, SioClient, TestHub};
use rtcdev::hub::HubConfig;
use serde_json::json;

async fn call_flow(transport: &str) {
    let hub = TestHub::start(HubConfig::default()).await;
    let url = hub.http_url();
    let mut a = SioClient::connect(&url, transport, "v4").await;
    let mut b = SioClient::connect(&url, transport, "v4").await;
    assert_eq!(a.transport, transport);
    assert_eq!(a.id.len(), 16);

    a.emit("join", json!("room1")).await;
    assert_eq!(a.recv_event("joined").await["data"], json!(a.id));
    // The object form is accepted too.
    b.emit("join", json!({"room": "room1"})).await;
    assert_eq!(
        b.recv_event("joined").await["data"],
        json!(format!("{},{}", a.id, b.id))
    );
    assert_eq!(a.recv_event("newUserJoined").await["data"], json!(b.id));

    a.emit(
        "message",
        json!({"to": b.id, "type": "offer", "sdp": "v=0", "from": "forged"}),
    )
    .await;
    let got = b.recv_event("message").await["data"].clone();
    assert_eq!(
        got,
        json!({"to": b.id, "type": "offer", "sdp": "v=0", "from": a.id})
    );
    b.emit("message", json!({"type": "answer"})).await;
    assert_eq!(
        a.recv_event("message").await["data"],
        json!({"type": "answer", "from": b.id})
    );

    b.emit("leave", json!(null)).await;
    assert_eq!(a.recv_event("userLeft").await["data"], json!(b.id));
    b.emit("join", json!("room1")).await;
    b.recv_event("joined").await;
    a.recv_event("newUserJoined").await;
    let b_id = b.id.clone();
    b.close().await;
    assert_eq!(a.recv_event("userLeft").await["data"], json!(b_id));
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_events_over_websocket() {
    call_flow("websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_events_over_long_polling() {
    call_flow("polling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_v2_clients_connect_over_eio3() {
    for transport in ["websocket", "polling"] {
        v2_client_talks_to_v4(transport).await;
    }
}

async fn v2_client_talks_to_v4(transport: &str) {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut old = SioClient::connect(&hub.http_url(), transport, "v2").await;
    assert_eq!(old.transport, transport);
    let mut new = SioClient::connect(&hub.http_url(), "websocket", "v4").await;
    old.emit("join", json!("mixed")).await;
    old.recv_event("joined").await;
    new.emit("join", json!("mixed")).await;
    new.recv_event("joined").await;
    assert_eq!(old.recv_event("newUserJoined").await["data"], json!(new.id));
    new.emit("message", json!({"hi": 1})).await;
    assert_eq!(
        old.recv_event("message").await["data"],
        json!({"hi": 1, "from": new.id})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_socketio_peers_share_a_room() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut sio = SioClient::connect(&hub.http_url(), "websocket", "v4").await;
    let mut native = NativeClient::connect(&hub.ws_url()).await;

    sio.emit("join", json!("both")).await;
    sio.recv_event("joined").await;
    let joined = native.join("both").await;
    assert_eq!(joined["peers"], json!([{"id": sio.id, "meta": {}}]));
    assert_eq!(
        sio.recv_event("newUserJoined").await["data"],
        json!(native.id)
    );

    native
        .send(json!({"type": "signal", "to": sio.id, "data": {"type": "offer", "sdp": "x"}}))
        .await;
    assert_eq!(
        sio.recv_event("message").await["data"],
        json!({"type": "offer", "sdp": "x", "from": native.id})
    );
    // A non-object payload reaches socket.io wrapped.
    native
        .send(json!({"type": "signal", "data": "plain"}))
        .await;
    assert_eq!(
        sio.recv_event("message").await["data"],
        json!({"data": "plain", "from": native.id})
    );

    sio.emit("message", json!({"to": native.id, "type": "answer"}))
        .await;
    assert_eq!(
        native.recv().await,
        json!({"type": "signal", "from": sio.id, "data": {"to": native.id, "type": "answer"}})
    );
    // A binary attachment is refused in words, not dropped without a word.
    sio.emit_binary(
        "message",
        json!({"to": native.id, "blob": [1, 2, 255]}),
        "blob",
    )
    .await;
    let refused = sio.recv_event("error").await;
    assert_eq!(refused["data"]["code"], "bad-request", "{refused}");
    assert!(
        refused["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("binary attachments are not relayed")),
        "{refused}"
    );

    sio.close().await;
    assert_eq!(
        native.recv().await,
        json!({"type": "peer-left", "id": joined["peers"][0]["id"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_messages_never_cross_rooms_and_errors_are_events() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut a = SioClient::connect(&hub.http_url(), "websocket", "v4").await;
    let mut x = SioClient::connect(&hub.http_url(), "websocket", "v4").await;
    a.emit("message", json!({"early": true})).await;
    assert_eq!(a.recv_event("error").await["data"]["code"], "not-in-room");
    a.emit("join", json!("ra")).await;
    a.recv_event("joined").await;
    x.emit("join", json!("rx")).await;
    x.recv_event("joined").await;
    a.emit("message", json!({"to": x.id, "secret": 1})).await;
    assert_eq!(a.recv_event("error").await["data"]["code"], "unknown-peer");
    a.emit("join", json!("bad/name")).await;
    assert_eq!(a.recv_event("error").await["data"]["code"], "bad-request");
    // x got nothing: its next event is the one we send it now.
    let mut y = SioClient::connect(&hub.http_url(), "websocket", "v4").await;
    y.emit("join", json!("rx")).await;
    y.recv_event("joined").await;
    let next = x.recv().await;
    assert_eq!(next["event"], "newUserJoined", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_echoes_headers_never_star() {
    let hub = TestHub::start(HubConfig::default()).await;
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-i", "-X", "OPTIONS"])
        .args(["-H", "Origin: https://app.example.test:5173"])
        .args(["-H", "Access-Control-Request-Method: POST"])
        .args([
            "-H",
            "Access-Control-Request-Headers: content-type,x-custom",
        ])
        .arg(format!(
            "{}/socket.io/?EIO=4&transport=polling",
            hub.http_url()
        ))
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        text.contains("access-control-allow-origin: https://app.example.test:5173"),
        "{text}"
    );
    assert!(
        text.contains("access-control-allow-headers: content-type,x-custom"),
        "{text}"
    );
    assert!(
        text.contains("access-control-allow-methods: post"),
        "{text}"
    );
    assert!(
        !text.contains("access-control-allow-credentials"),
        "a public hub never lets pages send credentials: {text}"
    );
    assert!(!text.contains(": *"), "{text}");
}

/// With `--allow-origin`, `signal` refuses pages of other origins on both transports
/// and the native route, and lets the listed one and non-browser clients in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_origin_is_enforced_on_every_hub_route() {
    let listener = rtcdev::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = rtcdev::hub::Hub::start(HubConfig::default()).await.unwrap();
    let app = rtcdev::signal::router(&hub, &["https://app.example".into()]).unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(rtcdev::server::serve(
        listener,
        app,
        None,
        Some(hub),
        async move {
            let _ = stopped.await;
        },
    ));
    let head = |path: &str, origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    for path in [
        "/ws",
        "/socket.io/?EIO=4&transport=websocket",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let r = common::http_request_head(addr, &head(path, "https://evil.example")).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{path}: {r}");
        let r = common::http_request_head(addr, &head(path, "https://app.example")).await;
        assert!(!r.starts_with("HTTP/1.1 403"), "{path}: {r}");
    }
    // A client that sends no Origin (not a browser page) is not held back.
    let mut c = common::NativeClient::connect(&format!("ws://{addr}/ws")).await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
}

/// Runs a script of tests/js with node and parses the JSON line it prints.
async fn node_json(script: &str, args: &[&str]) -> serde_json::Value {
    let dir = common::js_dir();
    let out = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .output()
        .await
        .expect("node");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{script}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// The article's page emits `join` before it is connected, so the event reaches the hub
/// right behind the connect answer. Every such join must be answered (the hub sets a
/// socket up before it answers the connect, not in a task racing the client), and once
/// the clients are gone the hub holds no peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_emitted_before_connect_is_never_lost() {
    // 150 clients at once from one address: past the default per-address caps.
    let hub = TestHub::start(HubConfig {
        max_conns_per_ip: 1000,
        conn_rate: (10_000, 10_000),
        join_rate: (10_000, 10_000),
        ..HubConfig::default()
    })
    .await;
    let url = hub.http_url();
    for transport in ["websocket", "polling"] {
        let v = node_json("join_at_once.mjs", &[url.as_str(), transport, "150"]).await;
        assert_eq!(v["joined"], json!(150), "{transport}: {v}");
    }
    // A polling client whose process exits before its close packet is sent is reaped
    // by the heartbeat: on a loaded machine a few are.
    hub.assert_emptied_within(rtcdev::hub::DEFAULT_HEARTBEAT_TIMEOUT + Duration::from_secs(10))
        .await;
}

/// A burst of `message`s from one official socket.io client (a peer's ICE candidates)
/// reaches the other peer in the order it was sent, over both transports. socketioxide
/// runs each event handler as a task of its own; without the hub's ordering, tokio ran
/// them newest first on a busy thread and this test saw the burst reordered every time.
/// (On a multi-threaded runtime, as `rtcdev` runs: a single-threaded one runs tasks
/// first come, first served, and hid the bug.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_arrives_in_order() {
    let hub = TestHub::start(HubConfig::default()).await;
    let url = hub.http_url();
    for transport in ["websocket", "polling"] {
        // 180 messages and a join stay inside the default burst of 200 frames.
        let v = node_json("burst_order.mjs", &[url.as_str(), transport, "180"]).await;
        assert_eq!(v["received"], json!(180), "{transport}: {v}");
        assert_eq!(v["inOrder"], json!(true), "{transport}: {v}");
    }
    hub.assert_emptied().await;
}

/// socket.io clients joining a nearly full room all at once, over both transports, on
/// a multi-threaded hub: exactly the free places are taken, the rest get `room-full`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_into_a_nearly_full_room() {
    for transport in ["websocket", "polling"] {
        let hub = TestHub::start(HubConfig {
            max_peers_per_room: 6,
            ..HubConfig::default()
        })
        .await;
        let mut early = NativeClient::connect(&hub.ws_url()).await;
        early.join("crowd").await;
        let url = hub.http_url();
        let v = node_json(
            "join_at_once.mjs",
            &[url.as_str(), transport, "12", "crowd"],
        )
        .await;
        assert_eq!(v["joined"], json!(5), "{transport}: {v}");
        assert_eq!(v["full"], json!(7), "{transport}: {v}");
        hub.assert_emptied_but(1).await;
    }
}

/// An Engine.IO v4 client over WebSocket with nothing between the test and the wire,
/// connected to the main namespace.
struct RawEio {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Pings seen while connecting, answered or not.
    pings: usize,
}

impl RawEio {
    /// Connects; pings that come before the namespace's answer get a pong if `answer`.
    async fn connect(hub: &TestHub, answer: bool) -> Self {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", hub.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut c = RawEio { ws, pings: 0 };
        let open = c.next().await.expect("an open packet");
        assert!(open.starts_with("0{"), "{open}");
        c.send("40").await;
        // The first ping may come before the namespace's answer.
        loop {
            let p = c.next().await.expect("a namespace connect");
            if p == "2" {
                c.pings += 1;
                if answer {
                    c.send("3").await;
                }
                continue;
            }
            assert!(p.starts_with("40"), "{p}");
            return c;
        }
    }

    async fn send(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
    }

    /// Reads until a packet that starts with `prefix`; panics if the connection ends.
    async fn until(&mut self, prefix: &str) -> String {
        loop {
            match self.next().await {
                Some(p) if p.starts_with(prefix) => return p,
                Some(_) => {}
                None => panic!("the connection ended before {prefix}"),
            }
        }
    }

    /// The next text packet, or `None` once the server closed the connection.
    async fn next(&mut self) -> Option<String> {
        self.next_within(common::WAIT).await
    }

    /// [`RawEio::next`], waiting up to `limit` (for packets that come only with the
    /// heartbeat, which may be longer apart than [`common::WAIT`]).
    async fn next_within(&mut self, limit: Duration) -> Option<String> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a packet or a close in time")
            {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    return Some(t.to_string());
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None => {
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_peers_that_do_not_answer_pings_are_dropped() {
    // A 6 s heartbeat pings every 5 s and allows 1 s for the pong (see
    // `hub::socketio::routes`): a pong window a loaded machine still meets, where a 2 s
    // heartbeat left 333 ms.
    let hub = TestHub::start(HubConfig {
        heartbeat_timeout: Duration::from_secs(6),
        ..HubConfig::default()
    })
    .await;
    let window = Duration::from_secs(16);
    let mut alive = RawEio::connect(&hub, true).await;
    let connected = tokio::time::Instant::now();
    let mut silent = RawEio::connect(&hub, false).await;
    assert_eq!(hub.hub.limits().report().connections, 2);
    // Over two heartbeats' worth: the one that answers "2" with "3" stays; the other is
    // closed after its first unanswered ping, about 6 s in.
    let answerer = tokio::spawn(async move {
        let mut pings = 0;
        let until = tokio::time::Instant::now() + window;
        while tokio::time::Instant::now() < until {
            match tokio::time::timeout_at(until, alive.next_within(window)).await {
                Ok(Some(p)) if p == "2" => {
                    pings += 1;
                    alive.send("3").await;
                }
                Ok(Some(_)) => {}
                Ok(None) => return (pings, false, alive),
                Err(_) => break,
            }
        }
        (pings, true, alive)
    });
    let mut silent_pings = silent.pings;
    // Pings keep coming to a peer that is never dropped: bound the wait as a whole.
    let give_up = connected + window;
    loop {
        match tokio::time::timeout_at(give_up, silent.next_within(window)).await {
            Ok(Some(p)) if p == "2" => silent_pings += 1,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => panic!("the peer that does not answer pings was not dropped in {window:?}"),
        }
    }
    let closed_after = connected.elapsed();
    assert!(silent_pings >= 1, "closed after an unanswered ping");
    // Due at 6 s; a second heartbeat would end at 12 s.
    assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");
    // `_alive` is held open until the count below.
    let (pings, still_open, _alive) = answerer.await.unwrap();
    assert!(still_open, "the peer that answers pings stays");
    // Pings are due at 5, 10 and 15 s: at least two even when the last one runs late.
    assert!(
        pings >= 2,
        "{pings} pings in {window:?} with a 6 s heartbeat"
    );
    assert_eq!(hub.hub.limits().report().connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_socketio_payloads_end_the_connection() {
    let hub = TestHub::start(HubConfig {
        max_frame_bytes: 1024,
        ..HubConfig::default()
    })
    .await;
    // WebSocket: a message under the limit is relayed, one over it closes the socket.
    let mut big = RawEio::connect(&hub, true).await;
    let mut other = RawEio::connect(&hub, true).await;
    for c in [&mut big, &mut other] {
        c.send(r#"42["join","big"]"#).await;
        c.until(r#"42["joined""#).await;
    }
    let small = format!(r#"42["message",{{"pad":"{}"}}]"#, "x".repeat(500));
    big.send(&small).await;
    let p = other.until(r#"42["message""#).await;
    assert!(p.contains(&"x".repeat(500)));
    let large = format!(r#"42["message",{{"pad":"{}"}}]"#, "x".repeat(2000));
    big.send(&large).await;
    while let Some(p) = big.next().await {
        assert!(!p.contains(&"x".repeat(2000)), "not relayed back: {p}");
    }
    // The other peer is told it left and never gets the oversized message.
    loop {
        let p = other
            .next()
            .await
            .expect("userLeft before the connection ends");
        assert!(
            !p.contains(&"x".repeat(2000)),
            "the oversized message was relayed"
        );
        if p.starts_with(r#"42["userLeft""#) {
            break;
        }
    }

    // Long-polling: a POST over the limit is refused and the session ends.
    let addr = hub.addr;
    let open = common::http_request(
        addr,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = open.text();
    let sid = body
        .split(r#""sid":""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let post = |payload: String| {
        format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        )
    };
    assert_eq!(
        common::http_request(addr, &post("40".into())).await.status,
        200
    );
    let refused = common::http_request(addr, &post(large.clone())).await;
    assert!(
        refused.status == 413 || refused.status == 400,
        "{} {}",
        refused.status,
        refused.text()
    );
    let after = common::http_request(
        addr,
        &format!(
            "GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    // Engine.IO answers a poll on a closed session with 400 (unknown sid), or with the
    // close packet "1" as the whole payload; a live session would answer with packets.
    assert!(
        after.status == 400 || after.text() == "1",
        "the session is over: {} {:?}",
        after.status,
        after.text()
    );
    hub.assert_emptied_but(1).await;
}
