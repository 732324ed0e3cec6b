//! `rtcdev probe` and `rtcdev turn` on loopback: the probe against rtcdev's own TURN
//! server and against coturn, coturn's turnutils_uclient against rtcdev's server, and
//! every failure class the probe names.

mod common;

use rtcdev::probe::{Failure, Verdict};

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Sandbox, require};
use rtcdev::probe::{self, IceUrl, ProbeConfig, Target};
use rtcdev::turn::{self, TurnConfig};

fn turn_config(users: &[(&str, &str)], secret: Option<&str>, relay: (u16, u16)) -> TurnConfig {
    TurnConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        realm: "rtcdev".into(),
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        secret: secret.map(String::from),
        external_ip: None,
        relay_ports: relay,
        tls: None,
        rest_ttl: rtcdev::ice::DEFAULT_TURN_CREDENTIAL_TTL,
        // Every peer here is on loopback: the relay checks need it.
        guard: rtcdev::turn::GuardConfig {
            allow_loopback_peers: true,
            ..Default::default()
        },
    }
}

fn target(url: &str, user: Option<&str>, pass: Option<&str>) -> Target {
    Target {
        url: IceUrl::parse(url).unwrap(),
        username: user.map(String::from),
        credential: pass.map(String::from),
    }
}

async fn probe(targets: Vec<Target>, timeout: Duration, secret: Option<&str>) -> probe::Report {
    probe_with_ca(targets, timeout, secret, None).await
}

/// The probe's per-step timeout where a test needs the answer (a pass, or a failure
/// the server states), not the timeout itself: generous, as a loaded 2-core machine
/// may take seconds for a step.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One target, [`ANSWER_TIMEOUT`], no TURN secret.
async fn probe_one(url: &str, user: Option<&str>, pass: Option<&str>) -> probe::Report {
    probe(vec![target(url, user, pass)], ANSWER_TIMEOUT, None).await
}

async fn probe_with_ca(
    targets: Vec<Target>,
    timeout: Duration,
    secret: Option<&str>,
    ca_dir: Option<&std::path::Path>,
) -> probe::Report {
    probe::run(
        &ProbeConfig {
            targets,
            timeout,
            ca_dir: ca_dir.map(|d| d.to_path_buf()),
        },
        secret,
    )
    .await
}

#[tokio::test]
async fn probe_passes_against_rtcdev_turn_and_names_failures() {
    let server = turn::start(&turn_config(&[("alice", "pw")], None, (52000, 52100)))
        .await
        .unwrap();
    let a = server.addr;
    // Garbage datagrams are logged and dropped; the server stays up.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        junk.send_to(&[i; 37], a).unwrap();
    }
    let report = probe(
        vec![
            target(&format!("stun:{a}"), None, None),
            target(
                &format!("turn:{a}?transport=udp"),
                Some("alice"),
                Some("pw"),
            ),
        ],
        ANSWER_TIMEOUT,
        None,
    )
    .await;
    assert!(report.ok(), "{}", report.table());
    let stun = &report.servers[0];
    assert!(
        stun.mapped.as_deref().unwrap().starts_with("127.0.0.1:"),
        "{stun:?}"
    );
    let turn = &report.servers[1];
    assert!(
        turn.relayed.as_deref().unwrap().starts_with("127.0.0.1:52"),
        "{turn:?}"
    );
    assert_eq!(turn.relay_echoes, Some(probe::RELAY_ECHOES));
    // A round trip was measured (no fixed bound: a loaded 2-core machine varies).
    assert!(turn.relay_rtt_ms.unwrap() > 0.0);

    let wrong = probe_one(&format!("turn:{a}"), Some("alice"), Some("nope")).await;
    assert_eq!(
        wrong.servers[0].failure,
        Some(Failure::Auth),
        "{}",
        wrong.table()
    );
    // 401, as the RFC and coturn answer a wrong password (browsers report a 400 as a
    // generic allocation error, not as the credentials).
    assert!(
        wrong.servers[0].details.contains("401"),
        "{}",
        wrong.table()
    );
    let unknown = probe_one(&format!("turn:{a}"), Some("mallory"), Some("pw")).await;
    assert_eq!(unknown.servers[0].verdict, Verdict::Fail);
    assert_eq!(
        unknown.servers[0].failure,
        Some(Failure::Auth),
        "{}",
        unknown.table()
    );
    let no_creds = probe(
        vec![target(&format!("turn:{a}"), None, None)],
        Duration::from_secs(1),
        None,
    )
    .await;
    assert_eq!(no_creds.servers[0].failure, Some(Failure::Usage));
    server.close().await;
}

