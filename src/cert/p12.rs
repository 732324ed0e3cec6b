//! PKCS#12 bundles of a leaf, its key and the CA, as mkcert writes them.

use anyhow::{Result, anyhow};
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};

use super::ca::{Ca, Leaf};

/// The bundle password mkcert uses; the bundle protects nothing the key file does not.
pub const P12_PASSWORD: &str = "changeit";
/// Iterations of the legacy key derivation, as Go's pkcs12 package (which mkcert uses).
const P12_ITERATIONS: u32 = 2048;

/// Encodes the leaf, its key and the CA into a PKCS#12 bundle.
///
/// The legacy algorithms (3DES and a SHA-1 MAC) are deliberate: macOS Keychain, Windows
/// before Server 2019 and Java before 8u301 cannot import AES-256/SHA-256 bundles, and
/// the password is public anyway, so the modern ones buy no security here.
pub fn encode(leaf: &Leaf, ca: &Ca) -> Result<Vec<u8>> {
    let err = |e: p12_keystore::error::Error| anyhow!("cannot build the PKCS#12 bundle: {e}");
    let leaf_cert = Certificate::from_der(&leaf.cert_der).map_err(err)?;
    let ca_cert = Certificate::from_der(&ca.cert_der).map_err(err)?;
    let key = PrivateKey::from_der(&leaf.key_der).map_err(err)?;
    let key_id = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &leaf.cert_der);
    let chain = PrivateKeyChain::new(key_id.as_ref().to_vec(), key, [leaf_cert, ca_cert]);
    let mut store = KeyStore::new();
    store.add_entry("rtcdev", KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(P12_PASSWORD)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .encryption_iterations(P12_ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .mac_iterations(P12_ITERATIONS)
        .write()
        .map_err(err)
}
