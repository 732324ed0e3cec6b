//! `rtcdev serve` as a user starts it: the built binary on a loopback port.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Sandbox, require};

#[test]
fn json_urls_fingerprint_and_sigterm_exits_0() {
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
    // An HTTP/1.0 client (it names only http/1.0 in the TLS handshake) is answered too.
    let old = Command::new("curl")
        .args([
            "-s",
            "--http1.0",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(&ca)
        .arg(&local)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&old.stdout), "200");
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
}

/// `rtcdev serve` inside a network namespace whose only non-loopback address is a LAN
/// one (192.168.77.10 on a dummy interface), so it has a phone link to show; on a
/// terminal (a pty from `script`) when `tty` is set, else on a pipe. The banner lines up
/// to the CA line, read with a deadline.
fn banner_in_a_lan_namespace(sb: &Sandbox, tty: bool, extra: &str) -> Vec<String> {
    banner_in_a_namespace(sb, tty, extra, &["192.168.77.10/24"])
}

/// [`banner_in_a_lan_namespace`] with `addrs` on the interface, in that order.
fn banner_in_a_namespace(sb: &Sandbox, tty: bool, extra: &str, addrs: &[&str]) -> Vec<String> {
    banner_in_a_namespace_as(sb, tty, extra, addrs, None)
}

/// [`banner_in_a_namespace`] on a machine named `hostname` (a UTS namespace of its
/// own) when one is given.
fn banner_in_a_namespace_as(
    sb: &Sandbox,
    tty: bool,
    extra: &str,
    addrs: &[&str],
    hostname: Option<&str>,
) -> Vec<String> {
    // The text banner ends with the CA line; `--json` is one line.
    let done = |lines: &[String]| {
        lines
            .last()
            .is_some_and(|l| l.contains("Certificate by the local CA") || l.starts_with('{'))
    };
    serve_in_a_namespace(sb, tty, extra, addrs, hostname, "", &done)
}

/// What `rtcdev serve` prints in a network namespace set up as for
/// [`banner_in_a_namespace_as`], while `later` (a shell command, run once the banner is
/// out) changes it, up to where `done` says, within 20 s.
fn serve_in_a_namespace(
    sb: &Sandbox,
    tty: bool,
    extra: &str,
    addrs: &[&str],
    hostname: Option<&str>,
    later: &str,
    done: &dyn Fn(&[String]) -> bool,
) -> Vec<String> {
    assert!(
        common::is_root(),
        "this test makes a network namespace and needs root (./test.sh runs as root in CI)"
    );
    require("unshare", "util-linux");
    require("script", "bsdutils");
    let bin = assert_cmd::cargo::cargo_bin("rtcdev");
    let serve = format!("{} serve --port 0 --room qr-room {extra}", bin.display());
    let run = if tty {
        format!("exec script -qfec '{serve}' /dev/null")
    } else {
        format!("exec {serve}")
    };
    let addrs: String = addrs
        .iter()
        .map(|a| format!("ip addr add {a} dev d0 && "))
        .collect();
    let name = hostname
        .map(|h| format!("hostname {h} && "))
        .unwrap_or_default();
    let setup = format!(
        "{name}ip link set lo up && ip link add d0 type veth peer name d1 && \
         {addrs}ip link set d0 up && ip link set d1 up"
    );
    // A PID namespace too, whose first process dies with `unshare`: killing it ends
    // rtcdev as well, even where SIGHUP is ignored (under nohup) and the pty's hangup
    // would not.
    let later = if later.is_empty() {
        String::new()
    } else {
        // Once the banner is out (the test makes `go`): before, the change would be
        // what serve finds at start. Bounded: 30 s at most.
        format!("(for i in $(seq 300); do [ -e go ] && break; sleep 0.1; done; {later}) &\n")
    };
    let script = format!("{setup} || exit 1\n{later}{run}");
    let mut args = vec!["--net", "--pid", "--fork", "--kill-child"];
    if hostname.is_some() {
        args.push("--uts");
    }
    args.extend(["sh", "-c", &script]);
    let mut child = Command::new("unshare")
        .args(&args)
        .current_dir(sb.path())
        .env("HOME", sb.path())
        .env("RUST_LOG", "warn")
        .env_remove("RTCDEV_CAROOT")
        .env_remove("CAROOT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("Certificate by the local CA") {
                    std::fs::write(sb.path().join("go"), "").unwrap();
                }
                lines.push(line);
                if done(&lines) {
                    break;
                }
            }
            Err(_) => {
                child.kill().ok();
                child.wait().ok();
                panic!("not all output within 20 s:\n{}", lines.join("\n"));
            }
        }
    }
    child.kill().ok();
    child.wait().ok();
    lines
}

