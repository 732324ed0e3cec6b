//! What `serve`, `probe` and `turn` share about ICE servers.
//!
//! The lists as browsers take them (`RTCIceServer`), TURN REST credentials (coturn's
//! `use-auth-secret` scheme), STUN/TURN URLs ([`url`], `IceUrl`) and STUN/TURN over TCP
//! and TLS ([`stream`], RFC 6062 framing).

pub mod stream;
pub mod url;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// How long TURN REST credentials handed to a page stay valid by default.
pub const DEFAULT_TURN_CREDENTIAL_TTL: Duration = Duration::from_secs(3600);

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// TURN credentials: fixed, or made per request from a shared secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnAuth {
    /// A fixed username and password (long-term credentials).
    Static {
        /// The TURN username, sent as is.
        username: String,
        /// The TURN password (the long-term key is made from it and the realm).
        password: String,
    },
    /// TURN REST: `username = expiry:id`, `credential = base64(HMAC-SHA1(secret, username))`.
    Secret {
        /// The secret shared with the TURN server (coturn `static-auth-secret`).
        secret: String,
        /// How long each credential is valid.
        ttl: Duration,
    },
}

/// The ICE servers a hub or page should use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// STUN URLs.
    pub stun: Vec<String>,
    /// TURN URLs (all share `turn_auth`).
    pub turn: Vec<String>,
    /// Credentials for the TURN URLs.
    pub turn_auth: Option<TurnAuth>,
}

impl IceConfig {
    /// The `iceServers` list for one client; `who` goes into REST usernames so a TURN
    /// log can tell clients apart.
    pub fn servers(&self, who: &str) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun.is_empty() {
            out.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            let (username, credential) = match &self.turn_auth {
                Some(TurnAuth::Static { username, password }) => {
                    (Some(username.clone()), Some(password.clone()))
                }
                Some(TurnAuth::Secret { secret, ttl }) => {
                    let (u, c) = turn_rest_credentials(secret, who, *ttl, SystemTime::now());
                    (Some(u), Some(c))
                }
                None => (None, None),
            };
            out.push(IceServer {
                urls: self.turn.clone(),
                username,
                credential,
            });
        }
        out
    }
}

/// Makes TURN REST credentials valid for `ttl` from `now`, as coturn's
/// `use-auth-secret` checks them: the username is `<unix expiry>:<who>` and the
/// credential is base64 of HMAC-SHA1 over the username keyed with the secret.
pub fn turn_rest_credentials(
    secret: &str,
    who: &str,
    ttl: Duration,
    now: SystemTime,
) -> (String, String) {
    let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
    let username = if who.is_empty() {
        expiry.as_secs().to_string()
    } else {
        format!("{}:{who}", expiry.as_secs())
    };
    (username.clone(), turn_rest_password(secret, &username))
}

/// The credential coturn expects for a REST `username` under `secret`.
pub fn turn_rest_password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_match_coturn_reference() {
        // HMAC-SHA1("secret", "1700000000:alice"), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 3600);
        let (user, pass) = turn_rest_credentials("secret", "alice", Duration::from_secs(3600), now);
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn servers_lists_stun_then_turn() {
        let cfg = IceConfig {
            stun: vec!["stun:127.0.0.1:3478".into()],
            turn: vec!["turn:127.0.0.1:3478".into()],
            turn_auth: Some(TurnAuth::Static {
                username: "u".into(),
                password: "p".into(),
            }),
        };
        let list = cfg.servers("x");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].username, None);
        assert_eq!(list[1].username.as_deref(), Some("u"));
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(
            json[0],
            serde_json::json!({"urls": ["stun:127.0.0.1:3478"]})
        );
        assert!(IceConfig::default().servers("x").is_empty());
    }
}
