//! rtcdev: everything a local WebRTC call needs in one binary.
//!
//! Modules:
//! - [`cert`]: the local CA (mkcert-compatible), leaf certificates, PKCS#12, rustls
//!   configuration and trust stores.
//! - [`net`]: LAN address discovery and URL building.
//! - [`hub`]: the signaling hub (room core, native WebSocket and socket.io front-ends).
//! - [`ice`]: ICE server lists and TURN REST credentials.
//! - [`serve`]: `rtcdev serve`, the HTTPS front door (page, hub, onboarding, QR).
//! - [`signal`]: `rtcdev signal`, the hub alone.
//! - [`server`]: listener, TLS/HTTP sniffing, CORS and shutdown shared by both.
//! - [`qr`]: QR codes for the terminal and SVG.
//! - [`probe`]: `rtcdev probe`, STUN/TURN checks with a relay echo (webrtc-rs).
//! - [`turn`]: `rtcdev turn`, a STUN/TURN server (webrtc-rs turn crate).
//! - [`cli`]: the command line and its conversion into configs.

#![forbid(unsafe_code)]

pub mod cert;
pub mod cli;
pub mod hub;
pub mod ice;
pub mod net;
pub mod probe;
pub mod qr;
pub mod serve;
pub mod server;
pub mod signal;
pub mod stream_conn;
pub mod turn;
