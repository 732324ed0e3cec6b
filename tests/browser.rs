//! The calling page in a real headless Chromium (fake camera and microphone) against the
//! built `rtcdev serve`, all inside network namespaces these tests create, so ICE never
//! touches the machine's real addresses: loopback plus a veth pair (netns.sh) for the
//! page's checks, and a small NAT lab (natlab.sh) for network switches. The browsers are
//! driven by tests/js/call_test.mjs and nat_test.mjs (playwright-core with Debian's
//! chromium) and firefox_test.mjs (puppeteer-core with Debian's firefox-esr).

mod common;

use std::process::Command;

/// Runs `node SCRIPT` under `unshare --net sh NETNS_SCRIPT` (a namespace this test
/// makes) with a fresh HOME, and returns the JSON lines it printed; panics with its
/// output when it failed. `None` when browser tests are skipped.
fn run_in_namespace(
    netns_script: &str,
    script: &str,
    tools: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Option<Vec<serde_json::Value>> {
    if std::env::var("RTCDEV_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipped: RTCDEV_SKIP_BROWSER=1");
        return None;
    }
    assert!(
        common::is_root(),
        "the browser tests make network namespaces and need root; set RTCDEV_SKIP_BROWSER=1 to skip them"
    );
    common::require("chromium", "chromium");
    common::require("unshare", "util-linux");
    common::require("ip", "iproute2");
    for (program, package) in tools {
        common::require(program, package);
    }
    let js = common::js_dir();
    assert!(
        js.join("node_modules/playwright-core").exists(),
        "run ./test.sh: it installs playwright-core"
    );
    let sb = common::Sandbox::new();
    let out = Command::new("unshare")
        .args(["--net", "sh"])
        .arg(js.join(netns_script))
        .arg("node")
        .arg(js.join(script))
        .current_dir(&js)
        .env("HOME", sb.path())
        .env("RTCDEV_BIN", assert_cmd::cargo::cargo_bin("rtcdev"))
        .env_remove("RTCDEV_CAROOT")
        .env_remove("CAROOT")
        .envs(env.iter().copied())
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
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    Some(results)
}

/// The check `name` ran and passed.
fn passed<'a>(results: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    let r = results
        .iter()
        .find(|r| r["check"] == name)
        .unwrap_or_else(|| panic!("{name} did not run: {results:?}"));
    assert_eq!(r["ok"], true, "{r}");
    r
}

/// The check `name` passed and its `field` (what serve printed) contains `text`.
fn said(results: &[serde_json::Value], name: &str, field: &str, text: &str) {
    let r = passed(results, name);
    assert!(
        r[field].as_str().is_some_and(|v| v.contains(text)),
        "{name}: {field} without {text:?}: {r}"
    );
}

#[test]
fn calling_page_in_chromium() {
    let Some(results) = run_in_namespace("netns.sh", "call_test.mjs", &[], &[]) else {
        return;
    };
    for name in [
        "join-notices",
        "two-pages-media",
        "inspector-shows-the-call",
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
        "reload-and-duplicate-tab",
        "reload-while-away-drops-the-old-peer",
        "dead-page-dropped-when-its-media-stops",
        "camera-in-use-says-so",
        "hub-restart-survived",
        "fifth-page-sees-room-full",
        "join-page-per-device",
        "accessibility-axe",
        "no-request-leaves-the-origin",
        "constrained-ca-trusted",
        "vite-hmr-through-proxy",
        "hub-errors-in-words",
        "dtls-failure-named",
        "proxied-app-inspected",
    ] {
        passed(&results, name);
    }
    let media = passed(&results, "two-pages-media");
    for who in ["ann", "bob"] {
        assert!(media[who]["frames"].as_u64().unwrap() > 0, "{media}");
        assert!(media[who]["audio"].as_u64().unwrap() > 0, "{media}");
        assert!(media[who]["samples"].as_u64().unwrap() > 0, "{media}");
    }
}

