//! The calling page in a real headless Chromium (fake camera and microphone) against the
//! built `rtcdev serve`, all inside a network namespace this test creates (loopback plus
//! a veth pair), so ICE never touches the machine's real addresses. The browser is driven
//! by tests/js/call_test.mjs (playwright-core with Debian's chromium).

mod common;

use std::process::Command;

#[test]
fn calling_page_in_chromium() {
    if std::env::var("RTCDEV_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipped: RTCDEV_SKIP_BROWSER=1");
        return;
    }
    assert!(
        common::is_root(),
        "the browser test makes a network namespace and needs root; set RTCDEV_SKIP_BROWSER=1 to skip it"
    );
    common::require("chromium", "chromium");
    common::require("unshare", "util-linux");
    common::require("ip", "iproute2");
    let js = common::js_dir();
    assert!(
        js.join("node_modules/playwright-core").exists(),
        "run ./test.sh: it installs playwright-core"
    );
    let sb = common::Sandbox::new();
    let out = Command::new("unshare")
        .args(["--net", "sh"])
        .arg(js.join("netns.sh"))
        .arg("node")
        .arg(js.join("call_test.mjs"))
        .arg("checks")
        .current_dir(&js)
        .env("HOME", sb.path())
        .env("RTCDEV_BIN", assert_cmd::cargo::cargo_bin("rtcdev"))
        .env_remove("RTCDEV_CAROOT")
        .env_remove("CAROOT")
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for r in &results {
        eprintln!("{r}");
    }
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    for name in [
        "join-notices",
        "two-pages-media",
        "stats-overlay",
        "chat-crosses",
        "camera-off-shows-far-side",
        "resume-keeps-the-call",
        "mute-shows-far-side",
        "screen-share-replaces-track",
        "denied-permission-receives",
        "screen-share-without-camera",
        "camera-switch-on-a-phone",
        "phone-width-360",
        "three-pages-full-mesh",
        "leaver-disappears",
        "hub-restart-survived",
        "fifth-page-sees-room-full",
        "accessibility-axe",
        "no-request-leaves-the-origin",
        "constrained-ca-trusted",
        "vite-hmr-through-proxy",
    ] {
        let r = results
            .iter()
            .find(|r| r["check"] == name)
            .unwrap_or_else(|| panic!("{name} did not run:\n{stdout}"));
        assert_eq!(r["ok"], true, "{r}");
    }
    let media = results
        .iter()
        .find(|r| r["check"] == "two-pages-media")
        .unwrap();
    for who in ["ann", "bob"] {
        assert!(media[who]["frames"].as_u64().unwrap() > 0, "{media}");
        assert!(media[who]["audio"].as_u64().unwrap() > 0, "{media}");
        assert!(media[who]["samples"].as_u64().unwrap() > 0, "{media}");
    }
}
