//! `rtcdev serve` as a user starts it: the built binary on a loopback port.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Sandbox, require};

#[test]
fn json_urls_no_qr_off_a_terminal_and_sigterm_exits_0() {
    let sb = Sandbox::new();
    let mut proc = sb.spawn(&[
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--room",
        "cli-room",
        "--json",
    ]);
    let first = proc.line();
    let first = if first.starts_with('{') {
        first
    } else {
        proc.line()
    };
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let local = v["local"][0].as_str().unwrap().to_string();
    assert!(local.starts_with("https://127.0.0.1:"), "{v}");
    assert!(v["room_url"].as_str().unwrap().ends_with("/?room=cli-room"));
    assert_eq!(
        v["network"],
        serde_json::json!([]),
        "bound to loopback: no network URLs"
    );
    assert!(
        v["ca_file"]
            .as_str()
            .unwrap()
            .ends_with(".local/share/rtcdev/rootCA.pem")
    );

    let ca = sb.path().join(".local/share/rtcdev/rootCA.pem");
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&ca)
        .arg(format!("{local}healthz"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"rooms\":0"));

    // The CA's fingerprint, as openssl computes it, in the banner, on the phone's join
    // page (grouped for reading aloud) and in the iOS profile.
    require("openssl", "openssl");
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let openssl = text.trim().rsplit('=').next().unwrap().to_string();
    assert_eq!(openssl.len(), 95, "{text}");
    assert_eq!(v["ca_fingerprint"], openssl.as_str(), "{v}");
    let plain = local.replace("https://", "http://");
    let page = Command::new("curl")
        .args(["-s", &format!("{plain}join?room=cli-room")])
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout).to_string();
    let hex = openssl.replace(':', "");
    let grouped: Vec<&str> = (0..16).map(|i| &hex[i * 4..i * 4 + 4]).collect();
    assert!(page.contains(&grouped.join(" ")), "{page}");
    let profile = Command::new("curl")
        .args(["-s", &format!("{plain}ca.mobileconfig")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&profile.stdout).contains(&openssl));

    proc.sigterm();
    assert_eq!(proc.wait_exit().code(), Some(0));
    let rest: Vec<String> = proc.lines.by_ref().map_while(Result::ok).collect();
    assert!(
        !rest.iter().any(|l| l.contains('█')),
        "no QR code off a terminal"
    );
}

#[test]
fn qr_only_when_forced() {
    let sb = Sandbox::new();
    let mut proc = sb.spawn(&["serve", "--bind", "127.0.0.1", "--port", "0", "--qr"]);
    let mut saw_qr = false;
    for line in proc.lines.by_ref().map_while(Result::ok) {
        if line.contains('█') {
            saw_qr = true;
        }
        if line.contains("Certificate by the local CA") {
            break;
        }
    }
    assert!(saw_qr);
}

#[test]
fn an_explicit_port_in_use_is_an_error() {
    let sb = Sandbox::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    sb.rtcdev()
        .args(["serve", "--bind", "127.0.0.1", "--port", &port])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(format!(
            "port {port} on 127.0.0.1 is in use"
        )));
}

#[test]
fn a_taken_default_port_moves_to_the_next() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = rtcdev::serve::ServeConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port,
        port_explicit: false,
        room: "r".into(),
        content: rtcdev::serve::Content::Bundled,
        tls: rtcdev::cert::tls::TlsSource::Files {
            cert: "x".into(),
            key: "y".into(),
        },
        hub: Default::default(),
        allow_origins: vec![],
        allowed_hosts: vec![],
        qr: rtcdev::serve::QrMode::Never,
        quiet: true,
        json: false,
        lan_poll: Duration::from_secs(5),
        lan: std::sync::Arc::new(Vec::new),
        embedded_turn: None,
    };
    let l = rtcdev::serve::bind(&config).unwrap();
    assert!(l.local_addr().unwrap().port() > port);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let sb = Sandbox::new();
    sb.rtcdev()
        .args(["serve", "--port", "0", "--dir", "no-such-dir"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "--dir no-such-dir: no such directory",
        ));
    sb.rtcdev()
        .args(["serve", "--port", "0", "--room", "bad/room"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--room \"bad/room\""));
    sb.rtcdev()
        .args([
            "serve",
            "--port",
            "0",
            "--cert",
            "nope.pem",
            "--key",
            "nope-key.pem",
        ])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "cannot read the certificate nope.pem",
        ));
}

#[test]
fn printed_nginx_site_passes_nginx_t_and_systemd_unit_runs_serve() {
    require("nginx", "nginx-light");
    let sb = Sandbox::new();
    sb.localhost_cert_files();
    let site = print_nginx(&sb, &[]);
    assert!(site.contains("proxy_set_header Upgrade $http_upgrade;"));
    assert!(site.contains("proxy_pass https://127.0.0.1:9443;"));
    common::nginx_t(&sb, &site);

    // Several hub processes sharing rooms through Redis: balanced, one client per process.
    let site = print_nginx(
        &sb,
        &[
            "--upstream",
            "127.0.0.1:8443",
            "--upstream",
            "127.0.0.1:8444",
        ],
    );
    assert!(site.contains("proxy_pass https://rtcdev_hubs;"), "{site}");
    assert!(site.contains("hash $remote_addr consistent;"));
    assert!(site.contains("server 127.0.0.1:8443;") && site.contains("server 127.0.0.1:8444;"));
    common::nginx_t(&sb, &site);
    sb.rtcdev()
        .args(["serve", "--print-nginx", "--upstream", "nohost"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("HOST:PORT"));

    let out = sb
        .rtcdev()
        .args([
            "serve",
            "--port",
            "9443",
            "--room",
            "team",
            "--print-systemd",
        ])
        .output()
        .unwrap();
    let unit = String::from_utf8(out.stdout).unwrap();
    assert!(
        unit.contains("serve --port 9443 --bind 0.0.0.0 --room team"),
        "{unit}"
    );
    assert!(unit.contains("[Install]") && unit.contains("Restart=on-failure"));
}

fn print_nginx(sb: &Sandbox, extra: &[&str]) -> String {
    let mut args = vec![
        "serve",
        "--port",
        "9443",
        "--print-nginx",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
    ];
    args.extend_from_slice(extra);
    let out = sb.rtcdev().args(&args).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}