/// TLS for a TURN server: a leaf for localhost from a CA made in `ca_dir`.
fn tls_from_new_ca(ca_dir: &std::path::Path) -> rtcdev::cert::tls::TlsSource {
    rtcdev::cert::tls::install_default_provider();
    let location = rtcdev::cert::CaLocation::resolve(Some(ca_dir)).unwrap();
    rtcdev::cert::tls::TlsSource::LocalCa(location)
}

/// rtcdev's TURN server with user alice:pw, relaying on `relay`, with a TLS port whose
/// certificate comes from a CA made in the sandbox.
async fn turn_with_tls(sb: &Sandbox, relay: (u16, u16)) -> turn::TurnServer {
    let mut cfg = turn_config(&[("alice", "pw")], None, relay);
    cfg.tls = Some((0, tls_from_new_ca(&sb.ca_dir())));
    turn::start(&cfg).await.unwrap()
}

#[tokio::test]
async fn probe_over_tcp_and_tls_against_rtcdev_turn() {
    let sb = Sandbox::new();
    let server = turn_with_tls(&sb, (52800, 52900)).await;
    let a = server.addr;
    let tls_port = server.tls_addr.unwrap().port();
    // Garbage on the TCP port is dropped with its connection; the server stays up.
    {
        use tokio::io::AsyncWriteExt;
        let mut junk = tokio::net::TcpStream::connect(a).await.unwrap();
        let _ = junk.write_all(&[0xFF; 64]).await;
        let mut tls_junk = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .unwrap();
        let _ = tls_junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    }
    let report = probe_with_ca(
        vec![
            target(
                &format!("turn:{a}?transport=tcp"),
                Some("alice"),
                Some("pw"),
            ),
            target(
                &format!("turns:localhost:{tls_port}?transport=tcp"),
                Some("alice"),
                Some("pw"),
            ),
        ],
        ANSWER_TIMEOUT,
        None,
        Some(&sb.ca_dir()),
    )
    .await;
    assert!(report.ok(), "{}", report.table());
    for row in &report.servers {
        assert_eq!(row.relay_echoes, Some(probe::RELAY_ECHOES), "{row:?}");
        assert!(row.relayed.as_deref().unwrap().starts_with("127.0.0.1:52"));
    }

    let wrong = probe_one(
        &format!("turn:{a}?transport=tcp"),
        Some("alice"),
        Some("nope"),
    )
    .await;
    assert_eq!(
        wrong.servers[0].failure,
        Some(Failure::Auth),
        "{}",
        wrong.table()
    );

    // A CA the probe does not trust: a TLS failure, said so.
    let other = Sandbox::new();
    let untrusted = probe_with_ca(
        vec![target(
            &format!("turns:localhost:{tls_port}"),
            Some("alice"),
            Some("pw"),
        )],
        ANSWER_TIMEOUT,
        None,
        Some(&other.ca_dir()),
    )
    .await;
    let row = &untrusted.servers[0];
    assert_eq!(row.failure, Some(Failure::Tls), "{}", untrusted.table());
    assert!(row.details.contains("certificate"), "{row:?}");
    // TLS to the plain TCP port: refused at once, well before the (long) timeout.
    let started = Instant::now();
    let plain = probe_with_ca(
        vec![target(
            &format!("turns:localhost:{}", a.port()),
            Some("alice"),
            Some("pw"),
        )],
        Duration::from_secs(20),
        None,
        Some(&sb.ca_dir()),
    )
    .await;
    assert_eq!(
        plain.servers[0].failure,
        Some(Failure::Tls),
        "{}",
        plain.table()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.close().await;
}

#[tokio::test]
async fn a_closed_port_is_unreachable_at_the_timeout() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let started = Instant::now();
    let report = probe(
        vec![target(&format!("stun:{addr}"), None, None)],
        Duration::from_millis(800),
        None,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        report.servers[0].failure,
        Some(Failure::Unreachable),
        "{}",
        report.table()
    );
    // Not before the timeout; after it, only as late as a loaded machine makes it.
    assert!(took >= Duration::from_millis(700), "{took:?}");
    let dns = probe(
        vec![target("stun:no-such-host.invalid:3478", None, None)],
        Duration::from_secs(2),
        None,
    )
    .await;
    assert_eq!(dns.servers[0].failure, Some(Failure::Dns));
    // TURN over TCP to a closed port: refused.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    drop(tcp);
    let refused = probe(
        vec![target(
            &format!("turn:{tcp_addr}?transport=tcp"),
            Some("u"),
            Some("p"),
        )],
        Duration::from_secs(2),
        None,
    )
    .await;
    assert_eq!(
        refused.servers[0].failure,
        Some(Failure::Refused),
        "{}",
        refused.table()
    );
}

