//! `rtcdev signal` as a user runs it: the built binary on a loopback port.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{NativeClient, Sandbox};

struct Running {
    proc: common::Spawned,
    url: String,
}

fn start(sb: &Sandbox, extra: &[&str]) -> Running {
    let mut args = vec!["signal", "--bind", "127.0.0.1", "--port", "0"];
    args.extend_from_slice(extra);
    let mut proc = sb.spawn(&args);
    let url = loop {
        if let Some(url) = proc.line().trim().strip_prefix("Local:") {
            break url.trim().to_string();
        }
    };
    Running { proc, url }
}

fn get(addr: &str, path: &str) -> String {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` as it is and reads the answer to the end.
fn raw(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn serves_the_hub_and_stops_on_sigterm_with_1001() {
    let sb = Sandbox::new();
    let mut run = start(&sb, &[]);
    let addr = run.url.trim_start_matches("http://").to_string();
    let health = get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body: serde_json::Value =
        serde_json::from_str(health.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["peers"], 0);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let mut c = NativeClient::connect(&format!("ws://{addr}/ws")).await;
    c.join("room").await;
    let health = get(&addr, "/healthz");
    assert!(
        health.contains("\"peers\":1") && health.contains("\"rooms\":1"),
        "{health}"
    );

    // The host check reads one Host: two (the second could name another host), or an
    // HTTP/1.1 request with none, are malformed.
    for request in [
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        ),
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let answer = raw(&addr, &request);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    run.proc.sigterm();
    assert_eq!(c.close_code().await, Some(1001));
    assert_eq!(run.proc.wait_exit().code(), Some(0));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let sb = Sandbox::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    sb.rtcdev()
        .args(["signal", "--bind", "127.0.0.1", "--port", &port])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(format!(
            "port {port} on 127.0.0.1 is in use"
        )));
}

#[test]
fn bad_tls_files_are_clear_errors() {
    let sb = Sandbox::new();
    sb.rtcdev()
        .args(["--ca-dir", "ca", "cert", "a.test"])
        .assert()
        .success();
    sb.rtcdev()
        .args(["--ca-dir", "ca", "cert", "b.test"])
        .assert()
        .success();
    sb.rtcdev()
        .args([
            "signal",
            "--port",
            "0",
            "--cert",
            "a.test.pem",
            "--key",
            "b.test-key.pem",
        ])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "does not belong to the certificate",
        ));
    sb.rtcdev()
        .args([
            "signal",
            "--port",
            "0",
            "--cert",
            "missing.pem",
            "--key",
            "b.test-key.pem",
        ])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "cannot read the certificate missing.pem",
        ));
    sb.rtcdev()
        .args(["signal", "--port", "0", "--turn", "turn:127.0.0.1:3478"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--turn needs credentials"));
    sb.rtcdev()
        .args(["signal", "--port", "0", "--stun", "http://x"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("not a STUN URL"));
}

#[tokio::test]
async fn tls_from_the_local_ca() {
    let sb = Sandbox::new();
    let run = start(&sb, &["--tls"]);
    assert!(run.url.starts_with("https://"), "{}", run.url);
    let ca = sb.path().join(".local/share/rtcdev/rootCA.pem");
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&ca)
        .arg(format!("{}/healthz", run.url))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"rooms\":0"),
        "curl: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA the certificate is refused.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .arg(format!("{}/healthz", run.url))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl exit 60: certificate problem"
    );
}

#[test]
fn printed_nginx_site_balances_signal_processes() {
    common::require("nginx", "nginx-light");
    let sb = Sandbox::new();
    sb.localhost_cert_files();
    // The article's layout: nginx terminates HTTPS in front of plain signaling servers.
    let out = sb
        .rtcdev()
        .args(["signal", "--print-nginx"])
        .args([
            "--upstream",
            "127.0.0.1:3001",
            "--upstream",
            "127.0.0.1:3002",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let site = String::from_utf8(out.stdout)
        .unwrap()
        .replace("/etc/ssl/rtcdev/cert.pem", "c.pem")
        .replace("/etc/ssl/rtcdev/key.pem", "k.pem");
    assert!(site.contains("proxy_pass http://rtcdev_hubs;"), "{site}");
    assert!(site.contains("server 127.0.0.1:3001;") && site.contains("server 127.0.0.1:3002;"));
    assert!(site.contains("proxy_set_header Upgrade $http_upgrade;"));
    common::nginx_t(&sb, &site);
}

#[test]
fn printed_nginx_site_for_a_tls_signal_server_proxies_https() {
    let sb = Sandbox::new();
    let out = sb
        .rtcdev()
        .args(["signal", "--port", "3443", "--tls", "--print-nginx"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let site = String::from_utf8(out.stdout).unwrap();
    assert!(
        site.contains("proxy_pass https://127.0.0.1:3443;"),
        "{site}"
    );
}

#[test]
fn hub_limits_out_of_range_are_errors_not_quietly_changed() {
    let sb = Sandbox::new();
    for (args, says) in [
        (&["--room-size", "1"][..], "--room-size"),
        (&["--room-size", "100000"][..], "--room-size"),
        (&["--max-frame", "100"][..], "--max-frame"),
        (&["--rate", "0"][..], "--rate"),
        (&["--burst", "0"][..], "--burst"),
        (&["--max-conns", "0"][..], "--max-conns"),
        (
            &["--max-frame", "65536", "--max-queue", "4096"][..],
            "--max-queue 4096 is smaller than --max-frame 65536",
        ),
    ] {
        let err = refused(&sb, args);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn ice_urls_are_checked_with_the_probes_grammar() {
    let sb = Sandbox::new();
    for (args, says) in [
        (&["--stun", "turn:127.0.0.1:3478"][..], "is not a STUN URL"),
        (
            &["--turn", "stun:127.0.0.1:3478", "--turn-secret", "s"][..],
            "is not a TURN URL",
        ),
        (
            &["--turn", "turn:127.0.0.1:99999", "--turn-secret", "s"][..],
            "not a port",
        ),
        (&["--stun", "stun:"][..], "no host"),
    ] {
        let err = refused(&sb, args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Runs `rtcdev signal` on loopback with `args`, which it must refuse; its stderr.
fn refused(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb
        .rtcdev()
        .args(["signal", "--bind", "127.0.0.1", "--port", "0"])
        .args(args)
        .timeout(std::time::Duration::from_secs(10))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
