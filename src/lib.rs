//! rtcdev: everything a local WebRTC call needs in one binary.
//!
//! The commands, one module each:
//! - [`cert`]: `rtcdev cert`, the local CA (mkcert-compatible, name-constrained), leaves,
//!   PKCS#12, rustls configuration and trust stores.
//! - [`serve`]: `rtcdev serve`, the HTTPS front door (page, hub, onboarding, QR, proxy).
//! - [`signal`]: `rtcdev signal`, the hub alone.
//! - [`probe`]: `rtcdev probe`, STUN/TURN checks with a relay echo (webrtc-rs).
//! - [`turn`]: `rtcdev turn`, a STUN/TURN server (webrtc-rs turn crate) behind a guard.
//! - [`echo`]: the echo peer `serve` adds to a room, to test a call with one device.
//!
//! The parts they share:
//! - [`cli`]: the command line and its conversion into configs, where every value is
//!   checked.
//! - [`hub`]: the signaling hub (room core, native WebSocket and socket.io front-ends,
//!   limits, Redis rooms).
//! - [`server`]: listener, TLS/HTTP sniffing, origins and hosts, shutdown, the allocator.
//! - [`ice`]: the ICE URL grammar, ICE server lists, TURN REST credentials, STUN/TURN
//!   over streams.
//! - [`net`]: LAN address discovery, which addresses reach a server, URL hosts.
//! - [`qr`]: QR codes for the terminal and SVG.

// One exception, allowed where it stands: `server::heap` asks the allocator to return
// free pages (`mi_collect`), which has no safe binding.
#![deny(unsafe_code)]

pub mod cert;
pub mod cli;
pub mod echo;
pub mod hub;
pub mod ice;
pub mod net;
pub mod probe;
pub mod qr;
pub mod serve;
pub mod server;
pub mod signal;
pub mod turn;
