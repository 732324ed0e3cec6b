//! The macOS system keychain, the Windows Root store, and that store from inside WSL,
//! through recording stand-ins for `security`, `certutil.exe` and `wslpath`
//! (tests/standins) placed first on `PATH`. The stand-ins check the exact arguments
//! rtcdev passes and answer as the real tools do (output and exit codes). The real tools
//! are not on a Linux machine; the README says which stores were tested how.

mod common;

use std::path::{Path, PathBuf};

use common::Sandbox;

struct Run {
    ok: bool,
    out: String,
    err: String,
}

fn standins() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standins")
}

fn rtcdev(sb: &Sandbox, stores: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let path = format!(
        "{}:{}",
        standins().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = sb
        .rtcdev()
        .env("PATH", path)
        .env("RTCDEV_TRUST_STORES", stores)
        .env("STANDIN_STATE", sb.path().join("store.txt"))
        .env("STANDIN_LOG", sb.path().join("calls.log"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into(),
        err: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn calls(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path().join("calls.log")).unwrap_or_default()
}

fn store(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path().join("store.txt")).unwrap_or_default()
}

/// Install, check, uninstall, twice each, with the result the keychain ends with.
#[test]
fn macos_keychain_twice_each_way() {
    common::require("openssl", "openssl");
    let sb = Sandbox::new();
    let first = rtcdev(&sb, "keychain", &["cert", "--install"], &[]);
    assert!(first.ok, "{}{}", first.out, first.err);
    assert!(
        first.out.contains("macOS system keychain: now installed"),
        "{}",
        first.out
    );
    assert_eq!(store(&sb).lines().count(), 1, "{}", calls(&sb));
    assert!(
        calls(&sb).contains(
            "add-trusted-cert -d -r trustRoot -p ssl -p basic -k /Library/Keychains/System.keychain"
        ),
        "{}",
        calls(&sb)
    );
    let again = rtcdev(&sb, "keychain", &["cert", "--install"], &[]);
    assert!(
        again.ok && again.out.contains("already installed"),
        "{}",
        again.out
    );
    assert_eq!(store(&sb).lines().count(), 1);
    let gone = rtcdev(&sb, "keychain", &["cert", "--uninstall"], &[]);
    assert!(
        gone.ok && gone.out.contains("now uninstalled"),
        "{}{}",
        gone.out,
        gone.err
    );
    assert_eq!(store(&sb).trim(), "");
    let twice = rtcdev(&sb, "keychain", &["cert", "--uninstall"], &[]);
    assert!(
        twice.ok && twice.out.contains("was not installed"),
        "{}",
        twice.out
    );
}

/// Another CA in the keychain is not taken for ours, nor removed.
#[test]
fn macos_keychain_leaves_another_ca_alone() {
    common::require("openssl", "openssl");
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("store.txt"),
        "ABCDEF0123 /elsewhere/other.pem\n",
    )
    .unwrap();
    let r = rtcdev(&sb, "keychain", &["cert", "--install"], &[]);
    assert!(
        r.ok && r.out.contains("now installed"),
        "{}{}",
        r.out,
        r.err
    );
    assert_eq!(store(&sb).lines().count(), 2);
    let r = rtcdev(&sb, "keychain", &["cert", "--uninstall"], &[]);
    assert!(
        r.ok && r.out.contains("now uninstalled"),
        "{}{}",
        r.out,
        r.err
    );
    assert_eq!(store(&sb).trim(), "ABCDEF0123 /elsewhere/other.pem");
}

/// Without an administrator the keychain refuses, and rtcdev says to use sudo.
#[test]
fn macos_keychain_needs_sudo() {
    common::require("openssl", "openssl");
    let sb = Sandbox::new();
    let r = rtcdev(
        &sb,
        "keychain",
        &["cert", "--install"],
        &[("STANDIN_DENY", "1")],
    );
    assert!(!r.ok, "{}", r.out);
    assert!(
        r.out.contains("FAILED") && r.out.contains("run it with sudo"),
        "{}{}",
        r.out,
        r.err
    );
}

/// The Windows current user's Root store, by the CA's SHA-1 thumbprint, twice each way.
#[test]
fn windows_root_store_twice_each_way() {
    common::require("openssl", "openssl");
    let sb = Sandbox::new();
    let first = rtcdev(&sb, "windows", &["cert", "--install"], &[]);
    assert!(first.ok, "{}{}", first.out, first.err);
    assert!(
        first
            .out
            .contains("Windows current user Root: now installed"),
        "{}",
        first.out
    );
    let line = store(&sb).trim().to_string();
    let (_, thumbprint) = line.split_once(' ').expect("serial and thumbprint");
    assert_eq!(thumbprint.len(), 40, "{line}");
    assert!(
        calls(&sb).contains(&format!(
            "certutil.exe -user -verifystore Root {thumbprint}"
        )),
        "{}",
        calls(&sb)
    );
    let again = rtcdev(&sb, "windows", &["cert", "--install"], &[]);
    assert!(
        again.ok && again.out.contains("already installed"),
        "{}",
        again.out
    );
    let gone = rtcdev(&sb, "windows", &["cert", "--uninstall"], &[]);
    assert!(
        gone.ok && gone.out.contains("now uninstalled"),
        "{}",
        gone.out
    );
    assert!(calls(&sb).contains(&format!("certutil.exe -user -delstore Root {thumbprint}")));
    let twice = rtcdev(&sb, "windows", &["cert", "--uninstall"], &[]);
    assert!(
        twice.ok && twice.out.contains("was not installed"),
        "{}",
        twice.out
    );
}

/// Another root in the store with the CA's serial number (serials are only unique per
/// issuer; imported CAs may have small ones, and certutil finds a certificate by serial
/// too) is neither taken for the CA nor deleted with it.
#[test]
fn windows_root_store_tells_the_ca_from_a_root_with_its_serial() {
    common::require("openssl", "openssl");
    let sb = Sandbox::new();
    // The CA first, installed nowhere; then a foreign root with its serial.
    let made = rtcdev(&sb, "windows", &["cert", "x.test"], &[]);
    assert!(made.ok, "{}{}", made.out, made.err);
    let caroot = rtcdev(&sb, "windows", &["cert", "--caroot"], &[]);
    let ca = Path::new(caroot.out.trim()).join("rootCA.pem");
    let serial = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&ca)
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&serial.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert!(!serial.is_empty());
    let foreign = format!("{serial} {}\n", "ab".repeat(20));
    std::fs::write(sb.path().join("store.txt"), &foreign).unwrap();

    let install = rtcdev(&sb, "windows", &["cert", "--install"], &[]);
    assert!(
        install.ok && install.out.contains("now installed"),
        "the foreign root was taken for the CA: {}{}",
        install.out,
        install.err
    );
    let gone = rtcdev(&sb, "windows", &["cert", "--uninstall"], &[]);
    assert!(
        gone.ok && gone.out.contains("now uninstalled"),
        "{}",
        gone.out
    );
    assert_eq!(store(&sb), foreign, "only the CA was deleted");
}

