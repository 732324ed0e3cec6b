//! The probe's report: one row per server, the failure classes, and how errors become them.
//!
//! [`Verdict`] and [`Failure`] name what the report's `verdict` and `failure` fields hold;
//! [`Row`] keeps them as the strings they print as, so callers compare them with string
//! literals. Errors from libraries are classified one function per library:
//! [`classify_turn_error`] (the `turn` crate, by message) and [`classify_io_error`]
//! (`std::io`, by kind).

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::ice::url::IceUrl;

/// Whether one server passed: the report's `verdict` field (`ok` or `fail`), upper-cased
/// in the table's VERDICT column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check of the server passed (`ok`).
    Pass,
    /// A check failed (`fail`); the row's `failure` says which class.
    Fail,
}

impl Verdict {
    /// The word the report uses: `ok` or `fail`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass => "ok",
            Verdict::Fail => "fail",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why a server failed: the report's `failure` field, one word a script can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `dns`: the host name does not resolve.
    Dns,
    /// `unreachable`: no answer within the timeout, or the connection broke.
    Unreachable,
    /// `refused`: nothing listens on that port.
    Refused,
    /// `tls`: the TLS handshake failed (certificate name or trust).
    Tls,
    /// `auth`: the server refused the credentials (401, or 400 on Allocate).
    Auth,
    /// `forbidden`: the server's policy or quota refused the client (403, 486).
    Forbidden,
    /// `no-relay-data`: the allocation works but no data crossed the relay.
    NoRelayData,
    /// `usage`: the input cannot work (no credentials, a host that is no TLS name).
    Usage,
    /// `local`: something on this machine failed (a socket, the TLS setup).
    Local,
    /// `error`: anything not classified above; the details carry the message.
    Error,
}

impl Failure {
    /// The word the report uses, e.g. `no-relay-data`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Failure::Dns => "dns",
            Failure::Unreachable => "unreachable",
            Failure::Refused => "refused",
            Failure::Tls => "tls",
            Failure::Auth => "auth",
            Failure::Forbidden => "forbidden",
            Failure::NoRelayData => "no-relay-data",
            Failure::Usage => "usage",
            Failure::Local => "local",
            Failure::Error => "error",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One row of the report: one server, its verdict, what was seen and measured.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The URL.
    pub url: String,
    /// Whether it passed (`ok` or `fail` in the report).
    pub verdict: Verdict,
    /// What was seen.
    pub details: String,
    /// What to do next, when something failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// STUN: the server-reflexive (mapped) address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped: Option<String>,
    /// TURN: the relayed address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed: Option<String>,
    /// Round trip of the STUN binding / TURN allocation, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// TURN: messages echoed across the relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_echoes: Option<usize>,
    /// TURN: median round trip of the relay echoes, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_rtt_ms: Option<f64>,
    /// Failure class (in the report: dns, unreachable, refused, tls, auth, forbidden,
    /// no-relay-data, usage, local or error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl Row {
    /// A passing row for `url`, measurements to be filled in by the caller.
    pub(super) fn ok(url: &IceUrl, details: String) -> Self {
        Row {
            url: url.raw.clone(),
            verdict: Verdict::Pass,
            details,
            hint: None,
            mapped: None,
            relayed: None,
            rtt_ms: None,
            relay_echoes: None,
            relay_rtt_ms: None,
            failure: None,
        }
    }

    /// A failing row for `url`: its class, what was seen and what to do next.
    pub(super) fn fail(url: &IceUrl, failure: Failure, details: String, hint: &str) -> Self {
        Row {
            url: url.raw.clone(),
            verdict: Verdict::Fail,
            details,
            hint: Some(hint.to_string()),
            mapped: None,
            relayed: None,
            rtt_ms: None,
            relay_echoes: None,
            relay_rtt_ms: None,
            failure: Some(failure),
        }
    }

    /// Whether the server of this row passed every check.
    pub(super) fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// The whole report: a row per server and, with two or more STUN servers, the NAT's mapping.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One row per server.
    pub servers: Vec<Row>,
    /// With two or more STUN servers: how the NAT maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
}

impl Report {
    /// Whether every server passed (the command's exit status 0).
    pub fn ok(&self) -> bool {
        self.servers.iter().all(Row::passed)
    }

    /// The table for people: URL, VERDICT and DETAILS columns, a hint line under each
    /// failure, then the NAT line when there is one.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let w = self
            .servers
            .iter()
            .map(|r| r.url.len())
            .max()
            .unwrap_or(3)
            .max(3);
        t.push_str(&format!("{:w$}  {:7}  DETAILS\n", "URL", "VERDICT"));
        for r in &self.servers {
            t.push_str(&format!(
                "{:w$}  {:7}  {}\n",
                r.url,
                r.verdict.as_str().to_uppercase(),
                r.details
            ));
            if let Some(h) = &r.hint {
                t.push_str(&format!("{:w$}  {:7}  → {h}\n", "", ""));
            }
        }
        if let Some(nat) = &self.nat {
            t.push_str(&format!("\nNAT: {nat}\n"));
        }
        t
    }
}

