//! `rtcdev turn` and `rtcdev probe` from the command line: the flags the README lists
//! (`--realm`, `--secret`, `--external-ip`, `--tls-port`; probe's `--secret`), checked
//! against the running binary on loopback.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Sandbox;

/// STUN attribute types read from the server's answer (RFC 8489, RFC 8656).
const ERROR_CODE: u16 = 0x0009;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;

/// An Allocate request without credentials (REQUESTED-TRANSPORT: UDP).
fn bare_allocate() -> Vec<u8> {
    let mut m = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(b"rtcdev-test1");
    m.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    m
}

/// The attributes of a STUN message: (type, value).
fn attributes(msg: &[u8]) -> Vec<(u16, Vec<u8>)> {
    assert!(msg.len() >= 20, "a STUN message is at least 20 bytes");
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    assert_eq!(msg.len(), 20 + len, "the STUN length field matches");
    let mut out = Vec::new();
    let mut at = 20;
    while at + 4 <= msg.len() {
        let kind = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let n = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        out.push((kind, msg[at + 4..at + 4 + n].to_vec()));
        at += 4 + n.div_ceil(4) * 4;
    }
    out
}

/// Starts `rtcdev turn --json` with `extra` flags on loopback; returns the process and
/// its JSON.
fn start_turn(sb: &Sandbox, extra: &[&str]) -> (common::Spawned, serde_json::Value) {
    let ca = sb.ca_dir();
    let mut args = vec![
        "--ca-dir",
        ca.to_str().unwrap(),
        "turn",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut turn = sb.spawn(&args);
    let json: serde_json::Value =
        serde_json::from_str(&turn.line()).expect("turn --json prints JSON");
    (turn, json)
}

fn url_addr(url: &str) -> SocketAddr {
    let rest = url.split_once(':').unwrap().1;
    rest.split('?').next().unwrap().parse().unwrap()
}

fn probe_json(sb: &Sandbox, url: &str, secret: &str) -> serde_json::Value {
    let out = sb
        .rtcdev()
        .args([
            "probe",
            "--json",
            "--timeout",
            "3s",
            "--turn",
            url,
            "--secret",
            secret,
        ])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).expect("probe --json prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_flags_from_the_command_line_take_effect() {
    let sb = Sandbox::new();
    let (_turn, json) = start_turn(
        &sb,
        &[
            "--tls-port",
            "0",
            "--secret",
            "s3cret",
            "--realm",
            "lab.test",
            "--external-ip",
            "127.0.0.5",
        ],
    );

    // --tls-port: a turns: URL on a port of its own, which completes a TLS handshake
    // with a certificate from the local CA for localhost.
    let turn: Vec<&str> = json["turn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let udp = *turn.iter().find(|u| u.ends_with("transport=udp")).unwrap();
    let tls = *turn
        .iter()
        .find(|u| u.starts_with("turns:"))
        .expect("a turns: URL");
    let (udp_addr, tls_addr) = (url_addr(udp), url_addr(tls));
    assert_ne!(udp_addr.port(), tls_addr.port());
    let (ca, _) = rtcdev::cert::ca::Ca::load_or_create(&sb.ca_dir()).unwrap();
    rtcdev::cert::tls::install_default_provider();
    common::tls_connect(tls_addr, "localhost", &ca.cert_der).await;

    // --secret: the printed credentials are TURN REST ones made from it.
    let servers = json["iceServers"].as_array().unwrap();
    let with_creds = servers.iter().find(|s| s["username"].is_string()).unwrap();
    let username = with_creds["username"].as_str().unwrap();
    assert!(username.ends_with(":rtcdev"), "{username}");
    assert_eq!(
        with_creds["credential"].as_str().unwrap(),
        rtcdev::ice::turn_rest_password("s3cret", username)
    );

    // --realm: an Allocate without credentials is answered 401 with that realm.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&bare_allocate(), udp_addr).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(common::WAIT, socket.recv_from(&mut buf))
        .await
        .expect("an answer to Allocate")
        .unwrap();
    let attrs = attributes(&buf[..n]);
    let get = |t: u16| attrs.iter().find(|(k, _)| *k == t).map(|(_, v)| v.clone());
    let code = get(ERROR_CODE).expect("ERROR-CODE");
    assert_eq!(code[2] as u16 * 100 + code[3] as u16, 401);
    assert_eq!(get(REALM).as_deref(), Some(&b"lab.test"[..]));
    assert!(get(NONCE).is_some_and(|n| !n.is_empty()));

    // probe --secret: credentials made from the right secret get an allocation, whose
    // relayed address is the --external-ip one; a wrong secret is an `auth` failure.
    let ok = probe_json(&sb, udp, "s3cret");
    let row = &ok["servers"][0];
    let relayed = row["relayed"]
        .as_str()
        .unwrap_or_else(|| panic!("an allocation: {row}"));
    assert!(relayed.starts_with("127.0.0.5:"), "{relayed}");
    // The same over TLS on --tls-port, trusting the sandbox's CA.
    let tls_row = {
        let out = sb
            .rtcdev()
            .arg("--ca-dir")
            .arg(sb.ca_dir())
            .args(["probe", "--json", "--timeout", "3s", "--turn"])
            .arg(format!("turns:localhost:{}", tls_addr.port()))
            .args(["--secret", "s3cret"])
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["servers"][0].clone()
    };
    assert!(
        tls_row["relayed"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.5:")),
        "an allocation over TLS: {tls_row}"
    );
    let bad = probe_json(&sb, udp, "wrong");
    assert_eq!(bad["servers"][0]["failure"], "auth", "{bad}");
    assert!(bad["servers"][0]["relayed"].is_null());
}

/// Datagrams the TURN library cannot handle (a STUN response sent to the server,
/// ChannelData outside any allocation, bytes that are not STUN) make it log an error
/// each. From a LAN client that is a way to fill the disk of whoever keeps the logs:
/// such lines from other crates are written once per 10 s, however many arrive.
#[test]
fn another_crates_error_per_datagram_is_written_once() {
    let sb = Sandbox::new();
    let log_path = sb.path().join("turn.log");
    let ca = sb.ca_dir();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rtcdev"))
        .current_dir(sb.path())
        .env("HOME", sb.path())
        .env_remove("RUST_LOG")
        .env_remove("RTCDEV_CAROOT")
        .args(["--ca-dir", ca.to_str().unwrap()])
        .args(["turn", "--bind", "127.0.0.1", "--port", "0", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&first).expect("turn --json");
    let udp = json["turn"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .find(|u| u.ends_with("transport=udp"))
        .expect("a UDP TURN URL");
    let addr = url_addr(udp);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut response = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    response.extend_from_slice(&[7; 12]);
    let channel_data = [0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4];
    let lines = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("error when handling datagram")
            .count()
    };
    for i in 0..900 {
        let pkt: &[u8] = match i % 3 {
            0 => &response,
            1 => &channel_data,
            _ => b"\x00\x01not stun at all",
        };
        sock.send_to(pkt, addr).unwrap();
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The first line shows the library did log; wait for it (bounded), then let the
    // rest of the datagrams be handled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lines() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let written = lines();
    child.kill().ok();
    child.wait().ok();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        written == 1,
        "{written} lines for 900 datagrams (want exactly one):\n{}",
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}
