//! The native wire protocol (docs/PROTOCOL.md): frame types, error codes, id and room
//! name rules, and the decoder. Decoding never panics; bad input is a [`HubError`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Longest room name.
pub const MAX_ROOM_NAME_LEN: usize = 64;
/// Largest `meta` object, serialized.
pub const MAX_META_BYTES: usize = 1024;

/// A peer id: 96 random bits as 16 URL-safe base64 characters, the format socket.io
/// uses for socket ids, so ids of both front-ends look alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(Arc<str>);

impl PeerId {
    /// A new random id.
    pub fn random() -> Self {
        use base64::Engine;
        let bytes: [u8; 12] = rand::random();
        PeerId(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into(),
        )
    }

    /// Wraps an id made elsewhere (a socket.io socket id).
    pub fn from_string(id: String) -> Self {
        PeerId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated room name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Checks the rules: 1 to 64 characters of `A-Z a-z 0-9 _ - .`.
    pub fn parse(name: &str) -> Result<Self, HubError> {
        if name.is_empty() || name.len() > MAX_ROOM_NAME_LEN {
            return Err(HubError::BadRequest(format!(
                "a room name has 1 to {MAX_ROOM_NAME_LEN} characters"
            )));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(HubError::BadRequest(
                "a room name may hold only A-Z a-z 0-9 _ - .".into(),
            ));
        }
        Ok(RoomName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the hub refuses, with the protocol's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// Malformed frame, unknown type, bad room name, wrong field type.
    #[error("{0}")]
    BadRequest(String),
    /// The room has its maximum number of peers.
    #[error("the room is full ({0} peers)")]
    RoomFull(usize),
    /// `signal` or `leave` before `join`.
    #[error("join a room first")]
    NotInRoom,
    /// `to` names no peer of this room.
    #[error("no peer {0} in this room")]
    UnknownPeer(String),
    /// A frame over the size limit.
    #[error("the frame is larger than {0} bytes")]
    TooLarge(usize),
    /// Over the frame rate limit.
    #[error("too many frames; at most {0} a second")]
    RateLimited(u32),
    /// Over the rate of joins from one client address.
    #[error("too many joins from this address; at most {0} a second")]
    JoinsRateLimited(u32),
    /// A resume this hub cannot grant: a wrong token, too late, or not supported.
    #[error("cannot resume: {0}")]
    ResumeRefused(String),
}

impl HubError {
    /// The protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            HubError::BadRequest(_) => "bad-request",
            HubError::RoomFull(_) => "room-full",
            HubError::NotInRoom => "not-in-room",
            HubError::UnknownPeer(_) => "unknown-peer",
            HubError::TooLarge(_) => "too-large",
            HubError::RateLimited(_) | HubError::JoinsRateLimited(_) => "rate-limited",
            HubError::ResumeRefused(_) => "resume-refused",
        }
    }

    /// The `error` frame for this error.
    pub fn frame(&self) -> String {
        serde_json::json!({"type": "error", "code": self.code(), "message": self.to_string()})
            .to_string()
    }
}

/// A client frame after decoding, borrowing what it can from the frame's text.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// Join a room with optional metadata.
    Join {
        /// The room.
        room: RoomName,
        /// The metadata object (`{}` when absent).
        meta: Arc<Value>,
    },
    /// Relay `data` to one peer or the rest of the room.
    Signal {
        /// The recipient, or everyone else.
        to: Option<Cow<'a, str>>,
        /// The data, as JSON text (checked to be JSON), relayed untouched.
        data: &'a str,
    },
    /// Leave the room.
    Leave,
    /// Application keep-alive.
    Ping,
    /// Take back the place of peer `id`, proven with the token its `welcome` carried.
    Resume {
        /// The peer id of the earlier connection.
        id: String,
        /// The resume token that connection was given.
        token: String,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
}

/// A member that must be a string (or absent, or `null`): borrowed from the frame when
/// it has no escapes, as it nearly always has.
fn as_string<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<Option<Cow<'a, str>>, HubError> {
    let Some(text) = raw.map(RawValue::get).filter(|t| *t != "null") else {
        return Ok(None);
    };
    // The value is valid JSON (serde checked it to capture it): a quoted text with no
    // backslash is a string that means exactly what is between the quotes.
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Ok(Some(Cow::Borrowed(inner)));
    }
    serde_json::from_str::<String>(text)
        .map(|s| Some(Cow::Owned(s)))
        .map_err(|_| HubError::BadRequest(format!("\"{field}\" must be a string")))
}

