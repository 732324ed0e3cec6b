//! `rtcdev cert` driven as a user drives it: the built binary, a sandboxed HOME, and the
//! real mkcert, certutil and openssl.

mod common;

use common::{Sandbox, require};
use predicates::prelude::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn twice_is_idempotent_and_keeps_the_ca() {
    let sb = Sandbox::new();
    let first = sb
        .rtcdev()
        .args(["cert", "localhost", "127.0.0.1", "::1"])
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let text = stdout(&first);
    assert!(text.contains("Created a new local CA"), "{text}");
    for needle in [
        "\"localhost\"",
        "\"127.0.0.1\"",
        "\"::1\"",
        "./localhost+2.pem",
        "./localhost+2-key.pem",
        "It will expire on",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }
    let ca_dir = sb.path().join(".local/share/rtcdev");
    let ca_cert = std::fs::read(ca_dir.join("rootCA.pem")).unwrap();
    let ca_key = std::fs::read(ca_dir.join("rootCA-key.pem")).unwrap();
    let leaf1 = std::fs::read(sb.path().join("localhost+2.pem")).unwrap();

    let second = sb
        .rtcdev()
        .args(["cert", "localhost", "127.0.0.1", "::1"])
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(!stdout(&second).contains("Created a new local CA"));
    assert_eq!(std::fs::read(ca_dir.join("rootCA.pem")).unwrap(), ca_cert);
    assert_eq!(
        std::fs::read(ca_dir.join("rootCA-key.pem")).unwrap(),
        ca_key
    );
    let leaf2 = std::fs::read(sb.path().join("localhost+2.pem")).unwrap();
    assert_ne!(leaf1, leaf2, "a new leaf each run");

    let verify = sb
        .tool("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca_dir.join("rootCA.pem"))
        .arg("localhost+2.pem")
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));
}