#[tokio::test]
async fn turn_rest_credentials_and_their_expiry() {
    let server = turn::start(&turn_config(&[], Some("sharedsecret"), (52200, 52300)))
        .await
        .unwrap();
    let a = server.addr;
    let ok = probe(
        vec![target(&format!("turn:{a}"), None, None)],
        ANSWER_TIMEOUT,
        Some("sharedsecret"),
    )
    .await;
    assert!(ok.ok(), "{}", ok.table());
    // Credentials that expired an hour ago.
    let past = SystemTime::now() - Duration::from_secs(7200);
    let (user, pass) =
        rtcdev::ice::turn_rest_credentials("sharedsecret", "old", Duration::from_secs(3600), past);
    let expired = probe_one(&format!("turn:{a}"), Some(&user), Some(&pass)).await;
    assert_eq!(
        expired.servers[0].failure,
        Some(Failure::Auth),
        "{}",
        expired.table()
    );
    server.close().await;
}

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn probe_passes_against_coturn() {
    let tls_port = free_udp_port().to_string();
    let sb = Sandbox::new();
    // A certificate from rtcdev's CA for coturn's TLS listener.
    sb.localhost_cert_files();
    let (cert, key) = (sb.path().join("c.pem"), sb.path().join("k.pem"));
    let (_coturn, addr) = coturn(
        &sb,
        &[
            "--min-port",
            "52400",
            "--max-port",
            "52500",
            "--tls-listening-port",
            &tls_port,
            "--cert",
            cert.to_str().unwrap(),
            "--pkey",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let report = probe_with_ca(
        vec![
            target(&format!("stun:{addr}"), None, None),
            target(&format!("turn:{addr}"), Some("alice"), Some("pw")),
            target(
                &format!("turn:{addr}?transport=tcp"),
                Some("alice"),
                Some("pw"),
            ),
            target(
                &format!("turns:localhost:{tls_port}?transport=tcp"),
                Some("alice"),
                Some("pw"),
            ),
        ],
        ANSWER_TIMEOUT,
        None,
        Some(&sb.ca_dir()),
    )
    .await;
    assert!(report.ok(), "{}", report.table());
    for row in &report.servers[1..] {
        assert_eq!(row.relay_echoes, Some(probe::RELAY_ECHOES), "{row:?}");
    }
    let wrong = probe_one(&format!("turn:{addr}"), Some("alice"), Some("bad")).await;
    assert_eq!(wrong.servers[0].failure, Some(Failure::Auth));
    assert!(
        wrong.servers[0].details.contains("401"),
        "{}",
        wrong.table()
    );
}

/// coturn on loopback (no DTLS; TLS only if `extra` sets it up) with `extra` flags,
/// answering STUN (waited for, bounded).
async fn coturn(sb: &Sandbox, extra: &[&str]) -> (Coturn, SocketAddr) {
    // The free port may be taken again before coturn binds it (other tests run in
    // parallel): a few tries, each bounded.
    for _ in 0..3 {
        if let Some(running) = coturn_once(sb, extra).await {
            return running;
        }
    }
    panic!("coturn did not start in three tries");
}

async fn coturn_once(sb: &Sandbox, extra: &[&str]) -> Option<(Coturn, SocketAddr)> {
    require("turnserver", "coturn");
    let port = free_udp_port();
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
        ])
        .args(["--listening-port", &port.to_string()])
        .args([
            "-a",
            "-u",
            "alice:pw",
            "-r",
            "rtcdev",
            "--allow-loopback-peers",
        ])
        .args(["--no-dtls", "--no-cli", "--log-file", "stdout"])
        .args(extra)
        .arg("--pidfile")
        .arg(sb.path().join(format!("turn-{port}.pid")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Coturn(child);
    let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe(
        vec![target(&format!("stun:{addr}"), None, None)],
        Duration::from_millis(300),
        None,
    )
    .await
    .ok()
    {
        if Instant::now() >= deadline {
            return None;
        }
    }
    Some((guard, addr))
}

#[tokio::test]
async fn quota_486_and_policy_403_are_named() {
    let sb = Sandbox::new();
    // One allocation per user: the relay check's second allocation gets 486.
    // Peers on 127.0.0.1 denied: CreatePermission gets 403.
    let mut last = None;
    for (flags, code) in [
        (
            [
                "--no-tls",
                "--user-quota",
                "1",
                "--min-port",
                "52950",
                "--max-port",
                "52999",
            ],
            "486",
        ),
        (
            [
                "--no-tls",
                "--denied-peer-ip",
                "127.0.0.1",
                "--min-port",
                "53100",
                "--max-port",
                "53150",
            ],
            "403",
        ),
    ] {
        let (server, addr) = coturn(&sb, &flags).await;
        let r = probe_one(
            &format!("turn:{addr}?transport=tcp"),
            Some("alice"),
            Some("pw"),
        )
        .await;
        let row = &r.servers[0];
        assert_eq!(row.failure, Some(Failure::Forbidden), "{}", r.table());
        assert!(row.details.contains(code), "{row:?}");
        last = Some((server, addr));
    }
    let (_policy, addr) = last.unwrap();
    // Over UDP the relay check runs through webrtc-rs peer connections, which do not
    // report the 403: the allocation works, no data crosses, and the probe says so.
    // The timeout must also cover the allocation, which a loaded machine may slow: 3 s.
    let r = probe(
        vec![target(&format!("turn:{addr}"), Some("alice"), Some("pw"))],
        Duration::from_secs(3),
        None,
    )
    .await;
    let row = &r.servers[0];
    assert_eq!(row.failure, Some(Failure::NoRelayData), "{}", r.table());
    assert!(row.relayed.is_some(), "{row:?}");
}

#[tokio::test]
async fn an_allocation_flood_is_refused_and_the_server_stays_up() {
    // 20 relay ports, 60 allocation attempts (bounded): the surplus is refused.
    let server = turn::start(&turn_config(&[("alice", "pw")], None, (53300, 53319)))
        .await
        .unwrap();
    let mut held = Vec::new();
    let (mut refused, mut timed_out) = (0, 0);
    for _ in 0..60 {
        let client = common::turn_client(server.addr, "alice", "pw").await;
        match tokio::time::timeout(Duration::from_secs(3), client.allocate()).await {
            Ok(Ok(relay)) => held.push((client, relay)),
            Ok(Err(_)) => {
                refused += 1;
                let _ = client.close().await;
            }
            Err(_) => {
                timed_out += 1;
                let _ = client.close().await;
            }
        }
    }
    assert!(held.len() <= 20, "{} allocations on 20 ports", held.len());
    assert!(held.len() >= 15, "the ports were used: {} held", held.len());
    assert!(refused >= 40, "{refused} refused, {timed_out} unanswered");
    assert_eq!(
        timed_out, 0,
        "every surplus allocation is refused, not ignored"
    );
    for (client, relay) in held {
        use webrtc::util::Conn;
        let _ = relay.close().await;
        let _ = client.close().await;
    }
    // Still up, and the ports came back.
    let r = probe_one(&format!("turn:{}", server.addr), Some("alice"), Some("pw")).await;
    assert!(r.ok(), "{}", r.table());
    server.close().await;
}

#[tokio::test]
async fn coturn_uclient_relays_through_rtcdev_turn() {
    require("turnutils_uclient", "coturn");
    let sb = Sandbox::new();
    let server = turn_with_tls(&sb, (52600, 52700)).await;
    let plain = server.addr.port().to_string();
    let tls = server.tls_addr.unwrap().port().to_string();
    // UDP, TCP, and TLS (`-t -S`; uclient does not verify the certificate).
    for (flags, port) in [
        (&[][..], &plain),
        (&["-t"][..], &plain),
        (&["-t", "-S"][..], &tls),
    ] {
        let out = tokio::process::Command::new("turnutils_uclient")
            .args(flags)
            .args([
                "-y",
                "-X",
                "-u",
                "alice",
                "-w",
                "pw",
                "-p",
                port,
                "-n",
                "20",
                "-m",
                "2",
                "-l",
                "200",
                "127.0.0.1",
            ])
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .expect("uclient finished")
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("Total lost packets 0 (0.000000%)"),
            "{flags:?}: {text}"
        );
        let recv: usize = text
            .lines()
            .filter_map(|l| l.split("tot_recv_msgs=").nth(1))
            .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .max()
            .unwrap_or(0);
        assert!(recv >= 40, "{text}");
    }
    server.close().await;
}

#[test]
fn probe_cli_usage_and_input_errors() {
    let sb = Sandbox::new();
    for (args, needle) in [
        (vec!["probe", "--stun", "stun:"], "no host"),
        (vec!["probe", "--turn", "turn:host:99999"], "not a port"),
        (vec!["probe", "--stun", "http://x"], "scheme must be"),
        (vec!["probe"], "nothing to probe"),
    ] {
        sb.rtcdev()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(needle));
    }
    std::fs::write(sb.path().join("bad.json"), "{nope").unwrap();
    sb.rtcdev()
        .args(["probe", "--ice-servers", "bad.json"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("bad.json is not JSON"));
    sb.rtcdev()
        .args(["probe", "--ice-servers", "missing.json"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "cannot read --ice-servers missing.json",
        ));
    // A server that does not answer: exit 1, the `unreachable` class, at --timeout.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let started = Instant::now();
    let out = sb
        .rtcdev()
        .args([
            "probe",
            "--json",
            "--timeout",
            "1s",
            "--stun",
            &format!("stun:{addr}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the timeout was waited for"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["servers"][0]["failure"], "unreachable", "{v}");
    // The row names the timeout it waited: --timeout 1s, not the 5 s default (a check
    // of the elapsed time from above would race a loaded machine).
    assert_eq!(
        v["servers"][0]["details"], "no answer within 1000 ms",
        "{v}"
    );
}

#[tokio::test]
async fn probe_reads_config_json_from_rtcdev_serve() {
    let sb = Sandbox::new();
    let server = turn::start(&turn_config(&[], Some("s3"), (52800, 52900)))
        .await
        .unwrap();
    let turn_url = format!("turn:{}", server.addr);
    // rtcdev serve with the embedded server's secret hands out REST credentials.
    let mut serve = sb.spawn(&[
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--json",
        "--turn",
        &turn_url,
        "--turn-secret",
        "s3",
    ]);
    let json = loop {
        let l = serve.line();
        if l.starts_with('{') {
            break l;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let config_url = format!("{}config.json", v["local"][0].as_str().unwrap());
    let out = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("rtcdev"))
        .env("HOME", sb.path())
        .args(["probe", "--json", "--ice-servers", &config_url])
        .output()
        .await
        .unwrap();
    drop(serve);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["servers"][0]["verdict"], "ok", "{report}");
    assert_eq!(report["servers"][0]["relay_echoes"], probe::RELAY_ECHOES);
    server.close().await;
}

#[test]
fn turn_cli_prints_urls_and_refuses_a_taken_port() {
    let sb = Sandbox::new();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    sb.rtcdev()
        .args(["turn", "--bind", "127.0.0.1", "--port", &port])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(format!(
            "UDP port {port} on 127.0.0.1 is in use"
        )));
    sb.rtcdev()
        .args(["turn", "--user", "nocolon"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("NAME:PASSWORD"));
    sb.rtcdev()
        .args(["turn", "--relay-ports", "9-1"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--relay-ports"));

    let line = sb
        .spawn(&["turn", "--bind", "127.0.0.1", "--port", "0", "--json"])
        .line();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        v["turn"][0]
            .as_str()
            .unwrap()
            .starts_with("turn:127.0.0.1:"),
        "{v}"
    );
    assert_eq!(
        v["iceServers"][1]["username"], "rtcdev",
        "a random password for user rtcdev: {v}"
    );
    assert!(v["iceServers"][1]["credential"].as_str().unwrap().len() >= 16);
}

#[tokio::test]
async fn two_stun_servers_compare_the_nat_mapping() {
    let one = turn::start(&turn_config(&[("a", "b")], None, (53200, 53250)))
        .await
        .unwrap();
    let two = turn::start(&turn_config(&[("a", "b")], None, (53300, 53350)))
        .await
        .unwrap();
    let report = probe(
        vec![
            target(&format!("stun:{}", one.addr), None, None),
            target(&format!("stun:{}", two.addr), None, None),
        ],
        ANSWER_TIMEOUT,
        None,
    )
    .await;
    assert!(report.ok(), "{}", report.table());
    // Loopback has no NAT: one socket maps to itself at both servers.
    let nat = report.nat.as_deref().unwrap();
    assert!(nat.contains("endpoint-independent"), "{nat}");
    one.close().await;
    two.close().await;
}

/// A trusted CA, but a certificate that does not name the address dialled (a leaf for
/// `localhost` only, reached as 127.0.0.1): the `tls` class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_a_tls_failure() {
    let sb = Sandbox::new();
    sb.localhost_cert_files();
    let mut cfg = turn_config(&[("alice", "pw")], None, (52950, 52999));
    cfg.tls = Some((
        0,
        rtcdev::cert::tls::TlsSource::Files {
            cert: sb.path().join("c.pem"),
            key: sb.path().join("k.pem"),
        },
    ));
    let server = turn::start(&cfg).await.unwrap();
    let tls_port = server.tls_addr.unwrap().port();
    let report = probe_with_ca(
        vec![target(
            &format!("turns:127.0.0.1:{tls_port}"),
            Some("alice"),
            Some("pw"),
        )],
        ANSWER_TIMEOUT,
        None,
        Some(&sb.ca_dir()),
    )
    .await;
    let row = &report.servers[0];
    assert_eq!(row.failure, Some(Failure::Tls), "{}", report.table());
    // The same server by the name it has: allocated.
    let named = probe_with_ca(
        vec![target(
            &format!("turns:localhost:{tls_port}"),
            Some("alice"),
            Some("pw"),
        )],
        ANSWER_TIMEOUT,
        None,
        Some(&sb.ca_dir()),
    )
    .await;
    assert!(named.servers[0].relayed.is_some(), "{}", named.table());
    server.close().await;
}

/// A TURN client that names TURN in its TLS handshake (ALPN `stun.turn`, RFC 7443) gets
/// it, as from coturn; the TLS port offered HTTP's protocols and refused such a client
/// (no_application_protocol). A client that names none, or only others (`http/1.1`, as
/// some native apps set), still connects, with no protocol, as coturn lets it.
#[tokio::test(flavor = "multi_thread")]
async fn turn_over_tls_speaks_the_stun_turn_alpn() {
    require("openssl", "openssl");
    let sb = Sandbox::new();
    let server = turn_with_tls(&sb, (53400, 53420)).await;
    let port = server.tls_addr.unwrap().port();
    for (alpn, said) in [
        (Some("stun.turn"), "ALPN protocol: stun.turn"),
        (None, "No ALPN negotiated"),
        (Some("http/1.1"), "No ALPN negotiated"),
        (Some("h2,http/1.1"), "No ALPN negotiated"),
    ] {
        let mut args = vec![
            "s_client".to_string(),
            "-connect".into(),
            format!("127.0.0.1:{port}"),
        ];
        if let Some(a) = alpn {
            args.extend(["-alpn".into(), a.into()]);
        }
        let out = tokio::process::Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // openssl prints the ALPN line after a failed handshake too: the server's
        // certificate shows the handshake went through.
        assert!(
            text.contains(said) && text.contains("BEGIN CERTIFICATE"),
            "{alpn:?}: {text}"
        );
    }
    server.close().await;
}