/// What the first `➜  NAME:` line in `lines` says after its label (`prefix`, as
/// `"➜  Phone:"`), trimmed; panics with all of `lines` when there is none.
fn banner_line(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line:\n{}", lines.join("\n")))
        .trim()
        .to_string()
}

/// The rows of the QR code drawn after the first "Scan to join" line in `lines`.
fn qr_rows(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .skip_while(|l| !l.contains("Scan to join"))
        .skip(1)
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.strip_prefix("  ").unwrap_or(l).to_string())
        .collect()
}

/// Reads a QR code drawn with half blocks (`▀▄█` and spaces, light modules as blocks)
/// by painting it into a PGM image and decoding that with zbarimg.
fn decode_terminal_qr(sb: &Sandbox, rows: &[String]) -> String {
    require("zbarimg", "zbar-tools");
    const SCALE: usize = 6;
    let cells: Vec<Vec<char>> = rows.iter().map(|r| r.chars().collect()).collect();
    let width = cells.iter().map(Vec::len).max().unwrap_or(0);
    let height = cells.len() * 2;
    // A dark margin (the terminal) around the code's own light quiet zone.
    let (w, h) = ((width + 8) * SCALE, (height + 8) * SCALE);
    let mut img = vec![0u8; w * h];
    for (y, row) in cells.iter().enumerate() {
        for (x, c) in row.iter().enumerate() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            for (half, light) in [(0, top), (1, bottom)] {
                if !light {
                    continue;
                }
                let (px, py) = ((x + 4) * SCALE, ((y * 2 + half) + 4) * SCALE);
                for dy in 0..SCALE {
                    let at = (py + dy) * w + px;
                    img[at..at + SCALE].fill(255);
                }
            }
        }
    }
    let path = sb.path().join("qr.pgm");
    let mut pgm = format!("P5\n{w} {h}\n255\n").into_bytes();
    pgm.extend_from_slice(&img);
    std::fs::write(&path, pgm).unwrap();
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "zbarimg read no QR code");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// With a LAN address and a terminal, the banner carries a QR code of the phone link,
/// and that is what a phone reads from it; on a pipe (a log file, a CI job) there is
/// no QR code, the phone link is still printed.
#[test]
fn the_qr_code_reads_the_phone_link_on_a_terminal_only() {
    let sb = Sandbox::new();
    let lines = banner_in_a_lan_namespace(&sb, true, "");
    let phone = banner_line(&lines, "➜  Phone:");
    assert!(
        phone.starts_with("http://192.168.77.10:") && phone.ends_with("/join?room=qr-room"),
        "{phone}"
    );
    let rows = qr_rows(&lines);
    assert!(
        rows.len() > 10,
        "no QR code on a terminal:\n{}",
        lines.join("\n")
    );
    assert_eq!(decode_terminal_qr(&sb, &rows), phone);

    let piped = banner_in_a_lan_namespace(&sb, false, "");
    assert!(
        piped.iter().any(|l| l.contains("Phone:")),
        "{}",
        piped.join("\n")
    );
    assert!(
        !piped
            .iter()
            .any(|l| l.contains('█') || l.contains("Scan to join")),
        "no QR code off a terminal:\n{}",
        piped.join("\n")
    );
    // --qr forces it even there.
    let forced = banner_in_a_lan_namespace(&sb, false, "--qr");
    assert!(forced.iter().any(|l| l.contains("Scan to join")));
}

/// A LAN address the local CA may not vouch for (a public one: the CA is constrained to
/// private ranges) is not where the links point, and the banner says the certificate
/// leaves it out and what to do, instead of printing a URL every browser refuses.
#[test]
fn a_public_lan_address_is_marked_and_not_linked() {
    let sb = Sandbox::new();
    let lines = banner_in_a_namespace(&sb, false, "", &["192.0.2.7/24", "192.168.77.10/24"]);
    let text = lines.join("\n");
    let line = |prefix: &str| banner_line(&lines, prefix);
    assert!(
        line("➜  Phone:").starts_with("http://192.168.77.10:"),
        "{text}"
    );
    assert!(
        line("➜  Room:").starts_with("https://192.168.77.10:"),
        "{text}"
    );
    let public = lines
        .iter()
        .find(|l| l.contains("Network: https://192.0.2.7:"))
        .unwrap_or_else(|| panic!("no URL for 192.0.2.7:\n{text}"));
    assert!(public.contains("not in the certificate"), "{text}");
    assert!(
        text.contains("--unconstrained-ca") && text.contains("private"),
        "{text}"
    );
    let private = lines
        .iter()
        .find(|l| l.contains("Network: https://192.168.77.10:"))
        .unwrap_or_else(|| panic!("no URL for 192.168.77.10:\n{text}"));
    assert!(!private.contains("not in the certificate"), "{text}");
    // --json says the same to a script.
    let lines = banner_in_a_namespace(&sb, false, "--json", &["192.0.2.7/24", "192.168.77.10/24"]);
    let json = lines.iter().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        v["not_in_certificate"],
        serde_json::json!(["192.0.2.7"]),
        "{v}"
    );
    assert!(
        v["phone_url"]
            .as_str()
            .unwrap()
            .starts_with("http://192.168.77.10:"),
        "{v}"
    );
}