/// Milliseconds rounded to two decimals, as the report gives them.
pub(super) fn round_ms(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// The row for a server that did not answer within `timeout`.
pub(super) fn unreachable(url: &IceUrl, timeout: Duration) -> Row {
    Row::fail(
        url,
        Failure::Unreachable,
        format!("no answer within {} ms", timeout.as_millis()),
        "a firewall may drop UDP to this port; check the address and port, or try turn:...?transport=tcp / turns: on 443",
    )
}

/// What an error of the `turn` crate (or a relay check wrapping one) says went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TurnErrorClass {
    /// 401, or a failed message integrity check: wrong credentials.
    Unauthorized,
    /// 400 on Allocate: how webrtc-rs (and pion) servers answer a wrong password.
    BadRequestOnAllocate,
    /// 403 or 486: the server's policy or allocation quota.
    Forbidden,
    /// The connection was refused.
    Refused,
    /// No answer: timeouts, retransmissions that all went unanswered.
    Timeout,
    /// Anything else.
    Other,
}

/// Classifies a `turn` crate error by its message: the crate carries the server's error
/// code only in the text (`... error 401 ...`), so this looks for codes and words in it.
pub(super) fn classify_turn_error(message: &str) -> TurnErrorClass {
    let lower = message.to_ascii_lowercase();
    if lower.contains("401") || lower.contains("unauthorized") || lower.contains("integrity") {
        TurnErrorClass::Unauthorized
    } else if lower.contains("error 400") && lower.contains("allocate") {
        // webrtc-rs (and pion) TURN servers answer a wrong password with 400 after the
        // integrity check fails, where coturn says 401.
        TurnErrorClass::BadRequestOnAllocate
    } else if lower.contains("403")
        || lower.contains("forbidden")
        || lower.contains("486")
        || lower.contains("quota")
    {
        TurnErrorClass::Forbidden
    } else if lower.contains("refused") {
        TurnErrorClass::Refused
    } else if lower.contains("timeout")
        || lower.contains("timed out")
        || lower.contains("all retransmissions failed")
    {
        TurnErrorClass::Timeout
    } else {
        TurnErrorClass::Other
    }
}

/// The row for a failed STUN binding, TURN allocation or relay check whose error message
/// is `message` (see [`classify_turn_error`]).
pub(super) fn turn_error_row(url: &IceUrl, message: &str, timeout: Duration) -> Row {
    match classify_turn_error(message) {
        TurnErrorClass::Unauthorized => auth_failure(
            url,
            format!("401 Unauthorized: the server refused the credentials ({message})"),
        ),
        TurnErrorClass::BadRequestOnAllocate => auth_failure(
            url,
            format!("400 on Allocate: the server rejected the credentials ({message})"),
        ),
        TurnErrorClass::Forbidden => Row::fail(
            url,
            Failure::Forbidden,
            format!("refused by the server's policy or quota ({message})"),
            "the server refuses this client or has too many allocations; check its denied-peer/quota settings",
        ),
        TurnErrorClass::Refused => Row::fail(
            url,
            Failure::Refused,
            format!("connection refused ({message})"),
            "nothing listens there: check the port and that the server runs",
        ),
        TurnErrorClass::Timeout => unreachable(url, timeout),
        TurnErrorClass::Other => Row::fail(
            url,
            Failure::Error,
            message.to_string(),
            "run with -v for the protocol log",
        ),
    }
}

/// An `auth` failure row, whichever status the server answered.
fn auth_failure(url: &IceUrl, details: String) -> Row {
    Row::fail(
        url,
        Failure::Auth,
        details,
        "check the username and password; TURN REST credentials expire: make fresh ones from the shared secret",
    )
}