#[test]
fn default_names_cover_localhost_and_the_host() {
    let sb = Sandbox::new();
    let out = sb.rtcdev().args(["cert", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The CA's fingerprint, as openssl has it.
    let fp = openssl_fingerprint(&sb, &sb.path().join(".local/share/rtcdev/rootCA.pem"));
    assert_eq!(report["ca"]["fingerprint_sha256"], fp.as_str(), "{report}");

    // A new CA is name-constrained: openssl verifies its leaves for local names, and it
    // refuses to issue for public ones, saying why.
    let out2 = sb
        .rtcdev()
        .args([
            "cert",
            "--cert-file",
            "pub.pem",
            "--key-file",
            "pub-key.pem",
            "example.com",
        ])
        .output()
        .unwrap();
    assert!(!out2.status.success());
    let err = stderr(&out2);
    assert!(
        err.contains("name-constrained")
            && err.contains("example.com")
            && err.contains("--unconstrained-ca"),
        "{err}"
    );
    assert!(!sb.path().join("pub.pem").exists());
    let ca_pem = sb.path().join(".local/share/rtcdev/rootCA.pem");
    let text = sb
        .tool("openssl")
        .args(["x509", "-noout", "-ext", "nameConstraints", "-in"])
        .arg(&ca_pem)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("critical")
            && text.contains("DNS:localhost")
            && text.contains("IP:192.168.0.0/255.255.0.0"),
        "{text}"
    );
    sb.rtcdev()
        .args([
            "cert",
            "--cert-file",
            "lan.pem",
            "--key-file",
            "lan-key.pem",
            "app.test",
            "192.168.7.9",
            "localhost",
        ])
        .assert()
        .success();
    for (host, ip) in [
        ("app.test", None),
        ("localhost", None),
        ("", Some("192.168.7.9")),
    ] {
        let mut cmd = sb.tool("openssl");
        cmd.args(["verify", "-CAfile"]).arg(&ca_pem);
        if let Some(ip) = ip {
            cmd.args(["-verify_ip", ip]);
        } else {
            cmd.args(["-verify_hostname", host]);
        }
        let v = cmd.arg("lan.pem").output().unwrap();
        assert!(v.status.success(), "{host}{ip:?}: {}", stdout(&v));
    }
    // --unconstrained-ca cannot loosen an existing constrained CA.
    let again = sb
        .rtcdev()
        .args(["cert", "--unconstrained-ca", "example.com"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("applies only"),
        "{}",
        stderr(&again)
    );
    // In a new directory it creates a CA that may vouch for public names.
    let open = sb.path().join("open-ca");
    sb.rtcdev()
        .arg("--ca-dir")
        .arg(&open)
        .args([
            "cert",
            "--unconstrained-ca",
            "--cert-file",
            "pub.pem",
            "--key-file",
            "pub-key.pem",
            "example.com",
        ])
        .assert()
        .success();
    let names: Vec<&str> = report["certificate"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(&names[..3], &["localhost", "127.0.0.1", "::1"]);
    let host = rtcdev::cert::ca::hostname().to_ascii_lowercase();
    assert!(
        names.contains(&host.as_str()) && names.contains(&format!("{host}.local").as_str()),
        "{names:?}"
    );
    assert_eq!(report["ca"]["created"], true);
    assert_eq!(report["ca"]["constrained"], true);
    let cert_file = report["certificate"]["cert_file"].as_str().unwrap();
    assert_eq!(cert_file, format!("./localhost+{}.pem", names.len() - 1));
}

/// The default names carry this machine's LAN addresses: in a network namespace whose
/// addresses are known (a private 192.168.77.10 and a public 203.0.113.7), the private
/// one is in the certificate and the public one, which a name-constrained CA may not
/// vouch for, is left out with a note.
#[test]
fn default_names_carry_the_lan_addresses_a_constrained_ca_may_name() {
    assert!(
        common::is_root(),
        "this test makes a network namespace and needs root (./test.sh runs as root in CI)"
    );
    common::require("unshare", "util-linux");
    let sb = Sandbox::new();
    let bin = assert_cmd::cargo::cargo_bin("rtcdev");
    let script = format!(
        "ip link set lo up && ip link add d0 type veth peer name d1 && \
         ip addr add 192.168.77.10/24 dev d0 && ip addr add 203.0.113.7/24 dev d1 && \
         ip link set d0 up && ip link set d1 up && exec {} cert --json",
        bin.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .current_dir(sb.path())
        .env("HOME", sb.path())
        .env_remove("RTCDEV_CAROOT")
        .env_remove("CAROOT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["certificate"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"192.168.77.10"), "{names:?}");
    assert!(!names.contains(&"203.0.113.7"), "{names:?}");
    assert!(
        stderr(&out).contains("203.0.113.7 left out"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn caroot_prints_the_directory() {
    let sb = Sandbox::new();
    sb.rtcdev()
        .args(["cert", "--caroot"])
        .assert()
        .success()
        .stdout(format!(
            "{}\n",
            sb.path().join(".local/share/rtcdev").display()
        ));
    sb.rtcdev()
        .args(["cert", "--caroot"])
        .env("RTCDEV_CAROOT", "/some/where")
        .assert()
        .success()
        .stdout("/some/where\n");
    sb.rtcdev()
        .args(["cert", "--caroot"])
        .env("CAROOT", "/mk/root")
        .assert()
        .success()
        .stdout("/mk/root\n");
    // Set but empty (as shells and .env files leave it): as if unset.
    sb.rtcdev()
        .args(["cert", "--caroot"])
        .env("RTCDEV_CAROOT", "")
        .assert()
        .success()
        .stdout(format!(
            "{}\n",
            sb.path().join(".local/share/rtcdev").display()
        ));
    // With several: --ca-dir over RTCDEV_CAROOT over CAROOT.
    sb.rtcdev()
        .args(["--ca-dir", "/flag/dir", "cert", "--caroot"])
        .env("RTCDEV_CAROOT", "/some/where")
        .env("CAROOT", "/mk/root")
        .assert()
        .success()
        .stdout("/flag/dir\n");
    sb.rtcdev()
        .args(["cert", "--caroot"])
        .env("RTCDEV_CAROOT", "/some/where")
        .env("CAROOT", "/mk/root")
        .assert()
        .success()
        .stdout("/some/where\n");
}

#[test]
fn bad_input_is_a_clear_error() {
    let sb = Sandbox::new();
    sb.rtcdev()
        .args(["cert", "bad..name"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "invalid certificate name \"bad..name\"",
        ));
    sb.rtcdev()
        .args(["cert", "999.1.1.1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not a valid IP address"));
    sb.rtcdev()
        .args(["cert", "--cert-file", "no/such/dir/c.pem", "localhost"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "the directory no/such/dir does not exist",
        ));
    sb.rtcdev()
        .args(["cert", "--days", "0", "localhost"])
        .assert()
        .code(2);
    sb.rtcdev()
        .args(["cert", "--install"])
        .env("RTCDEV_TRUST_STORES", "toaster")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unknown trust store"));
    sb.rtcdev().args(["cert", "--bogus"]).assert().code(2);
    // Nothing above may have created a CA or files.
    assert!(!sb.path().join(".local/share/rtcdev").exists());
}

#[test]
fn refuses_to_write_over_the_ca() {
    let sb = Sandbox::new();
    sb.rtcdev()
        .args(["--ca-dir", "ca", "cert", "x.test"])
        .assert()
        .success();
    let key = std::fs::read(sb.path().join("ca/rootCA-key.pem")).unwrap();
    // `cert` with the key written under `key_file`, refused.
    let refused = |key_file: &str| {
        sb.rtcdev()
            .args(["--ca-dir", "ca", "cert", "--key-file", key_file, "x.test"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("over the CA's own files"));
    };
    refused("ca/rootCA-key.pem");
    // Nor under the same name in another case: on macOS and Windows file systems,
    // which ignore case, `rootca-key.pem` is the CA's key. Names are lowercased, so
    // `cert rootCA` run in the folder of a CA that may vouch for any name would write
    // `./rootca.pem` and `./rootca-key.pem`.
    sb.rtcdev()
        .args(["--ca-dir", "open", "cert", "--unconstrained-ca", "x.test"])
        .assert()
        .success();
    let open_key = std::fs::read(sb.path().join("open/rootCA-key.pem")).unwrap();
    sb.rtcdev()
        .current_dir(sb.path().join("open"))
        .args(["--ca-dir", ".", "cert", "rootCA"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("over the CA's own files"));
    assert!(!sb.path().join("open/rootca.pem").exists());
    assert_eq!(
        std::fs::read(sb.path().join("open/rootCA-key.pem")).unwrap(),
        open_key
    );
    refused("ca/../ca/ROOTCA-KEY.PEM");
    // Nor through another name of the same file (a link here; on Windows a short name or
    // a trailing dot).
    std::fs::hard_link(
        sb.path().join("ca/rootCA-key.pem"),
        sb.path().join("ca/other-name.pem"),
    )
    .unwrap();
    refused("ca/other-name.pem");
    assert!(!sb.path().join("ca/rootca.pem").exists());
    assert_eq!(
        std::fs::read(sb.path().join("ca/rootCA-key.pem")).unwrap(),
        key
    );
}

/// Several runs that find no CA at once (a script starting `serve` and `cert` together)
/// make one CA between them, and none of them fails: none reads half a CA file, or
/// takes the moment between the key and the certificate for a CA with its certificate
/// lost.
#[test]
fn runs_creating_the_ca_at_once_share_one() {
    let sb = Sandbox::new();
    for round in 0..5 {
        let dir = format!("ca{round}");
        let outs: Vec<std::process::Output> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..6)
                .map(|i| {
                    let (sb, dir) = (&sb, &dir);
                    scope.spawn(move || {
                        let (cert, key) =
                            (format!("c{round}-{i}.pem"), format!("k{round}-{i}.pem"));
                        sb.rtcdev()
                            .args(["--ca-dir", dir, "cert", "--cert-file", &cert])
                            .args(["--key-file", &key, "x.test"])
                            .output()
                            .unwrap()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for out in &outs {
            assert!(out.status.success(), "round {round}: {}", stderr(out));
        }
        let created = outs
            .iter()
            .filter(|o| stdout(o).contains("Created a new local CA"))
            .count();
        assert_eq!(created, 1, "round {round}: one run made the CA");
        let mut files: Vec<String> = std::fs::read_dir(sb.path().join(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["rootCA-key.pem", "rootCA.pem"], "round {round}");
    }
}

#[test]
fn corrupt_ca_file_via_cli_names_the_file() {
    let sb = Sandbox::new();
    sb.rtcdev()
        .args(["--ca-dir", "ca", "cert", "x.test"])
        .assert()
        .success();
    std::fs::write(sb.path().join("ca/rootCA.pem"), "not a certificate").unwrap();
    sb.rtcdev()
        .args(["--ca-dir", "ca", "cert", "x.test"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "ca/rootCA.pem holds no PEM certificate",
        ));
    assert_eq!(
        std::fs::read_to_string(sb.path().join("ca/rootCA.pem")).unwrap(),
        "not a certificate"
    );
}

#[cfg(unix)]
#[test]
fn warns_about_an_open_ca_key() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.rtcdev()
        .args(["--ca-dir", "ca", "cert", "x.test"])
        .assert()
        .success();
    let key = sb.path().join("ca/rootCA-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    sb.rtcdev()
        .args(["--ca-dir", "ca", "cert", "x.test"])
        .assert()
        .success()
        .stderr(predicate::str::contains("chmod 600"));
    // A warning only: the mode is the user's to change.
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn pkcs12_bundle_opens_with_openssl() {
    require("openssl", "openssl");
    let sb = Sandbox::new();
    let out = sb
        .rtcdev()
        .args(["cert", "--pkcs12", "--client", "p12.test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("./p12.test-client.p12"));
    let dump = sb
        .tool("openssl")
        .args([
            "pkcs12",
            "-in",
            "p12.test-client.p12",
            "-passin",
            "pass:changeit",
            "-nodes",
            "-info",
        ])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", stderr(&dump));
    let pem = stdout(&dump);
    assert_eq!(
        pem.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and CA: {pem}"
    );
    assert!(pem.contains("BEGIN PRIVATE KEY"));
    let info = stderr(&dump);
    assert!(
        info.contains("pbeWithSHA1And3-KeyTripleDES-CBC") && info.contains("MAC: sha1"),
        "legacy algorithms: {info}"
    );
}

/// A CA made before public suffixes were kept out of its constraints (on a host named
/// `dev`) can vouch for every site under `.dev`: `cert` says so.
#[test]
fn a_ca_constrained_to_a_public_suffix_is_pointed_out() {
    require("openssl", "openssl");
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("old")).unwrap();
    let ok = sb
        .tool("openssl")
        .args([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "old/rootCA-key.pem", "-out", "old/rootCA.pem", "-days", "30",
            "-subj", "/O=rtcdev development CA/CN=rtcdev dev",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "nameConstraints=critical,permitted;DNS:localhost,permitted;DNS:home.arpa,permitted;DNS:dev,permitted;IP:127.0.0.0/255.0.0.0",
        ])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let out = sb
        .rtcdev()
        .args(["--ca-dir", "old", "cert", "app.localhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains("dev is a public suffix: the CA can vouch for every site under it"),
        "{text}"
    );
    for local in ["localhost", "home.arpa"] {
        assert!(
            !text.contains(&format!("{local} is a public suffix")),
            "{text}"
        );
    }
}

#[test]
fn mkcert_and_rtcdev_share_one_ca_both_ways() {
    require("mkcert", "mkcert");
    let sb = Sandbox::new();
    // mkcert's RSA CA in its default CAROOT: rtcdev adopts it and says so.
    let out = sb.tool("mkcert").args(["mk.test"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mk_root = sb.path().join(".local/share/mkcert");
    assert!(mk_root.join("rootCA-key.pem").exists());
    let out = sb.rtcdev().args(["cert", "rsa.test"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Using mkcert's local CA"),
        "{}",
        stdout(&out)
    );
    let verify = sb
        .tool("openssl")
        .args(["verify", "-CAfile"])
        .arg(mk_root.join("rootCA.pem"))
        .arg("rsa.test.pem")
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));

    // rtcdev's ECDSA CA used by mkcert through CAROOT.
    sb.rtcdev()
        .args(["--ca-dir", "own", "cert", "own.test"])
        .assert()
        .success();
    let out = sb
        .tool("mkcert")
        .env("CAROOT", sb.path().join("own"))
        .args([
            "-cert-file",
            "m.pem",
            "-key-file",
            "m-key.pem",
            "from-mkcert.test",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let verify = sb
        .tool("openssl")
        .args(["verify", "-CAfile", "own/rootCA.pem", "m.pem"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));
    // mkcert's CAROOT variable is honoured by rtcdev too.
    sb.rtcdev()
        .env("CAROOT", sb.path().join("own"))
        .args(["cert", "--caroot"])
        .assert()
        .stdout(format!("{}\n", sb.path().join("own").display()));
}

fn nss_has(sb: &Sandbox, db: &str, nick: &str) -> bool {
    sb.tool("certutil")
        .args(["-L", "-d", db, "-n", nick])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn nss_install_and_uninstall_in_a_temp_home() {
    require("certutil", "libnss3-tools");
    let sb = Sandbox::new();
    // A Firefox profile with its own database, next to Chromium's ~/.pki/nssdb.
    let profile = sb.path().join(".mozilla/firefox/abc.default-release");
    std::fs::create_dir_all(&profile).unwrap();
    let spec = format!("sql:{}", profile.display());
    assert!(
        sb.tool("certutil")
            .args(["-N", "-d", &spec, "--empty-password"])
            .status()
            .unwrap()
            .success()
    );

    let run = |args: &[&str]| {
        let out = sb
            .rtcdev()
            .env("RTCDEV_TRUST_STORES", "nss")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let first = run(&["cert", "--install", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&first).unwrap();
    let nick = report["ca"]["name"].as_str().unwrap().to_string();
    let trust = report["trust"].as_array().unwrap();
    assert_eq!(trust.len(), 2, "{first}");
    assert!(trust.iter().all(|t| t["status"] == "installed"), "{first}");
    assert!(
        report.get("certificate").is_none(),
        "--install alone issues nothing"
    );
    let pki = format!("sql:{}", sb.path().join(".pki/nssdb").display());
    assert!(nss_has(&sb, &pki, &nick));
    assert!(nss_has(&sb, &spec, &nick));

    let second = run(&["cert", "--install"]);
    assert_eq!(second.matches("already installed").count(), 2, "{second}");

    let third = run(&["cert", "--uninstall"]);
    assert_eq!(third.matches("now uninstalled").count(), 2, "{third}");
    assert!(!nss_has(&sb, &pki, &nick));
    assert!(!nss_has(&sb, &spec, &nick));
    let fourth = run(&["cert", "--uninstall"]);
    assert_eq!(fourth.matches("was not installed").count(), 2, "{fourth}");
    // The CA files survive an uninstall.
    assert!(
        sb.path()
            .join(".local/share/rtcdev/rootCA-key.pem")
            .exists()
    );
}

/// Under sudo with the user's home kept (`sudo -E`), the browsers' databases are left
/// alone: root would own them and the browsers could no longer open them.
#[cfg(unix)]
#[test]
fn root_leaves_another_users_browser_databases_alone() {
    require("certutil", "libnss3-tools");
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("skipped: needs root (a home owned by someone else)");
        return;
    }
    let sb = Sandbox::new();
    let home = sb.path().join("user");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let out = sb
        .rtcdev()
        .env("HOME", &home)
        .env("RTCDEV_TRUST_STORES", "nss")
        .args(["--ca-dir", "ca", "cert", "--install"])
        .output()
        .unwrap();
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains("without sudo") && text.contains("another user's home"),
        "{text}"
    );
    assert!(
        !home.join(".pki").exists(),
        "nothing written in the user's home"
    );
}

/// The system store, changed for real and undone: only as root and when asked
/// (RTCDEV_TEST_SYSTEM_TRUST=1, which ./test.sh sets when it runs as root).
#[test]
fn system_store_install_undoes_itself() {
    let Some(_one_at_a_time) = system_store() else {
        return;
    };
    let sb = Sandbox::new();
    struct Undo<'a>(&'a Sandbox);
    impl Drop for Undo<'_> {
        fn drop(&mut self) {
            let _ = self
                .0
                .rtcdev()
                .env("RTCDEV_TRUST_STORES", "system")
                .args(["cert", "--uninstall"])
                .output();
        }
    }
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let out = sb
        .rtcdev()
        .env("RTCDEV_TRUST_STORES", "system")
        .args(["cert", "--install"])
        .output()
        .unwrap();
    let _undo = Undo(&sb);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("now installed"), "{}", stdout(&out));
    let ca_pem = std::fs::read_to_string(sb.path().join(".local/share/rtcdev/rootCA.pem")).unwrap();
    let body: String = ca_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let has = || {
        std::fs::read_to_string(bundle)
            .unwrap()
            .lines()
            .collect::<String>()
            .contains(&body)
    };
    assert!(has(), "the CA is in {bundle}");
    // The anchor file is named from the CA's fingerprint.
    let fp = openssl_fingerprint(&sb, &sb.path().join(".local/share/rtcdev/rootCA.pem"))
        .replace(':', "")
        .to_ascii_lowercase();
    let anchor = format!(
        "/usr/local/share/ca-certificates/rtcdev_CA_{}.crt",
        &fp[..16]
    );
    assert!(std::path::Path::new(&anchor).exists(), "{anchor}");
    let again = sb
        .rtcdev()
        .env("RTCDEV_TRUST_STORES", "system")
        .args(["cert", "--install"])
        .output()
        .unwrap();
    assert!(stdout(&again).contains("already installed"));
    let out = sb
        .rtcdev()
        .env("RTCDEV_TRUST_STORES", "system")
        .args(["cert", "--uninstall"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("now uninstalled"), "{}", stdout(&out));
    assert!(!has(), "the CA left {bundle}");
}

/// The system store's refresh tool does not take two runs at once.
static SYSTEM_STORE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The system store to test against, one test at a time; `None` (the test skips, and
/// says so) unless RTCDEV_TEST_SYSTEM_TRUST=1, which ./test.sh sets as root.
fn system_store() -> Option<std::sync::MutexGuard<'static, ()>> {
    if std::env::var("RTCDEV_TEST_SYSTEM_TRUST").as_deref() != Ok("1") {
        eprintln!("SKIPPED: set RTCDEV_TEST_SYSTEM_TRUST=1 (as root) to change the system store");
        return None;
    }
    Some(SYSTEM_STORE.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A CA whose subject says `O=../../../tmp/...` cannot steer the system store's write
/// (as root) out of the anchors directory: the file is named from the fingerprint.
#[test]
fn a_crafted_ca_subject_cannot_choose_the_anchor_path() {
    let Some(_one_at_a_time) = system_store() else {
        return;
    };
    let sb = Sandbox::new();
    let dir = sb.path().join("crafted");
    std::fs::create_dir_all(&dir).unwrap();
    let escape = format!("rtcdev-escape-{}", std::process::id());
    let ok = sb
        .tool("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            "30",
            "-subj",
            &format!("/O=../../../../tmp/{escape}/CN=crafted"),
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ])
        .arg("-keyout")
        .arg(dir.join("rootCA-key.pem"))
        .arg("-out")
        .arg(dir.join("rootCA.pem"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = sb
        .rtcdev()
        .env("RTCDEV_TRUST_STORES", "system")
        .arg("--ca-dir")
        .arg(&dir)
        .args(["cert", "--install"])
        .output()
        .unwrap();
    let undo = sb
        .rtcdev()
        .env("RTCDEV_TRUST_STORES", "system")
        .arg("--ca-dir")
        .arg(&dir)
        .args(["cert", "--uninstall"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(undo.status.success(), "{}{}", stdout(&undo), stderr(&undo));
    let leaked: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(&escape))
        .collect();
    assert!(
        leaked.is_empty(),
        "written outside the anchors directory: {leaked:?}"
    );
}

/// `openssl x509 -fingerprint -sha256` of a certificate file: `AB:CD:…`.
fn openssl_fingerprint(sb: &Sandbox, pem: &std::path::Path) -> String {
    let out = sb
        .tool("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().rsplit('=').next().unwrap().to_string()
}

/// What the README promises of a certificate, read back with openssl: the key is 0600,
/// leaves are ECDSA P-256 for 825 days from an hour ago, the CA has pathlen 0, and
/// `--p12-file` writes where it is told.
#[test]
fn leaves_and_the_ca_are_what_the_readme_says() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.rtcdev()
        .args([
            "cert",
            "--cert-file",
            "leaf.pem",
            "--key-file",
            "leaf-key.pem",
            "app.test",
        ])
        .assert()
        .success();
    let mode = std::fs::metadata(sb.path().join("leaf-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = |args: &[&str], file: &str| {
        let out = sb
            .tool("openssl")
            .args(args)
            .arg(sb.path().join(file))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let leaf = text(&["x509", "-noout", "-text", "-in"], "leaf.pem");
    assert!(
        leaf.contains("prime256v1") || leaf.contains("P-256"),
        "{leaf}"
    );
    let dates = text(
        &["x509", "-noout", "-startdate", "-enddate", "-in"],
        "leaf.pem",
    );
    let field = |name: &str| {
        let v = dates
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string();
        time::PrimitiveDateTime::parse(
            &v.replace(" GMT", ""),
            &time::macros::format_description!(
                "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
            ),
        )
        .unwrap()
        .assume_utc()
    };
    let (start, end) = (field("notBefore="), field("notAfter="));
    let now = time::OffsetDateTime::now_utc();
    let back = now - start;
    assert!(
        back >= time::Duration::minutes(59) && back <= time::Duration::minutes(62),
        "{back}"
    );
    let days = (end - now).whole_days();
    assert!((824..=825).contains(&days), "{days} days");
    let ca = text(
        &["x509", "-noout", "-text", "-in"],
        ".local/share/rtcdev/rootCA.pem",
    );
    assert!(ca.contains("CA:TRUE, pathlen:0"), "{ca}");

    sb.rtcdev()
        .args(["cert", "--p12-file", "out/bundle.p12", "app.test"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("does not exist"));
    std::fs::create_dir(sb.path().join("out")).unwrap();
    sb.rtcdev()
        .args(["cert", "--p12-file", "out/bundle.p12", "app.test"])
        .assert()
        .success();
    let mode = std::fs::metadata(sb.path().join("out/bundle.p12"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the bundle holds the key");
}

/// The `cacerts` of `JAVA_HOME`, with the real `keytool`, on a copy of the JDK's
/// keystore: install, check, uninstall, twice each; the other entries are untouched; an
/// entry of another certificate under the CA's name is left alone; without `JAVA_HOME`
/// no Java store is touched.
#[test]
fn java_keystore_install_and_uninstall_with_keytool() {
    common::require("keytool", "openjdk-17-jre-headless");
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v keytool"])
        .output()
        .unwrap();
    let real = std::fs::canonicalize(stdout(&found).trim()).unwrap();
    let jdk = real.parent().unwrap().parent().unwrap();
    let sb = Sandbox::new();
    let home = sb.path().join("jdk");
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::fs::create_dir_all(home.join("lib/security")).unwrap();
    std::os::unix::fs::symlink(&real, home.join("bin/keytool")).unwrap();
    let cacerts = home.join("lib/security/cacerts");
    std::fs::copy(jdk.join("lib/security/cacerts"), &cacerts).expect("the JDK's cacerts");
    let entries = || {
        let out = sb
            .tool("keytool")
            .args([
                "-list",
                "-keystore",
                cacerts.to_str().unwrap(),
                "-storepass",
                "changeit",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .filter(|l| l.contains("trustedCertEntry"))
            .count()
    };
    let before = entries();
    assert!(before > 0, "the JDK's keystore has its CAs");
    let run = |args: &[&str]| {
        let out = sb
            .rtcdev()
            .env("RTCDEV_TRUST_STORES", "java")
            .env("JAVA_HOME", &home)
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), stdout(&out), stderr(&out))
    };
    let (ok, first, err) = run(&["cert", "--install"]);
    assert!(ok, "{first}{err}");
    assert!(
        first.contains("Java") && first.contains("now installed"),
        "{first}"
    );
    assert_eq!(entries(), before + 1);
    let (ok, second, _) = run(&["cert", "--install"]);
    assert!(ok && second.contains("already installed"), "{second}");
    assert_eq!(entries(), before + 1);
    let (ok, third, _) = run(&["cert", "--uninstall"]);
    assert!(ok && third.contains("now uninstalled"), "{third}");
    let (ok, fourth, _) = run(&["cert", "--uninstall"]);
    assert!(ok && fourth.contains("was not installed"), "{fourth}");
    assert_eq!(entries(), before, "the JDK's own entries untouched");

    // Another certificate under the CA's name: neither replaced nor deleted.
    let (_, json, _) = run(&["cert", "--install", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let nick = report["ca"]["name"].as_str().unwrap().to_string();
    run(&["cert", "--uninstall"]);
    let other = Sandbox::new();
    other.localhost_cert_files();
    let other_pem = other.ca_dir().join("rootCA.pem");
    assert!(
        sb.tool("keytool")
            .args(["-importcert", "-noprompt", "-alias", &nick, "-file"])
            .arg(&other_pem)
            .args([
                "-keystore",
                cacerts.to_str().unwrap(),
                "-storepass",
                "changeit"
            ])
            .status()
            .unwrap()
            .success()
    );
    let (ok, clash, err) = run(&["cert", "--install"]);
    assert!(
        !ok && clash.contains("holds another certificate"),
        "{clash}{err}"
    );
    let (_, gone, _) = run(&["cert", "--uninstall"]);
    assert!(gone.contains("was not installed"), "{gone}");
    assert_eq!(entries(), before + 1, "the other certificate stays");

    // JAVA_HOME unset: no Java store at all.
    let out = sb
        .rtcdev()
        .env("RTCDEV_TRUST_STORES", "java")
        .args(["cert", "--install"])
        .output()
        .unwrap();
    assert!(!stdout(&out).contains("Java"), "{}", stdout(&out));
}