/// From WSL: certutil.exe gets the CA file as a Windows path from `wslpath -w`.
#[test]
fn wsl_installs_into_windows_with_a_windows_path() {
    common::require("openssl", "openssl");
    let sb = Sandbox::new();
    let prefix = [("STANDIN_WIN_PREFIX", r"\\wsl$\Debian")];
    let r = rtcdev(&sb, "wsl", &["cert", "--install"], &prefix);
    assert!(r.ok, "{}{}\n{}", r.out, r.err, calls(&sb));
    assert!(
        r.out
            .contains("Windows current user Root (from WSL): now installed"),
        "{}",
        r.out
    );
    let log = calls(&sb);
    assert!(log.contains("wslpath -w /"), "{log}");
    assert!(
        log.contains(r"certutil.exe -user -addstore Root \\wsl$\Debian\"),
        "{log}"
    );
    let gone = rtcdev(&sb, "wsl", &["cert", "--uninstall"], &prefix);
    assert!(
        gone.ok && gone.out.contains("now uninstalled"),
        "{}",
        gone.out
    );
}

/// A store whose tool is missing is skipped with the reason; the command still succeeds.
#[test]
fn a_missing_tool_is_skipped_with_the_reason() {
    let sb = Sandbox::new();
    let out = sb
        .rtcdev()
        .env("PATH", "/nonexistent")
        .env("RTCDEV_TRUST_STORES", "keychain,windows")
        .args(["cert", "--install"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("skipped: no `security` tool"), "{text}");
    assert!(text.contains("skipped: no certutil.exe"), "{text}");
}
