//! Why a call failed (or how it got through), from what both ends reported: each rule is
//! one small function of the [`Facts`], tried in order; the first that speaks decides.
//! A new rule is one function, one line in a list, and its test.

use super::{Counts, Side};

/// Both ends of one connection as the rules read them: `here` reported the news,
/// `there` is the far end (`None` when its page never reported).
pub struct Facts<'a> {
    pub here: &'a Side,
    pub there: Option<&'a Side>,
    pub here_name: &'a str,
    pub there_name: &'a str,
}

type Rule = fn(&Facts) -> Option<String>;

/// For a connection that failed, or has not connected after a while.
const FAILURE: &[Rule] = &[
    offer_never_arrived,
    dtls_failed,
    turn_refused_credentials,
    candidates_never_arrived,
    host_only_without_servers,
    turn_unreachable,
    no_relay_on_either_side,
    no_relay_on_one_side,
];

/// For a connection that works, when how it got through is news.
const SUCCESS: &[Rule] = &[udp_blocked_tcp_relay];

/// The failure verdict; a plain summary when no rule knows better.
pub fn failure(f: &Facts) -> String {
    FAILURE.iter().find_map(|rule| rule(f)).unwrap_or_else(|| {
        format!(
            "no pair of candidates worked ({}: {}; {}: {})",
            f.here_name,
            f.here.local.describe(),
            f.there_name,
            f.here.remote.describe()
        )
    })
}

/// What is worth saying about a connection that works, if anything.
pub fn success(f: &Facts) -> Option<String> {
    SUCCESS.iter().find_map(|rule| rule(f))
}

/// Each end as (side, name), `here` first, then `there` when it reported.
fn ends<'a>(f: &'a Facts) -> Vec<(&'a Side, &'a str)> {
    let mut v = vec![(f.here, f.here_name)];
    if let Some(t) = f.there {
        v.push((t, f.there_name));
    }
    v
}

fn sent_offer(s: &Side) -> bool {
    s.signaling.contains("have-local-offer")
}

fn got_offer(s: &Side) -> bool {
    s.signaling.contains("have-remote-offer")
}

/// One end made an offer and the other never had one to answer.
fn offer_never_arrived(f: &Facts) -> Option<String> {
    let there = f.there?;
    let lost = |from: &Side, to: &Side, a: &str, b: &str| {
        (sent_offer(from) && !got_offer(to) && !sent_offer(to)).then(|| {
            format!("the offer from {a} never reached {b}: the signaling lost it (is {b}'s hub connection up?)")
        })
    };
    lost(f.here, there, f.here_name, f.there_name)
        .or_else(|| lost(there, f.here, f.there_name, f.here_name))
}

/// ICE found a path, and the connection failed all the same: the DTLS handshake on it
/// did not complete.
fn dtls_failed(f: &Facts) -> Option<String> {
    ends(f).into_iter().find_map(|(s, name)| {
        matches!(s.ice_when_failed.as_str(), "connected" | "completed").then(|| {
            format!(
                "ICE connected, but the DTLS handshake failed at {name}: the certificate \
                 fingerprint in the SDP did not match the one presented (the SDP was changed \
                 on its way), or something on the path drops DTLS"
            )
        })
    })
}

/// One end gathered candidates, and none reached the other.
fn candidates_never_arrived(f: &Facts) -> Option<String> {
    for (to, from, to_name, from_name) in [
        (Some(f.here), f.there, f.here_name, f.there_name),
        (f.there, Some(f.here), f.there_name, f.here_name),
    ] {
        let (Some(to), Some(from)) = (to, from) else {
            continue;
        };
        if to.remote.total() == 0 && from.local.total() > 0 {
            return Some(format!(
                "{from_name} gathered candidates ({}) but none reached {to_name}: the signaling lost them",
                from.local.describe()
            ));
        }
    }
    if f.here.remote.total() == 0 {
        return Some(format!(
            "no ICE candidate from {} reached {}: it gathered none, or the signaling lost them",
            f.there_name, f.here_name
        ));
    }
    None
}

fn error_with(s: &Side, code: &str) -> Option<String> {
    s.errors.iter().find(|e| e.starts_with(code)).cloned()
}

/// The TURN server refused a side's credentials.
fn turn_refused_credentials(f: &Facts) -> Option<String> {
    ends(f).into_iter().find_map(|(s, name)| {
        error_with(s, "401").map(|e| {
            format!("the TURN server refused {name}'s credentials ({e}): check the username and password, or the TURN secret")
        })
    })
}