/// Two Chromium browsers behind their own NAT routers (nftables masquerade in network
/// namespaces, natlab.sh) with `serve --turn` on the lab's internet: a phone that moves
/// to another network (3 s down, a new address) and one away for 40 s (the hub has
/// dropped it by then) are both back in the call, decoding both ways, on a path through
/// the new address, with no stale tile. The recovery times are printed.
#[test]
fn calls_survive_a_network_switch_and_an_outage() {
    let tools = [("nft", "nftables"), ("nsenter", "util-linux")];
    let Some(results) = run_in_namespace("natlab.sh", "nat_test.mjs", &tools, &[]) else {
        return;
    };
    passed(&results, "nat-call-connects");
    let switch = passed(&results, "network-switch-recovers");
    assert_eq!(switch["sameHubId"], true, "{switch}");
    passed(&results, "outage-40s-recovers");
    let tcp = passed(&results, "udp-blocked-relays-over-tcp");
    assert_eq!(tcp["b"][0]["local"]["relayProtocol"], "tcp", "{tcp}");
    said(
        &results,
        "udp-blocked-relays-over-tcp",
        "verdict",
        "UDP blocked on Bob's network",
    );
    said(
        &results,
        "ice-test-page-from-the-device",
        "printed",
        "allocated over tcp",
    );
    said(
        &results,
        "ice-test-page-wrong-password",
        "printed",
        "FAIL auth",
    );
    passed(&results, "symmetric-nat-through-relay");
    said(
        &results,
        "lost-candidates-named",
        "verdict",
        "Cid gathered candidates",
    );
    said(
        &results,
        "lost-candidates-named",
        "verdict",
        "none reached Ann",
    );
    said(
        &results,
        "relay-only-wrong-password-named",
        "verdict",
        "refused Dee's credentials (401",
    );
    said(
        &results,
        "no-servers-behind-nat-named",
        "verdict",
        "only host candidates on both sides",
    );
    said(&results, "ice-blocked-says-so", "verdict", "TURN server");
}

/// Debian's Firefox ESR (WebDriver BiDi through puppeteer-core, fake camera and
/// microphone) and Chromium in one call: Firefox trusts the page through the CA that
/// `rtcdev cert --install` put in its profile, and video, audio, chat and mute cross
/// both ways.
#[test]
fn firefox_and_chromium_in_one_call() {
    let tools = [
        ("firefox-esr", "firefox-esr"),
        ("certutil", "libnss3-tools"),
    ];
    let env = [("NETNS_DEFAULT_ROUTE", "1")];
    let Some(results) = run_in_namespace("netns.sh", "firefox_test.mjs", &tools, &env) else {
        return;
    };
    passed(&results, "firefox-trusts-the-ca");
    let call = passed(&results, "firefox-and-chromium-call");
    for side in ["inFox", "inChrome"] {
        assert!(call[side]["frames"].as_u64().unwrap() > 10, "{call}");
        assert!(call[side]["samples"].as_u64().unwrap() > 0, "{call}");
    }
    passed(&results, "inspector-shows-firefox-and-chromium");
    passed(&results, "firefox-chat-and-mute");
}

/// "Test alone": one Chromium page asks for rtcdev's echo peer (webrtc-rs, in the serve
/// process) and decodes its own video and audio coming back, over host candidates and,
/// with `&relay`, through rtcdev's TURN on both sides; chat comes back; the echo leaves
/// with the page and at its time limit, and serve says why.
#[test]
fn echo_peer_sends_a_page_its_own_media() {
    let Some(results) = run_in_namespace("netns.sh", "echo_test.mjs", &[], &[]) else {
        return;
    };
    let host = passed(&results, "echo-sends-own-media-back");
    assert_eq!(host["echo"]["local"], "host", "{host}");
    assert!(host["echo"]["frames"].as_u64().unwrap() > 10, "{host}");
    assert!(host["echo"]["samples"].as_u64().unwrap() > 0, "{host}");
    passed(&results, "echo-echoes-chat");
    passed(&results, "one-echo-per-room");
    let relay = passed(&results, "echo-through-turn");
    assert_eq!(relay["echo"]["local"], "relay", "{relay}");
    passed(&results, "echo-leaves-with-the-page");
    passed(&results, "echo-time-limit");
}
