//! What the `/ice` test page sends back: one verdict per STUN/TURN URL as a device saw
//! it, printed in the terminal running `serve`, labelled with the device.
//!
//! Any device on the network can post here, so the report is bounded (size, count,
//! rate), every word is checked against the probe's vocabulary, and text is stripped of
//! control characters before it reaches a terminal (no escape sequences from a page).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Largest report body accepted, in bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// Most results in one report.
const MAX_RESULTS: usize = 32;
/// Longest text kept from a field, in characters.
pub(super) const MAX_TEXT: usize = 200;
/// Reports printed per [`WINDOW`]; past it they are refused with 429.
const PER_WINDOW: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);

/// The failure classes of `rtcdev probe`, the only words a result may carry.
const FAILURES: &[&str] = &[
    "dns",
    "unreachable",
    "refused",
    "tls",
    "auth",
    "forbidden",
    "no-relay-data",
    "usage",
    "local",
    "error",
];

/// A report as the page sends it.
#[derive(Debug, Deserialize)]
pub struct IceReport {
    #[serde(default)]
    device: String,
    results: Vec<IceResult>,
}

/// One URL's verdict.
#[derive(Debug, Deserialize)]
struct IceResult {
    url: String,
    verdict: String,
    #[serde(default)]
    failure: Option<String>,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    ms: Option<u64>,
}

/// Text a device sent, safe to keep and print: control characters (escape sequences, newlines) become spaces,
/// and it is cut to [`MAX_TEXT`] characters.
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

impl IceReport {
    /// Parses and checks a body: a clear message when it is not a report.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let r: IceReport =
            serde_json::from_slice(body).map_err(|e| format!("not an ICE test report: {e}"))?;
        if r.results.len() > MAX_RESULTS {
            return Err(format!("at most {MAX_RESULTS} results in one report"));
        }
        for x in &r.results {
            if x.verdict != "ok" && x.verdict != "fail" {
                return Err(format!("verdict {:?}: ok or fail", clean(&x.verdict)));
            }
            if let Some(f) = &x.failure
                && !FAILURES.contains(&f.as_str())
            {
                return Err(format!(
                    "failure {:?}: one of {}",
                    clean(f),
                    FAILURES.join(", ")
                ));
            }
        }
        Ok(r)
    }

    /// The lines for the terminal, for a device with this user agent at `from`.
    pub fn lines(&self, user_agent: &str, from: &str) -> String {
        let device = clean(&self.device);
        let mut label = device_label(user_agent);
        if !device.is_empty() {
            label = format!("\"{device}\" ({label})");
        }
        let mut out = format!("\n  ICE test from {label}, {from}:\n");
        if self.results.is_empty() {
            out.push_str("    no STUN or TURN server to test\n");
        }
        let width = self
            .results
            .iter()
            .map(|r| clean(&r.url).chars().count())
            .max()
            .unwrap_or(0);
        for r in &self.results {
            let verdict = match &r.failure {
                Some(f) if r.verdict == "fail" => format!("FAIL {f}"),
                _ => r.verdict.to_uppercase(),
            };
            let ms = r.ms.map(|ms| format!(" ({ms} ms)")).unwrap_or_default();
            out.push_str(&format!(
                "    {verdict:<17} {:<width$}  {}{ms}\n",
                clean(&r.url),
                clean(&r.detail),
            ));
        }
        out
    }

    /// The report as one JSON line (`serve --json`).
    pub fn json(&self, user_agent: &str, from: &str) -> serde_json::Value {
        serde_json::json!({
            "event": "ice-test",
            "device": clean(&self.device),
            "browser": device_label(user_agent),
            "from": from,
            "results": self.results.iter().map(|r| serde_json::json!({
                "url": clean(&r.url),
                "verdict": r.verdict,
                "failure": r.failure,
                "detail": clean(&r.detail),
                "ms": r.ms,
            })).collect::<Vec<_>>(),
        })
    }
}