fn reflexive(c: &Counts) -> bool {
    c.has("srflx") || c.has("relay")
}

/// Host candidates only, both ways: nothing but a direct path was ever possible.
fn host_only_without_servers(f: &Facts) -> Option<String> {
    (!reflexive(&f.here.local) && !reflexive(&f.here.remote)).then(|| {
        format!(
            "only host candidates on both sides ({}: {}; {}: {}), and no STUN or TURN server: \
             the devices cannot reach each other directly (different networks, or Wi-Fi that \
             isolates clients); a TURN server relays around this (rtcdev serve --turn)",
            f.here_name,
            f.here.local.describe(),
            f.there_name,
            f.here.remote.describe()
        )
    })
}

/// A side could not reach the TURN server at all.
fn turn_unreachable(f: &Facts) -> Option<String> {
    ends(f).into_iter().find_map(|(s, name)| {
        s.errors
            .iter()
            .find(|e| e.starts_with("701") && e.contains("turn"))
            .map(|e| {
                format!(
                    "{name} could not reach the TURN server ({e}): its network blocks it (UDP and TCP to the TURN port)"
                )
            })
    })
}

fn has_relay(f: &Facts, here: bool) -> bool {
    if here {
        f.here.local.has("relay")
    } else {
        f.there.is_some_and(|t| t.local.has("relay")) || f.here.remote.has("relay")
    }
}

/// Neither side had a relay: only direct paths were tried, and none worked.
fn no_relay_on_either_side(f: &Facts) -> Option<String> {
    (!has_relay(f, true) && !has_relay(f, false)).then(|| {
        format!(
            "no pair of candidates worked and neither side has a relay ({}: {}; {}: {}): \
             a TURN server relays around this (rtcdev serve --turn)",
            f.here_name,
            f.here.local.describe(),
            f.there_name,
            f.here.remote.describe()
        )
    })
}

/// One side had a relay, the other none: the other's network keeps it from the TURN
/// server.
fn no_relay_on_one_side(f: &Facts) -> Option<String> {
    let (here, there) = (has_relay(f, true), has_relay(f, false));
    if here == there {
        return None;
    }
    let without = if here { f.there_name } else { f.here_name };
    Some(format!(
        "no pair of candidates worked, the relay included ({}: {}; {}: {}); {without} has no \
         relay candidate: its network may block the TURN server",
        f.here_name,
        f.here.local.describe(),
        f.there_name,
        f.here.remote.describe()
    ))
}

/// Connected through TURN over TCP by a side whose UDP got nowhere (no reflexive
/// address, no relay over UDP).
fn udp_blocked_tcp_relay(f: &Facts) -> Option<String> {
    ends(f).into_iter().find_map(|(s, name)| {
        let path = s.summary.as_ref()?.path.as_deref()?;
        let over_tcp = path.starts_with("relay") && path.ends_with("/tcp");
        (over_tcp && !s.local.has("srflx") && !s.relay_over.contains("udp"))
            .then(|| format!("UDP blocked on {name}'s network: connected through TURN over TCP"))
    })
}

#[cfg(test)]
mod tests {
    use super::super::Summary;
    use super::*;

    /// A side from its local and remote candidates ("relay udp 1.2.3.4:5 over tcp"),
    /// errors, signaling states and selected path.
    fn side(local: &[&str], remote: &[&str], errors: &[&str], signaling: &[&str]) -> Side {
        let mut s = Side::default();
        for c in local {
            s.local.add(c);
            if let Some(over) = c.split(" over ").nth(1) {
                s.relay_over.insert(over.to_string());
            }
        }
        for c in remote {
            s.remote.add(c);
        }
        s.errors = errors.iter().map(|e| e.to_string()).collect();
        s.signaling = signaling.iter().map(|e| e.to_string()).collect();
        s
    }

    fn facts<'a>(here: &'a Side, there: Option<&'a Side>) -> Facts<'a> {
        Facts {
            here,
            there,
            here_name: "Ann",
            there_name: "Bob",
        }
    }

    const OFFERED: &[&str] = &["have-local-offer", "stable"];
    const ANSWERED: &[&str] = &["have-remote-offer", "stable"];

    #[test]
    fn a_lost_offer() {
        let ann = side(&["host udp"], &[], &[], OFFERED);
        let bob = side(&[], &[], &[], &[]);
        let v = failure(&facts(&ann, Some(&bob)));
        assert!(v.starts_with("the offer from Ann never reached Bob"), "{v}");
    }

