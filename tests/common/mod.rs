//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary directory that is also used as HOME, so nothing touches the real one.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.path().join("ca")
    }

    /// The built binary, run in the sandbox with a clean environment: HOME is the
    /// sandbox, no CAROOT, no RTCDEV_* variables.
    pub fn rtcdev(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("rtcdev").expect("binary");
        cmd.current_dir(self.path());
        scrub(&mut cmd, self.path());
        cmd
    }

    /// A plain std command (for tools such as mkcert, certutil, openssl) in the sandbox.
    pub fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.path());
        cmd.env("HOME", self.path()).env_remove("CAROOT");
        cmd
    }
}

fn scrub(cmd: &mut assert_cmd::Command, home: &Path) {
    for (k, _) in std::env::vars() {
        if k.starts_with("RTCDEV_") || k == "CAROOT" || k.starts_with("XDG_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home).env("RUST_LOG", "warn");
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Fails with a clear message when a tool the README's test command installs is missing.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is missing: run the README's test command (./test.sh), which installs {package}"
    );
}