/// "Chrome 131 on Android 14" from a user agent: the browser and the system, as far as
/// the usual markers tell (iPadOS says Macintosh; the page cannot tell that apart here).
pub fn device_label(ua: &str) -> String {
    let version = |marker: &str| -> Option<String> {
        let rest = &ua[ua.find(marker)? + marker.len()..];
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        Some(v.split('.').next().unwrap_or("").to_string()).filter(|v| !v.is_empty())
    };
    let browser = if let Some(v) = version("Firefox/") {
        format!("Firefox {v}")
    } else if let Some(v) = version("Edg/") {
        format!("Edge {v}")
    } else if let Some(v) = version("CriOS/") {
        format!("Chrome {v}")
    } else if let Some(v) = version("Chrome/") {
        format!("Chrome {v}")
    } else if ua.contains("Safari/")
        && let Some(v) = version("Version/")
    {
        format!("Safari {v}")
    } else {
        "a browser".to_string()
    };
    let system = if let Some(v) = version("Android ") {
        format!("Android {v}")
    } else if ua.contains("iPhone") {
        version("iPhone OS ").map_or("iOS".into(), |v| format!("iOS {v}"))
    } else if ua.contains("iPad") {
        "iPadOS".to_string()
    } else if ua.contains("Windows") {
        "Windows".to_string()
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        "macOS".to_string()
    } else if ua.contains("CrOS") {
        "ChromeOS".to_string()
    } else if ua.contains("Linux") {
        "Linux".to_string()
    } else {
        "an unknown system".to_string()
    };
    clean(&format!("{browser} on {system}"))
}

/// How many reports were printed in the current window.
#[derive(Debug)]
pub struct ReportLimit(Mutex<(Instant, u32)>);

impl Default for ReportLimit {
    fn default() -> Self {
        ReportLimit(Mutex::new((Instant::now(), 0)))
    }
}

impl ReportLimit {
    /// Whether one more report may be printed now.
    pub fn allow(&self) -> bool {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(w.0) >= WINDOW {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= PER_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIXEL: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.39 Mobile Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

    #[test]
    fn devices_are_named_from_the_user_agent() {
        assert_eq!(device_label(PIXEL), "Chrome 131 on Android 14");
        assert_eq!(device_label(IPHONE), "Safari 17 on iOS 17");
        assert_eq!(device_label(FIREFOX), "Firefox 140 on Linux");
        assert_eq!(device_label(""), "a browser on an unknown system");
    }

    #[test]
    fn reports_print_one_line_per_url_without_escape_sequences() {
        let body = br#"{"device":"Ann\u001b[31m's phone\n","results":[
            {"url":"stun:10.0.0.1:3478","verdict":"ok","detail":"mapped address 10.0.0.9:4000","ms":35},
            {"url":"turn:10.0.0.1:3478?transport=udp","verdict":"fail","failure":"auth","detail":"401 Unauthorized\u0007"}]}"#;
        let r = IceReport::parse(body).unwrap();
        let text = r.lines(PIXEL, "10.0.0.9");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.contains(
                "ICE test from \"Ann [31m's phone\" (Chrome 131 on Android 14), 10.0.0.9:"
            ),
            "{text}"
        );
        let ok = text.lines().find(|l| l.contains("stun:")).unwrap();
        assert!(ok.starts_with("    OK "), "{text}");
        assert!(
            ok.ends_with("  mapped address 10.0.0.9:4000 (35 ms)"),
            "{text}"
        );
        let fail = text.lines().find(|l| l.contains("turn:")).unwrap();
        assert!(fail.starts_with("    FAIL auth "), "{text}");
        assert!(fail.ends_with("  401 Unauthorized"), "{text}");
        // The URLs line up in one column.
        assert_eq!(ok.find("stun:"), fail.find("turn:"), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn what_is_not_a_report_is_refused_with_the_reason() {
        assert!(
            IceReport::parse(b"{}")
                .unwrap_err()
                .contains("not an ICE test report")
        );
        let bad = br#"{"results":[{"url":"x","verdict":"maybe"}]}"#;
        assert!(IceReport::parse(bad).unwrap_err().contains("ok or fail"));
        let bad = br#"{"results":[{"url":"x","verdict":"fail","failure":"owned"}]}"#;
        assert!(IceReport::parse(bad).unwrap_err().contains("one of dns"));
        let many = format!(
            r#"{{"results":[{}]}}"#,
            vec![r#"{"url":"x","verdict":"ok"}"#; 33].join(",")
        );
        assert!(
            IceReport::parse(many.as_bytes())
                .unwrap_err()
                .contains("at most 32")
        );
    }

    #[test]
    fn the_rate_is_bounded() {
        let l = ReportLimit::default();
        assert!((0..PER_WINDOW).all(|_| l.allow()));
        assert!(!l.allow());
    }
}
