//! Issued leaves in real TLS: a client that trusts only the CA connects, one that does
//! not is refused; the CA loads mkcert's files; bad CA files fail clearly and stay intact.

mod common;

use std::sync::Arc;

use rtcdev::cert::tls::{self, SwappableCert};
use rtcdev::cert::{Ca, CaOutcome, LeafRequest, parse_names};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn leaf_key(ca: &Ca, names: &[&str]) -> rustls::sign::CertifiedKey {
    let leaf = ca
        .issue(&LeafRequest {
            names: parse_names(names).unwrap(),
            days: 30,
            client: false,
        })
        .unwrap();
    tls::certified_key_from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), "test").unwrap()
}

/// A TLS echo-once server on 127.0.0.1:0; returns its port.
async fn serve(certs: Arc<SwappableCert>) -> u16 {
    let config = Arc::new(tls::server_config(certs).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

async fn connect(port: u16, roots: &[&Ca], name: &str) -> Result<Vec<u8>, std::io::Error> {
    let mut store = RootCertStore::empty();
    for ca in roots {
        store.add(ca.cert_der.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await?;
    Ok(buf)
}

#[tokio::test]
async fn trusted_only_by_clients_that_trust_the_ca() {
    let sb = common::Sandbox::new();
    let (ca, outcome) = Ca::load_or_create(&sb.ca_dir()).unwrap();
    assert_eq!(outcome, CaOutcome::Created);
    let (other, _) = Ca::load_or_create(&sb.path().join("other")).unwrap();

    let port = serve(SwappableCert::new(leaf_key(
        &ca,
        &["localhost", "127.0.0.1"],
    )))
    .await;
    assert_eq!(connect(port, &[&ca], "localhost").await.unwrap(), b"hello");
    assert_eq!(connect(port, &[&ca], "127.0.0.1").await.unwrap(), b"hello");

    // Two rtcdev CAs on one machine share a subject name, so webpki finds the issuer
    // by name and then rejects the signature; either way the peer is refused.
    let err = connect(port, &[&other], "localhost").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("UnknownIssuer") || msg.contains("BadSignature"),
        "{msg}"
    );
    let err = connect(port, &[&ca], "not-covered.test").await.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn swapped_certificate_reaches_new_handshakes() {
    let sb = common::Sandbox::new();
    let (ca, _) = Ca::load_or_create(&sb.ca_dir()).unwrap();
    let certs = SwappableCert::new(leaf_key(&ca, &["first.test"]));
    let port = serve(certs.clone()).await;
    assert!(connect(port, &[&ca], "first.test").await.is_ok());
    assert!(connect(port, &[&ca], "second.test").await.is_err());
    certs.swap(leaf_key(&ca, &["second.test"]));
    assert!(connect(port, &[&ca], "second.test").await.is_ok());
}

#[test]
fn loads_again_without_changing_anything() {
    let sb = common::Sandbox::new();
    let (first, _) = Ca::load_or_create(&sb.ca_dir()).unwrap();
    let key_before = std::fs::read(sb.ca_dir().join("rootCA-key.pem")).unwrap();
    let (second, outcome) = Ca::load_or_create(&sb.ca_dir()).unwrap();
    assert_eq!(outcome, CaOutcome::Loaded);
    assert_eq!(first.cert_der, second.cert_der);
    assert_eq!(
        key_before,
        std::fs::read(sb.ca_dir().join("rootCA-key.pem")).unwrap()
    );
    assert!(first.nickname().starts_with("rtcdev development CA "));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(sb.ca_dir().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("rootCA-key.pem"), 0o600);
        assert_eq!(
            std::fs::metadata(sb.ca_dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

#[test]
fn corrupt_or_mismatched_ca_files_fail_clearly_and_stay_untouched() {
    let sb = common::Sandbox::new();
    Ca::load_or_create(&sb.ca_dir()).unwrap();
    let cert = sb.ca_dir().join("rootCA.pem");
    let key = sb.ca_dir().join("rootCA-key.pem");
    let good_cert = std::fs::read(&cert).unwrap();
    let good_key = std::fs::read(&key).unwrap();

    std::fs::write(&cert, b"garbage").unwrap();
    let err = format!("{:#}", Ca::load_or_create(&sb.ca_dir()).err().unwrap());
    assert!(
        err.contains("rootCA.pem") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read(&cert).unwrap(), b"garbage");
    assert_eq!(std::fs::read(&key).unwrap(), good_key);

    // A PEM block whose body is not a certificate.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = format!("{:#}", Ca::load(&sb.ca_dir()).err().unwrap());
    assert!(err.contains("not a valid X.509"), "{err}");

    std::fs::write(&cert, &good_cert).unwrap();
    std::fs::write(
        &key,
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = format!("{:#}", Ca::load(&sb.ca_dir()).err().unwrap());
    assert!(
        err.contains("rootCA-key.pem") && err.contains("not a usable private key"),
        "{err}"
    );

    // Another CA's key: the pair does not match.
    let (_, _) = Ca::load_or_create(&sb.path().join("other")).unwrap();
    std::fs::copy(sb.path().join("other/rootCA-key.pem"), &key).unwrap();
    let err = format!("{:#}", Ca::load(&sb.ca_dir()).err().unwrap());
    assert!(err.contains("does not belong"), "{err}");
    assert_eq!(std::fs::read(&cert).unwrap(), good_cert);

    // Key gone: refuse, never create a new CA over the old certificate.
    std::fs::remove_file(&key).unwrap();
    let err = format!("{:#}", Ca::load_or_create(&sb.ca_dir()).err().unwrap());
    assert!(err.contains("rootCA-key.pem is missing"), "{err}");
    assert!(!key.exists());
    assert_eq!(std::fs::read(&cert).unwrap(), good_cert);
}

#[test]
fn certificate_gone_but_key_present_is_refused() {
    let sb = common::Sandbox::new();
    Ca::load_or_create(&sb.ca_dir()).unwrap();
    let key = std::fs::read(sb.ca_dir().join("rootCA-key.pem")).unwrap();
    std::fs::remove_file(sb.ca_dir().join("rootCA.pem")).unwrap();
    let err = format!("{:#}", Ca::load_or_create(&sb.ca_dir()).err().unwrap());
    assert!(err.contains("will not replace a CA key"), "{err}");
    assert_eq!(
        std::fs::read(sb.ca_dir().join("rootCA-key.pem")).unwrap(),
        key
    );
}

#[test]
fn leaf_validity_and_days_bounds() {
    let sb = common::Sandbox::new();
    let (ca, _) = Ca::load_or_create(&sb.ca_dir()).unwrap();
    let names = parse_names(&["localhost"]).unwrap();
    assert!(
        ca.issue(&LeafRequest {
            names: names.clone(),
            days: 0,
            client: false
        })
        .is_err()
    );
    let leaf = ca
        .issue(&LeafRequest {
            names,
            days: 14,
            client: true,
        })
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf.cert_der).unwrap();
    let v = parsed.validity();
    let span = v.not_after.timestamp() - v.not_before.timestamp();
    // 14 days plus the hour of clock-skew allowance.
    assert_eq!(span, 14 * 86400 + 3600);
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(
        parsed.subject().iter_common_name().next().is_none(),
        "SANs only, no CN"
    );
}
