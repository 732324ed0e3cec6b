//! Certificates: the local CA (mkcert-compatible files), leaf issuance, PKCS#12, rustls
//! configuration and the trust stores. Works without the network.

pub mod ca;
pub mod command;
pub mod constraints;
pub mod names;
pub mod p12;
pub mod tls;
pub mod trust;

pub use ca::{Ca, CaLocation, CaOutcome, CaSource, Leaf, LeafRequest};
pub use names::{CertName, parse_names};