/// Decodes one text frame. Unknown fields are ignored.
pub fn decode(text: &str) -> Result<ClientFrame<'_>, HubError> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| {
        if text.trim_start().starts_with('{') {
            HubError::BadRequest(format!("the frame is not valid JSON: {e}"))
        } else {
            HubError::BadRequest("a frame must be a JSON object with a \"type\"".into())
        }
    })?;
    let kind = as_string(env.kind, "type")?
        .ok_or_else(|| HubError::BadRequest("the frame has no \"type\"".into()))?;
    match &*kind {
        "join" => {
            let room = as_string(env.room, "room")?
                .ok_or_else(|| HubError::BadRequest("join needs a \"room\"".into()))?;
            let room = RoomName::parse(&room)?;
            let meta = match env.meta {
                None => Value::Object(Default::default()),
                Some(r) if r.get() == "null" => Value::Object(Default::default()),
                Some(r) => {
                    if r.get().len() > MAX_META_BYTES {
                        return Err(HubError::BadRequest(format!(
                            "\"meta\" is at most {MAX_META_BYTES} bytes"
                        )));
                    }
                    let v: Value = serde_json::from_str(r.get())
                        .map_err(|_| HubError::BadRequest("\"meta\" is not valid JSON".into()))?;
                    if !v.is_object() {
                        return Err(HubError::BadRequest("\"meta\" must be an object".into()));
                    }
                    v
                }
            };
            Ok(ClientFrame::Join {
                room,
                meta: Arc::new(meta),
            })
        }
        "signal" => {
            let to = as_string(env.to, "to")?;
            let data = env
                .data
                .ok_or_else(|| HubError::BadRequest("signal needs \"data\"".into()))?;
            Ok(ClientFrame::Signal {
                to,
                data: data.get(),
            })
        }
        "leave" => Ok(ClientFrame::Leave),
        "ping" => Ok(ClientFrame::Ping),
        "resume" => {
            let id = as_string(env.id, "id")?
                .ok_or_else(|| HubError::BadRequest("resume needs the \"id\"".into()))?;
            let token = as_string(env.token, "token")?
                .ok_or_else(|| HubError::BadRequest("resume needs the \"token\"".into()))?;
            Ok(ClientFrame::Resume {
                id: id.into_owned(),
                token: token.into_owned(),
            })
        }
        other => Err(HubError::BadRequest(format!(
            "unknown frame type {other:?}"
        ))),
    }
}

/// JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame type either side sends and every error code is in docs/PROTOCOL.md,
    /// which users read: the spec keeps in step with the code.
    #[test]
    fn the_protocol_doc_names_every_frame_and_error() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        // What a client sends, each accepted by the decoder.
        for (kind, frame) in [
            ("join", r#"{"type":"join","room":"r"}"#),
            ("signal", r#"{"type":"signal","data":{}}"#),
            ("leave", r#"{"type":"leave"}"#),
            ("ping", r#"{"type":"ping"}"#),
            ("resume", r#"{"type":"resume","id":"a","token":"b"}"#),
        ] {
            assert!(decode(frame).is_ok(), "{frame}");
            assert!(
                doc.contains(&format!("\"type\":\"{kind}\"")),
                "{kind} not in the doc"
            );
        }
        for kind in [
            "welcome",
            "joined",
            "peer-joined",
            "peer-left",
            "signal",
            "pong",
            "error",
        ] {
            assert!(
                doc.contains(&format!("`{kind}`")) || doc.contains(&format!("\"type\":\"{kind}\"")),
                "{kind} not in the doc"
            );
        }
        let every = [
            HubError::BadRequest(String::new()),
            HubError::RoomFull(2),
            HubError::NotInRoom,
            HubError::UnknownPeer(String::new()),
            HubError::TooLarge(1),
            HubError::RateLimited(1),
            HubError::JoinsRateLimited(1),
            HubError::ResumeRefused(String::new()),
        ];
        // A new error must join the list above: this match stops compiling without it.
        for e in &every {
            match e {
                HubError::BadRequest(_)
                | HubError::RoomFull(_)
                | HubError::NotInRoom
                | HubError::UnknownPeer(_)
                | HubError::TooLarge(_)
                | HubError::RateLimited(_)
                | HubError::JoinsRateLimited(_)
                | HubError::ResumeRefused(_) => {}
            }
            assert!(
                doc.contains(&format!("`{}`", e.code())),
                "{} not in the doc",
                e.code()
            );
        }
    }

    #[test]
    fn decodes_every_frame() {
        match decode(r#"{"type":"join","room":"a-B_1.x","meta":{"name":"Ann"},"extra":1}"#).unwrap()
        {
            ClientFrame::Join { room, meta } => {
                assert_eq!(room.as_str(), "a-B_1.x");
                assert_eq!(meta["name"], "Ann");
            }
            f => panic!("{f:?}"),
        }
        match decode(r#"{"type":"signal","to":"abc","data":{"sdp":"v=0"}}"#).unwrap() {
            ClientFrame::Signal { to, data } => {
                assert_eq!(to.as_deref(), Some("abc"));
                assert_eq!(data, r#"{"sdp":"v=0"}"#);
            }
            f => panic!("{f:?}"),
        }
        assert!(matches!(
            decode(r#"{"type":"signal","data":1}"#).unwrap(),
            ClientFrame::Signal { to: None, .. }
        ));
        assert!(matches!(
            decode(r#"{"type":"leave"}"#).unwrap(),
            ClientFrame::Leave
        ));
        assert!(matches!(
            decode(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping
        ));
    }

    #[test]
    fn refuses_bad_frames() {
        for bad in [
            "hello",
            "[1,2]",
            "{",
            r#"{"room":"x"}"#,
            r#"{"type":5}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"join","room":5}"#,
            r#"{"type":"join","room":"a/b"}"#,
            r#"{"type":"join","room":""}"#,
            r#"{"type":"join","room":"x","meta":[1]}"#,
            r#"{"type":"signal"}"#,
            r#"{"type":"signal","to":7,"data":1}"#,
        ] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.code(), "bad-request", "{bad}");
        }
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(65));
        assert_eq!(decode(&long).unwrap_err().code(), "bad-request");
        let ok = format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(64));
        assert!(decode(&ok).is_ok());
        let big_meta = format!(
            r#"{{"type":"join","room":"r","meta":{{"n":"{}"}}}}"#,
            "x".repeat(1100)
        );
        assert_eq!(decode(&big_meta).unwrap_err().code(), "bad-request");
    }

    #[test]
    fn ids_are_random_and_long_enough() {
        let a = PeerId::random();
        let b = PeerId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
    }

    #[test]
    fn error_frames_carry_code_and_message() {
        let v: Value = serde_json::from_str(&HubError::RoomFull(16).frame()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "room-full");
        assert!(v["message"].as_str().unwrap().contains("16"));
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(s in ".{0,300}") {
            let _ = decode(&s);
        }

        #[test]
        fn decoder_never_panics_on_near_frames(kind in "(join|signal|leave|ping|x)", room in ".{0,80}", to in ".{0,20}") {
            let frame = serde_json::json!({"type": kind, "room": room, "to": to, "data": {"k": room}}).to_string();
            let _ = decode(&frame);
        }
    }
}