    #[test]
    fn dtls_that_failed_on_a_working_path() {
        let mut ann = side(&["host udp"], &["host udp"], &[], OFFERED);
        let mut bob = side(&["host udp"], &["host udp"], &[], ANSWERED);
        // As Chromium reports it when the fingerprint it was given is not the far
        // side's: ICE connected, the connection failed (then an ICE restart).
        ann.ice_when_failed = "connected".into();
        ann.state = "failed".into();
        bob.state = "connecting".into();
        let v = failure(&facts(&ann, Some(&bob)));
        assert!(
            v.starts_with("ICE connected, but the DTLS handshake failed at Ann"),
            "{v}"
        );
        // ICE that failed is not DTLS.
        ann.ice_when_failed = "failed".into();
        let v = failure(&facts(&ann, Some(&bob)));
        assert!(!v.contains("DTLS"), "{v}");
    }

    #[test]
    fn candidates_that_never_arrived() {
        let ann = side(&["host udp"], &[], &[], OFFERED);
        let bob = side(&["host udp", "srflx udp"], &["host udp"], &[], ANSWERED);
        let v = failure(&facts(&ann, Some(&bob)));
        assert!(
            v.starts_with("Bob gathered candidates (host, srflx) but none reached Ann"),
            "{v}"
        );
        let v = failure(&facts(&ann, None));
        assert!(
            v.starts_with("no ICE candidate from Bob reached Ann"),
            "{v}"
        );
    }

    #[test]
    fn wrong_turn_credentials_name_the_device() {
        let ann = side(
            &["host udp"],
            &["host udp"],
            &["401 Unauthorized turn:10.0.0.1:3478"],
            OFFERED,
        );
        let bob = side(&["host udp"], &["host udp"], &[], ANSWERED);
        // Reported by Bob; the 401 is Ann's, and the verdict names her.
        let f = Facts {
            here: &bob,
            there: Some(&ann),
            here_name: "Bob",
            there_name: "Ann",
        };
        let v = failure(&f);
        assert!(
            v.starts_with("the TURN server refused Ann's credentials (401"),
            "{v}"
        );
    }

    #[test]
    fn host_only_needs_turn() {
        let ann = side(&["host udp"], &["host udp"], &[], OFFERED);
        let v = failure(&facts(&ann, None));
        assert!(v.starts_with("only host candidates on both sides"), "{v}");
        assert!(v.contains("rtcdev serve --turn"), "{v}");
    }

    #[test]
    fn an_unreachable_turn_server() {
        let ann = side(
            &["host udp", "srflx udp"],
            &["host udp", "relay udp"],
            &["701 Failed to establish connection turn:10.0.0.1:3478?transport=tcp"],
            OFFERED,
        );
        let v = failure(&facts(&ann, None));
        assert!(
            v.starts_with("Ann could not reach the TURN server (701"),
            "{v}"
        );
    }

    #[test]
    fn relays_on_neither_or_one_side() {
        let ann = side(
            &["host udp", "srflx udp"],
            &["host udp", "srflx udp"],
            &[],
            OFFERED,
        );
        let v = failure(&facts(&ann, None));
        assert!(v.contains("neither side has a relay"), "{v}");
        let ann = side(
            &["host udp", "relay udp"],
            &["host udp", "srflx udp"],
            &[],
            OFFERED,
        );
        let bob = side(
            &["host udp", "srflx udp"],
            &["host udp", "relay udp"],
            &[],
            ANSWERED,
        );
        let v = failure(&facts(&ann, Some(&bob)));
        assert!(
            v.ends_with("Bob has no relay candidate: its network may block the TURN server"),
            "{v}"
        );
    }

    #[test]
    fn udp_blocked_but_through_tcp() {
        let mut bob = side(
            &["host udp", "relay udp 10.0.0.1:5 over tcp"],
            &["host udp", "srflx udp"],
            &[],
            ANSWERED,
        );
        bob.summary = Some(Summary {
            path: Some("relay → srflx udp/tcp".into()),
            ..Summary::default()
        });
        let ann = side(
            &["host udp", "srflx udp", "relay udp 10.0.0.1:6 over udp"],
            &["host udp", "relay udp"],
            &[],
            OFFERED,
        );
        assert_eq!(
            success(&facts(&ann, Some(&bob))).as_deref(),
            Some("UDP blocked on Bob's network: connected through TURN over TCP")
        );
        // A relay over UDP that worked is no news.
        let mut direct = ann;
        direct.summary = Some(Summary {
            path: Some("relay → host udp/udp".into()),
            ..Summary::default()
        });
        assert_eq!(success(&facts(&direct, None)), None);
    }
}