/// Classifies a failed TCP connect: `refused` when nothing listens, `unreachable` for
/// anything else (no route, reset, ...).
pub(super) fn classify_io_error(err: &std::io::Error) -> Failure {
    if err.kind() == std::io::ErrorKind::ConnectionRefused {
        Failure::Refused
    } else {
        Failure::Unreachable
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    fn url() -> IceUrl {
        IceUrl::parse("turn:127.0.0.1:3478").unwrap()
    }

    #[test]
    fn failure_and_verdict_words_are_the_reports() {
        let all = [
            (Failure::Dns, "dns"),
            (Failure::Unreachable, "unreachable"),
            (Failure::Refused, "refused"),
            (Failure::Tls, "tls"),
            (Failure::Auth, "auth"),
            (Failure::Forbidden, "forbidden"),
            (Failure::NoRelayData, "no-relay-data"),
            (Failure::Usage, "usage"),
            (Failure::Local, "local"),
            (Failure::Error, "error"),
        ];
        for (failure, word) in all {
            assert_eq!(failure.as_str(), word);
            assert_eq!(failure.to_string(), word);
            assert_eq!(serde_json::to_value(failure).unwrap(), word);
        }
        for (verdict, word) in [(Verdict::Pass, "ok"), (Verdict::Fail, "fail")] {
            assert_eq!(verdict.to_string(), word);
            assert_eq!(serde_json::to_value(verdict).unwrap(), word);
        }
    }

    #[test]
    fn rows_serialize_as_before() {
        let fail = Row::fail(&url(), Failure::NoRelayData, "d".into(), "h");
        assert_eq!(
            serde_json::to_value(&fail).unwrap(),
            serde_json::json!({
                "url": "turn:127.0.0.1:3478",
                "verdict": "fail",
                "details": "d",
                "hint": "h",
                "failure": "no-relay-data"
            })
        );
        let ok = Row::ok(&url(), "fine".into());
        assert!(ok.passed() && !fail.passed());
        let report = Report {
            servers: vec![ok, fail],
            nat: None,
        };
        assert!(!report.ok());
        // The URL column is as wide as the longest URL (19 here), VERDICT 7 wide.
        let expected = [
            format!("URL{}  VERDICT  DETAILS", " ".repeat(19 - 3)),
            "turn:127.0.0.1:3478  OK       fine".to_string(),
            "turn:127.0.0.1:3478  FAIL     d".to_string(),
            format!("{}  {}  → h", " ".repeat(19), " ".repeat(7)),
        ];
        assert_eq!(report.table(), expected.join("\n") + "\n");
    }

    #[test]
    fn turn_errors_by_status_code() {
        use TurnErrorClass as C;
        for (message, class) in [
            ("error 401 Unauthorized", C::Unauthorized),
            ("unauthorized", C::Unauthorized),
            ("message integrity mismatch", C::Unauthorized),
            (
                "Allocate error response (error 400: Bad Request)",
                C::BadRequestOnAllocate,
            ),
            ("error 400: Bad Request", C::Other),
            ("error 403: Forbidden", C::Forbidden),
            ("forbidden", C::Forbidden),
            ("error 486: Allocation Quota Reached", C::Forbidden),
            ("quota", C::Forbidden),
            ("Connection refused (os error 111)", C::Refused),
            ("timeout", C::Timeout),
            ("transaction timed out", C::Timeout),
            ("all retransmissions failed", C::Timeout),
            ("something else", C::Other),
        ] {
            assert_eq!(classify_turn_error(message), class, "{message}");
        }
    }

    #[test]
    fn turn_error_rows_keep_their_words() {
        let t = Duration::from_millis(1500);
        let row = turn_error_row(&url(), "error 401", t);
        assert_eq!(row.failure, Some(Failure::Auth));
        assert_eq!(
            row.details,
            "401 Unauthorized: the server refused the credentials (error 401)"
        );
        let hint = row.hint.unwrap_or_default();
        assert!(
            hint.starts_with("check the username and password"),
            "{hint}"
        );
        let row = turn_error_row(&url(), "allocate: error 400", t);
        assert_eq!(row.failure, Some(Failure::Auth));
        assert!(row.details.starts_with("400 on Allocate"), "{row:?}");
        let row = turn_error_row(&url(), "error 486", t);
        assert_eq!(row.failure, Some(Failure::Forbidden));
        let row = turn_error_row(&url(), "refused", t);
        assert_eq!(row.failure, Some(Failure::Refused));
        let row = turn_error_row(&url(), "timed out", t);
        assert_eq!(row.failure, Some(Failure::Unreachable));
        assert_eq!(row.details, "no answer within 1500 ms");
        let row = turn_error_row(&url(), "odd", t);
        assert_eq!(row.failure, Some(Failure::Error));
        assert_eq!(row.details, "odd");
    }

    #[test]
    fn io_errors_by_kind() {
        let refused = Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(classify_io_error(&refused), Failure::Refused);
        for kind in [
            ErrorKind::ConnectionReset,
            ErrorKind::TimedOut,
            ErrorKind::HostUnreachable,
            ErrorKind::Other,
        ] {
            let err = Error::from(kind);
            assert_eq!(classify_io_error(&err), Failure::Unreachable);
        }
    }

    #[test]
    fn rounds_to_hundredths() {
        assert_eq!(round_ms(1.23456), 1.23);
        assert_eq!(round_ms(2.0 / 3.0), 0.67);
    }
}