/// A laptop that joins a network while serving: the new address gets a certificate, and
/// the terminal shows its URL, the new phone link and that link's QR code, so a phone
/// joins in one scan without a restart.
#[test]
fn a_new_network_prints_the_new_phone_link_and_qr_code() {
    let sb = Sandbox::new();
    let changed = |lines: &[String]| {
        let Some(at) = lines.iter().position(|l| l.contains("Network changed")) else {
            return false;
        };
        let after = &lines[at..];
        after.iter().any(|l| l.contains("Scan to join"))
            && after.last().is_some_and(|l| l.trim().is_empty())
            && qr_rows(after).len() > 10
    };
    // On a pipe (with --qr): `script` stops passing a pty's output on once its own
    // input ends.
    let lines = serve_in_a_namespace(
        &sb,
        false,
        "--qr",
        &[],
        None,
        "ip addr add 192.168.88.5/24 dev d0",
        &changed,
    );
    let text = lines.join("\n");
    let at = lines
        .iter()
        .position(|l| l.contains("Network changed"))
        .unwrap();
    let (before, after) = lines.split_at(at);
    assert!(
        !before
            .iter()
            .any(|l| l.contains("Phone:") || l.contains("Scan to join")),
        "no phone link or QR code without a LAN:\n{text}"
    );
    assert!(
        before
            .iter()
            .any(|l| l.contains("No QR code: no address here a phone can reach")),
        "--qr says why there is none:\n{text}"
    );
    assert!(
        after
            .iter()
            .any(|l| l.contains("Network: https://192.168.88.5:")),
        "{text}"
    );
    let phone = banner_line(after, "➜  Phone:");
    assert!(
        phone.starts_with("http://192.168.88.5:") && phone.ends_with("/join?room=qr-room"),
        "{text}"
    );
    assert_eq!(decode_terminal_qr(&sb, &qr_rows(after)), phone);
}

/// When the certificate covers no LAN address (the only one is public), the phone link
/// and its QR code go to the machine's mDNS name, which every certificate of the local
/// CA carries, and the room link to localhost: never to the address a browser refuses.
/// A machine without an mDNS name gets no phone link and no QR code, and is told why.
#[test]
fn with_no_lan_address_in_the_certificate_the_phone_goes_to_the_mdns_name() {
    let sb = Sandbox::new();
    let public = ["192.0.2.7/24"];
    let lines = banner_in_a_namespace_as(&sb, true, "--qr", &public, Some("labhost"));
    let text = lines.join("\n");
    let line = |prefix: &str| banner_line(&lines, prefix);
    let phone = line("➜  Phone:");
    assert!(
        phone.starts_with("http://labhost.local:") && phone.ends_with("/join?room=qr-room"),
        "{text}"
    );
    assert!(line("➜  Room:").starts_with("https://localhost:"), "{text}");
    let rows = qr_rows(&lines);
    assert!(rows.len() > 10, "no QR code:\n{text}");
    assert_eq!(decode_terminal_qr(&sb, &rows), phone);
    assert!(!text.contains("http://192.0.2.7"), "{text}");

    // `localhost` makes no mDNS name: no link a phone could open, and no QR code even
    // with --qr.
    let lines = banner_in_a_namespace_as(&sb, true, "--qr", &public, Some("localhost"));
    let text = lines.join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Phone:") && l.contains("certificate covers no LAN address")),
        "{text}"
    );
    assert!(!text.contains("Scan to join"), "{text}");
    assert!(!text.contains("http://192.0.2.7"), "{text}");
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
        open: false,
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

/// `--open`: the room's URL on this machine goes to the browser ($BROWSER here: a script that
/// writes down what it was given), once the server answers.
#[test]
fn open_hands_the_room_to_the_browser() {
    let sb = Sandbox::new();
    let seen = sb.path().join("opened.txt");
    let browser = sb.path().join("fake-browser");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut proc = sb.spawn_env(
        &[
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--room",
            "open-room",
            "--json",
            "--open",
        ],
        &[("BROWSER", browser.to_str().unwrap())],
    );
    // A first run creates the CA and says so before the JSON.
    let line = std::iter::repeat_with(|| proc.line())
        .find(|l| l.starts_with('{'))
        .unwrap();
    let urls: serde_json::Value = serde_json::from_str(&line).expect("--json");
    let local = urls["local"][0].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let opened = std::fs::read_to_string(&seen).expect("the browser was started");
    assert_eq!(opened.trim(), format!("{local}?room=open-room"));
}
