//! `rtcdev serve`: the router with oneshot, then the server on 127.0.0.1:0 with a TLS
//! client that trusts only the local CA, plain HTTP on the same port, certificate swaps,
//! `--dir` safety and hostile connections.

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Sandbox, get_head, http_request, https_request};
use rtcdev::cert::tls::TlsSource;
use rtcdev::cert::{Ca, CaLocation, CaSource};
use rtcdev::hub::{Hub, HubConfig};
use rtcdev::serve::{self, AppState, CaInfo, Content, QrMode, ServeConfig};
use rtcdev::server::Scheme;
use tower::ServiceExt;

fn ca_info(ca: &Ca) -> CaInfo {
    CaInfo {
        pem: ca.cert_pem.clone(),
        der: ca.cert_der.to_vec(),
        name: ca.nickname(),
        serial: ca.serial.clone(),
        path: ca.dir.join("rootCA.pem"),
    }
}

fn state(sb: &Sandbox, content: Content) -> (AppState, Ca) {
    let (ca, _) = Ca::load_or_create(&sb.ca_dir()).unwrap();
    let lan: Vec<IpAddr> = vec!["192.0.2.10".parse().unwrap()];
    let st = AppState::new(
        Hub::new(HubConfig::default()),
        Some(ca_info(&ca)),
        content,
        8443,
        "lobby1".into(),
        lan,
    );
    (st, ca)
}

async fn call(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "192.0.2.10:8443")
        .body(Body::empty())
        .unwrap()
}

fn plain(path: &str) -> Request<Body> {
    let mut r = get(path);
    r.extensions_mut().insert(Scheme::Http);
    r
}

#[tokio::test]
async fn router_serves_page_config_qr_health_and_ca() {
    let sb = Sandbox::new();
    let (st, ca) = state(&sb, Content::Bundled);
    let app = serve::router(st, &[], &[]).unwrap();

    let (s, h, body) = call(&app, get("/")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/html");
    assert!(String::from_utf8_lossy(&body).contains("<title>rtcdev call</title>"));
    let etag = h["etag"].to_str().unwrap().to_string();
    let (s, _, _) = call(
        &app,
        Request::get("/")
            .header("host", "localhost:8443")
            .header("if-none-match", &etag)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, h, plain_js) = call(&app, get("/js/app.js")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(call(&app, get("/nope.js")).await.0, StatusCode::NOT_FOUND);
    // Brotli when the browser offers it (browsers do over HTTPS), smaller and the same
    // bytes once decoded.
    let req = Request::get("/js/app.js")
        .header("host", "localhost:8443")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .body(Body::empty())
        .unwrap();
    let (_, h, br) = call(&app, req).await;
    assert_eq!(h["content-encoding"], "br");
    assert!(
        br.len() < plain_js.len() / 2,
        "{} of {}",
        br.len(),
        plain_js.len()
    );
    let mut decoded = Vec::new();
    brotli_decompressor::BrotliDecompress(&mut &br[..], &mut decoded).unwrap();
    assert_eq!(decoded, plain_js);
    assert_eq!(h["vary"], "accept-encoding");
    // Its own ETag, and a 304 for it that says what it varies on.
    let br_etag = h["etag"].to_str().unwrap().to_string();
    assert!(br_etag.ends_with("-br\""), "{br_etag}");
    let req = Request::get("/js/app.js")
        .header("host", "localhost:8443")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("if-none-match", &br_etag)
        .body(Body::empty())
        .unwrap();
    let (s, h, _) = call(&app, req).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(h["vary"], "accept-encoding");
    assert_eq!(h["etag"].to_str().unwrap(), br_etag);
    // The plain file's ETag does not stand for the brotli form.
    let plain_etag = call(&app, get("/js/app.js")).await.1["etag"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(plain_etag, br_etag);
    let req = Request::get("/js/app.js")
        .header("host", "localhost:8443")
        .header("accept-encoding", "br")
        .header("if-none-match", &plain_etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::OK);
    // What the client refuses it does not get: gzip for `br;q=0`, the plain file for
    // `identity`, each still the same bytes.
    for (accept, want) in [
        ("br;q=0, gzip", Some("gzip")),
        ("gzip;q=0.5", Some("gzip")),
        ("identity", None),
        ("br;q=0, gzip;q=0", None),
    ] {
        let req = Request::get("/js/app.js")
            .header("host", "localhost:8443")
            .header("accept-encoding", accept)
            .body(Body::empty())
            .unwrap();
        let (s, h, body) = call(&app, req).await;
        assert_eq!(s, StatusCode::OK, "{accept}");
        assert_eq!(
            h.get("content-encoding").and_then(|v| v.to_str().ok()),
            want,
            "{accept}"
        );
        let decoded = match want {
            Some("gzip") => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
                    .unwrap();
                out
            }
            _ => body.to_vec(),
        };
        assert_eq!(decoded, plain_js, "{accept}");
    }

    let (s, _, body) = call(&app, get("/config.json")).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!({"iceServers": []}));

    let (s, h, body) = call(&app, get("/qr.svg?room=abc")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "image/svg+xml");
    assert!(String::from_utf8_lossy(&body).contains("<svg"));
    assert_eq!(
        call(&app, get("/qr.svg?room=a/b")).await.0,
        StatusCode::BAD_REQUEST
    );

    let (s, _, body) = call(&app, get("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["rooms"], 0);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let (s, h, body) = call(&app, get("/ca.pem")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/x-x509-ca-cert");
    assert_eq!(body, ca.cert_pem.as_bytes());

    let (s, h, body) = call(&app, get("/ca.mobileconfig")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/x-apple-aspen-config");
    let profile: plist::Dictionary = plist::from_bytes(&body).unwrap();
    assert_eq!(profile["PayloadType"].as_string(), Some("Configuration"));
    let payload = profile["PayloadContent"].as_array().unwrap()[0]
        .as_dictionary()
        .unwrap();
    assert_eq!(
        payload["PayloadType"].as_string(),
        Some("com.apple.security.root")
    );
    assert_eq!(
        payload["PayloadContent"].as_data().unwrap(),
        ca.cert_der.as_ref()
    );
}

#[tokio::test]
async fn plain_http_serves_only_onboarding() {
    let sb = Sandbox::new();
    let (st, _) = state(&sb, Content::Bundled);
    let app = serve::router(st, &[], &[]).unwrap();

    let (s, h, body) = call(&app, plain("/join?room=r1")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = String::from_utf8_lossy(&body);
    assert!(
        html.contains("const httpsBase = 'https://192.0.2.10:8443'"),
        "{html}"
    );
    assert!(
        html.contains("/ca.mobileconfig")
            && html.contains("/ca.pem")
            && html.contains("Certificate Trust Settings")
    );
    assert_eq!(call(&app, plain("/ca.pem")).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, plain("/ca.mobileconfig")).await.0,
        StatusCode::OK
    );

    let (s, h, _) = call(&app, plain("/?room=r1")).await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(h["location"], "https://192.0.2.10:8443/?room=r1");
    let (s, h, _) = call(&app, plain("/config.json")).await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(h["location"], "https://192.0.2.10:8443/config.json");
    // The hub is never reached over plain HTTP: WebSocket upgrades and socket.io
    // handshakes there are redirected, not upgraded.
    for path in [
        "/ws",
        "/socket.io/?EIO=4&transport=websocket",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let mut req = Request::get(path)
            .header("host", "192.0.2.10:8443")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(Scheme::Http);
        let (s, h, _) = call(&app, req).await;
        assert_eq!(s, StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert!(
            h["location"]
                .to_str()
                .unwrap()
                .starts_with("https://192.0.2.10:8443/"),
            "{path}"
        );
    }

    // Over HTTPS, /join goes straight to the room; a bad room name is refused.
    let (s, h, _) = call(&app, get("/join?room=r1")).await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(h["location"], "/?room=r1");
    assert_eq!(
        call(&app, plain("/join?room=%3Cscript%3E")).await.0,
        StatusCode::BAD_REQUEST
    );
}

/// CORS answers the server's own origins and `--allow-origin` ones, echoed (never `*`,
/// which iOS Safari rejects for headers), never with credentials; other origins get
/// no CORS headers, and 403 on the hub's WebSocket and socket.io routes.
#[tokio::test]
async fn cors_and_the_hub_only_for_own_and_allowed_origins() {
    let sb = Sandbox::new();
    let (st, _) = state(&sb, Content::Bundled);
    let app = serve::router(st, &["https://ok.test".into()], &[]).unwrap();
    for origin in [
        "https://192.0.2.10:8443",
        "https://localhost:8443",
        "https://ok.test",
    ] {
        let req = Request::builder()
            .method("OPTIONS")
            .uri("/config.json")
            .header("host", "192.0.2.10:8443")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization,x-trace")
            .body(Body::empty())
            .unwrap();
        let (s, h, _) = call(&app, req).await;
        assert!(s.is_success());
        assert_eq!(h["access-control-allow-origin"], origin);
        assert_eq!(h["access-control-allow-headers"], "authorization,x-trace");
        assert!(
            h.get("access-control-allow-credentials").is_none(),
            "{origin}"
        );
        for (name, value) in &h {
            assert_ne!(value, "*", "{name}");
        }
    }
    for path in ["/config.json", "/", "/app.js"] {
        let req = Request::get(path)
            .header("host", "192.0.2.10:8443")
            .header("origin", "https://evil.test")
            .body(Body::empty())
            .unwrap();
        let (_, h, _) = call(&app, req).await;
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
    }
    for path in [
        "/ws",
        "/socket.io/?EIO=4&transport=polling",
        "/socket.io/?EIO=4&transport=websocket",
    ] {
        let req = Request::get(path)
            .header("host", "192.0.2.10:8443")
            .header("origin", "https://evil.test")
            .body(Body::empty())
            .unwrap();
        let (s, _, body) = call(&app, req).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(
            String::from_utf8_lossy(&body).contains("--allow-origin https://evil.test"),
            "{path}"
        );
    }
    // The page's own origin reaches the hub.
    let req = Request::get("/socket.io/?EIO=4&transport=polling")
        .header("host", "192.0.2.10:8443")
        .header("origin", "https://192.0.2.10:8443")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::OK);
}

/// A request under a host name that is not an IP, localhost, this host's name or an
/// `--allowed-host` is refused (DNS rebinding), whatever the route.
#[tokio::test]
async fn foreign_host_names_are_refused() {
    let sb = Sandbox::new();
    let (st, _) = state(&sb, Content::Bundled);
    let app = serve::router(st, &[], &["dev.test".into()]).unwrap();
    for (host, ok) in [
        ("192.0.2.10:8443", true),
        ("localhost:8443", true),
        ("app.localhost:8443", true),
        ("[::1]:8443", true),
        ("dev.test:8443", true),
        ("rebind.evil.example:8443", false),
        ("evil.example", false),
    ] {
        for path in ["/", "/config.json", "/healthz", "/ws"] {
            let req = Request::get(path)
                .header("host", host)
                .body(Body::empty())
                .unwrap();
            let (s, _, body) = call(&app, req).await;
            if ok {
                assert_ne!(s, StatusCode::FORBIDDEN, "{host} {path}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{host} {path}");
                assert!(
                    String::from_utf8_lossy(&body).contains("--allowed-host"),
                    "{host}"
                );
            }
        }
    }
    // A second Host (the check read the first, the application may read another) and an
    // HTTP/1.1 request without one are malformed (RFC 9112, 3.2): 400, whatever the route.
    for path in ["/", "/config.json", "/ws"] {
        let two = Request::get(path)
            .header("host", "localhost:8443")
            .header("host", "evil.example")
            .body(Body::empty())
            .unwrap();
        let none = Request::get(path).body(Body::empty()).unwrap();
        // HTTP/2: a Host that names another host than :authority (RFC 9113, 8.3.1).
        let other = Request::get(format!("https://localhost:8443{path}"))
            .version(axum::http::Version::HTTP_2)
            .header("host", "evil.example")
            .body(Body::empty())
            .unwrap();
        for req in [two, none, other] {
            let (s, _, body) = call(&app, req).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
            assert!(String::from_utf8_lossy(&body).contains("Host"), "{path}");
        }
        // A Host that is no host[:port] at all (an IPv6 address without its closing
        // bracket, a space, a bare colon, bytes that are not ASCII: "" stands for those)
        // is malformed too, not read as the nearest name nor let through unread.
        let latin1 = axum::http::HeaderValue::from_bytes(b"caf\xc3\xa9.local:8443").unwrap();
        for bad in [
            "[::1",
            "[::1:8443",
            "local host:8443",
            ":8443",
            "localhost:84a3",
            "",
        ] {
            let host = if bad.is_empty() {
                latin1.clone()
            } else {
                axum::http::HeaderValue::from_static(bad)
            };
            let req = Request::get(path)
                .header("host", host)
                .body(Body::empty())
                .unwrap();
            let (s, _, body) = call(&app, req).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?} {path}");
            assert!(String::from_utf8_lossy(&body).contains("Host"), "{bad:?}");
        }
    }
}

/// The page and `--dir` files answer GET and HEAD; any other method gets 405 with
/// `Allow`, not the file as if it had been done.
#[tokio::test]
async fn files_answer_get_and_head_only() {
    let sb = Sandbox::new();
    let dir = sb.path().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<p>dir</p>").unwrap();
    for content in [
        Content::Bundled,
        Content::Dir {
            root: dir.clone(),
            hidden: false,
        },
    ] {
        let (st, _) = state(&sb, content);
        let app = serve::router(st, &[], &[]).unwrap();
        for path in ["/", "/index.html"] {
            for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
                let req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", "localhost:8443")
                    .body(Body::empty())
                    .unwrap();
                let (s, h, _) = call(&app, req).await;
                assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(h[header::ALLOW], "GET, HEAD", "{method} {path}");
            }
            let head = Request::head(path)
                .header("host", "localhost:8443")
                .body(Body::empty())
                .unwrap();
            assert_eq!(call(&app, head).await.0, StatusCode::OK, "HEAD {path}");
        }
    }
}

/// The ETag `/clip.mp4` is served with.
async fn etag_of_clip(app: &axum::Router) -> String {
    let (_, h, _) = call(app, get("/clip.mp4")).await;
    h["etag"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn dir_serving_stays_inside_the_folder() {
    let sb = Sandbox::new();
    let site = sb.path().join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(site.join("sub/index.html"), "<h1>sub</h1>").unwrap();
    std::fs::write(site.join("app.js"), "console.log('x');".repeat(200)).unwrap();
    std::fs::write(sb.path().join("secret.txt"), "top secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(sb.path().join("secret.txt"), site.join("leak.txt")).unwrap();
    let content = serve::content_dir(&site).unwrap();
    let (st, _) = state(&sb, content);
    let app = serve::router(st, &[], &[]).unwrap();

    let (s, h, body) = call(&app, get("/")).await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::OK, b"<h1>home</h1>".as_slice())
    );
    // Dotfiles and key files stay private unless --hidden; .well-known is served.
    std::fs::write(site.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(site.join(".git")).unwrap();
    std::fs::write(site.join(".git/config"), "[core]").unwrap();
    std::fs::write(site.join("server.key"), "KEY").unwrap();
    std::fs::write(site.join("cert.PEM"), "PEM").unwrap();
    std::fs::create_dir_all(site.join(".well-known")).unwrap();
    std::fs::write(site.join(".well-known/security.txt"), "contact").unwrap();
    // Nor through a plain name that leads to them.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(".env", site.join("settings.txt")).unwrap();
        std::os::unix::fs::symlink(".git", site.join("repo")).unwrap();
        std::os::unix::fs::symlink("server.key", site.join("download")).unwrap();
    }
    for path in [
        "/.env",
        "/.git/config",
        "/server.key",
        "/cert.PEM",
        "/sub/../.env",
        "/%2Eenv",
        "/settings.txt",
        "/repo/config",
        "/download",
    ] {
        let (s, _, body) = call(&app, get(path)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{path}");
    }
    assert_eq!(
        call(&app, get("/.well-known/security.txt")).await.0,
        StatusCode::OK
    );
    let (open, _) = state(&sb, serve::content_dir_with(&site, true).unwrap());
    let open = serve::router(open, &[], &[]).unwrap();
    assert_eq!(call(&open, get("/.env")).await.2, b"SECRET=1");
    #[cfg(unix)]
    assert_eq!(call(&open, get("/settings.txt")).await.2, b"SECRET=1");
    // `//sub` must not redirect to another host (a protocol-relative //sub/).
    let (s, h2, _) = call(&app, get("//sub")).await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h2["location"], "/sub/");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let (s, h, _) = call(&app, get("/sub")).await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "/sub/");
    assert_eq!(call(&app, get("/sub/")).await.2, b"<h1>sub</h1>");
    let (s, h, _) = call(&app, get("/app.js")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().contains("javascript"));
    let etag = h["etag"].to_str().unwrap().to_string();
    let req = Request::get("/app.js")
        .header("host", "localhost:8443")
        .header("if-none-match", &etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::NOT_MODIFIED);
    let req = Request::get("/app.js")
        .header("host", "localhost:8443")
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let (_, h, body) = call(&app, req).await;
    assert_eq!(h["content-encoding"], "gzip");
    assert!(body.len() < 3400);

    // Byte ranges, which Safari asks of a <video> or <audio> and needs to play it: 206
    // with the bytes asked for, 416 past the end; the whole file (streamed) otherwise.
    let clip: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.join("clip.mp4"), &clip).unwrap();
    let ranged = |range: &str| {
        Request::get("/clip.mp4")
            .header("host", "localhost:8443")
            .header("range", range)
            .body(Body::empty())
            .unwrap()
    };
    let (s, h, body) = call(&app, ranged("bytes=1000-1999")).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-range"], "bytes 1000-1999/3000000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(body, &clip[1000..2000]);
    assert!(h["etag"].to_str().unwrap().starts_with("W/"), "{h:?}");
    assert_eq!(h["cache-control"], "no-cache");
    let (s, _, body) = call(&app, ranged("bytes=-10")).await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &clip[clip.len() - 10..])
    );
    let (s, h, _) = call(&app, ranged("bytes=5000000-")).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], "bytes */3000000");
    assert_eq!(
        h["etag"],
        etag_of_clip(&app).await,
        "one validator in every answer"
    );
    // A range only "if still the same file" (If-Range) gets the whole file: its
    // validator is weak, so it never proves that.
    let req = Request::get("/clip.mp4")
        .header("host", "localhost:8443")
        .header("range", "bytes=0-9")
        .header("if-range", etag_of_clip(&app).await)
        .body(Body::empty())
        .unwrap();
    let (s, _, body) = call(&app, req).await;
    assert_eq!((s, body.len()), (StatusCode::OK, clip.len()));
    // Media is not compressed (it is already, and a compressed answer has no ranges).
    let req = Request::get("/clip.mp4")
        .header("host", "localhost:8443")
        .header("accept-encoding", "gzip, br")
        .body(Body::empty())
        .unwrap();
    let (s, h, body) = call(&app, req).await;
    assert_eq!((s, body.len()), (StatusCode::OK, clip.len()));
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    assert_eq!(h["accept-ranges"], "bytes");
    let (s, h, body) = call(&app, get("/clip.mp4")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "video/mp4");
    assert_eq!(h["content-length"], "3000000");
    assert!(body == clip, "the whole file, byte for byte");
    let head = Request::head("/clip.mp4")
        .header("host", "localhost:8443")
        .body(Body::empty())
        .unwrap();
    let (s, h, body) = call(&app, head).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 0));
    assert_eq!(h["content-length"], "3000000");

    for attack in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub%5c..%5c..%5csecret.txt",
        "/leak.txt",
        "/%00",
    ] {
        let (s, _, body) = call(&app, get(attack)).await;
        assert!(
            s == StatusCode::NOT_FOUND || s == StatusCode::BAD_REQUEST,
            "{attack}: {s}"
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("top secret"),
            "{attack}"
        );
    }
    assert!(serve::content_dir(&sb.path().join("missing")).is_err());
}

struct Running {
    addr: std::net::SocketAddr,
    ca: Ca,
    lan: Arc<Mutex<Vec<IpAddr>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A serve config on 127.0.0.1 with the sandbox's CA, quiet, no QR.
fn test_config(
    sb: &Sandbox,
    content: Content,
    embedded_turn: Option<rtcdev::turn::TurnConfig>,
    lan: Arc<dyn Fn() -> Vec<IpAddr> + Send + Sync>,
) -> ServeConfig {
    ServeConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        port_explicit: true,
        room: "test-room".into(),
        content,
        tls: TlsSource::LocalCa(CaLocation {
            dir: sb.ca_dir(),
            source: CaSource::Explicit,
        }),
        hub: HubConfig::default(),
        allow_origins: vec![],
        allowed_hosts: vec![],
        qr: QrMode::Never,
        quiet: true,
        open: false,
        json: false,
        lan_poll: Duration::from_millis(100),
        lan,
        embedded_turn,
    }
}

async fn start(sb: &Sandbox, lan: Vec<IpAddr>) -> Running {
    start_with(sb, lan, Content::Bundled).await
}

async fn start_with(sb: &Sandbox, lan: Vec<IpAddr>, content: Content) -> Running {
    start_full(sb, lan, content, None).await
}

async fn start_full(
    sb: &Sandbox,
    lan: Vec<IpAddr>,
    content: Content,
    embedded_turn: Option<rtcdev::turn::TurnConfig>,
) -> Running {
    let lan = Arc::new(Mutex::new(lan));
    let source = lan.clone();
    let config = test_config(
        sb,
        content,
        embedded_turn,
        Arc::new(move || source.lock().unwrap().clone()),
    );
    let listener = rtcdev::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve::run_on(listener, config, async move {
        let _ = stopped.await;
    }));
    // The CA exists once the server answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(ca) = Ca::load(&sb.ca_dir())
            && tokio::net::TcpStream::connect(addr).await.is_ok()
        {
            return Running {
                addr,
                ca,
                lan,
                stop: Some(stop),
                task,
            };
        }
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn https_and_plain_http_share_one_port() {
    let sb = Sandbox::new();
    let mut run = start(&sb, vec![]).await;
    let der = run.ca.cert_der.to_vec();
    let page = https_request(run.addr, "localhost", &der, &get_head("/"))
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(page.text().contains("rtcdev call"));
    let health = https_request(run.addr, "127.0.0.1", &der, &get_head("/healthz"))
        .await
        .unwrap();
    assert!(health.text().contains("\"peers\":0"));
    let ca = https_request(run.addr, "localhost", &der, &get_head("/ca.pem"))
        .await
        .unwrap();
    assert_eq!(ca.body, run.ca.cert_pem.as_bytes());

    // Plain HTTP on the same port: onboarding, and a redirect for the rest.
    let join = http_request(
        run.addr,
        "GET /join?room=x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(join.status, 200);
    assert!(join.text().contains("Join room"));
    let redirect = http_request(
        run.addr,
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1:1234\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(redirect.status, 307);
    assert_eq!(
        redirect.header("location"),
        Some("https://127.0.0.1:1234/x")
    );

    // A client that does not trust the CA is refused.
    let (other, _) = Ca::load_or_create(&sb.path().join("other-ca")).unwrap();
    assert!(
        https_request(run.addr, "localhost", &other.cert_der, &get_head("/"))
            .await
            .is_err()
    );
    let _ = run.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(10), &mut run.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn certificate_follows_the_lan_addresses_without_a_restart() {
    let sb = Sandbox::new();
    // Private addresses (a new CA is name-constrained to such ranges).
    let first: IpAddr = "10.0.2.41".parse().unwrap();
    let second: IpAddr = "10.0.3.42".parse().unwrap();
    let run = start(&sb, vec![first]).await;
    let der = run.ca.cert_der.to_vec();
    // The TCP connection goes to 127.0.0.1; only certificate verification uses the
    // other addresses, so no packet leaves the machine.
    assert!(
        https_request(run.addr, &first.to_string(), &der, &get_head("/healthz"))
            .await
            .is_ok()
    );
    assert!(
        https_request(run.addr, &second.to_string(), &der, &get_head("/healthz"))
            .await
            .is_err()
    );

    // An open connection keeps working across the swap.
    let mut open = common::tls_connect(run.addr, &first.to_string(), &der).await;

    *run.lan.lock().unwrap() = vec![second];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while https_request(run.addr, &second.to_string(), &der, &get_head("/healthz"))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no swap");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        https_request(run.addr, &first.to_string(), &der, &get_head("/healthz"))
            .await
            .is_err()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    open.write_all(get_head("/healthz").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    open.read_to_end(&mut raw).await.unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    // The leaf is cached in the CA directory and reused by the next start.
    assert!(sb.ca_dir().join(serve::certs::CACHE_FILE).exists());
}

#[tokio::test]
async fn garbage_and_half_open_connections_do_not_hurt() {
    let sb = Sandbox::new();
    let run = start(&sb, vec![]).await;
    let der = run.ca.cert_der.to_vec();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Half-open: connected, nothing sent (bounded: 50).
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(run.addr).await.unwrap());
    }
    // A TLS connection that completes its handshake and never sends a request.
    let mut silent = common::tls_connect(run.addr, "localhost", &der).await;
    let silent_since = std::time::Instant::now();
    // A TLS record header followed by garbage, and raw binary noise.
    for junk in [
        &b"\x16\x03\x01\x00\x05hello-not-tls"[..],
        &[0u8, 1, 2, 255, 254, 13, 10, 13, 10][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(run.addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("closed");
    }
    // A huge header.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    // Written while the answer is read, so the server's early 431 (and its close) is
    // seen even if the rest of the write then fails.
    let tls = common::tls_connect(run.addr, "localhost", &der).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let (_, answer) = tokio::join!(
        async move {
            let _ = wr.write_all(huge.as_bytes()).await;
        },
        async move {
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut buf)).await;
            String::from_utf8_lossy(&buf).into_owned()
        }
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    // Still serving.
    let ok = https_request(run.addr, "localhost", &der, &get_head("/healthz"))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    // The half-open connections are closed by the handshake timeout, not held for good.
    let limit = rtcdev::server::HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    for mut s in idle {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(limit, s.read(&mut buf))
            .await
            .expect("an idle connection was never closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // And the silent TLS one by the first-request timeout.
    let limit = rtcdev::server::FIRST_REQUEST_TIMEOUT + Duration::from_secs(5);
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(
        limit.saturating_sub(silent_since.elapsed()),
        silent.read(&mut buf),
    )
    .await
    .expect("a TLS connection without a request was never closed")
    .unwrap_or(0);
    assert_eq!(n, 0);
}

/// The upstream sees the client's Host and address, never what the client claims in
/// forwarding headers, over HTTP/1.1 and HTTP/2 (curl, real TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_come_from_the_connection_not_the_client() {
    common::require("curl", "curl");
    let upstream = axum::Router::new().route(
        "/headers",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            let mut v: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                .collect();
            v.sort();
            v.join("\n")
        }),
    );
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(up, upstream).await.unwrap() });
    let sb = Sandbox::new();
    let proxy = serve::proxy::Proxy::new(&format!("http://{up_addr}")).unwrap();
    let run = start_with(&sb, vec![], Content::Proxy(Box::new(proxy))).await;
    let ca = sb.path().join("ca.pem");
    std::fs::write(&ca, &run.ca.cert_pem).unwrap();
    let port = run.addr.port();
    for version in ["--http1.1", "--http2"] {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-w",
                "\nversion %{http_version}",
                version,
                "--cacert",
            ])
            .arg(&ca)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-H", "X-Forwarded-For: 6.6.6.6"])
            .args(["-H", "X-Forwarded-Host: evil.example"])
            .args(["-H", "X-Forwarded-Proto: gopher"])
            .args(["-H", "X-Real-IP: 6.6.6.6"])
            .args(["-H", "Forwarded: for=6.6.6.6;host=evil.example"])
            .args(["-H", "X-Forwarded-Prefix: /evil-prefix"])
            .args(["-H", "X-Forwarded-Ssl: evil-ssl"])
            .args(["-H", "X-Forwarded-Scheme: evil-scheme"])
            .arg(format!("https://localhost:{port}/headers"))
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let want = if version == "--http2" {
            "version 2"
        } else {
            "version 1.1"
        };
        assert!(text.ends_with(want), "{version}: {text}");
        for set in [
            format!("host: localhost:{port}"),
            "x-forwarded-for: 127.0.0.1".to_string(),
            format!("x-forwarded-host: localhost:{port}"),
            "x-forwarded-proto: https".to_string(),
        ] {
            assert!(text.contains(&set), "{version}: {set} missing: {text}");
        }
        for claim in [
            "6.6.6.6",
            "evil.example",
            "gopher",
            "x-real-ip",
            "forwarded: ",
            "evil-prefix",
            "evil-ssl",
            "evil-scheme",
        ] {
            assert!(
                !text.contains(claim),
                "{version}: {claim} passed through: {text}"
            );
        }
    }
}

#[tokio::test]
async fn proxy_forwards_http_and_websocket_upgrades() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // A dev server stand-in: a page and an HMR-style WebSocket echo.
    let upstream = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                format!(
                    "hi from upstream, host {}",
                    headers["host"].to_str().unwrap()
                )
            }),
        )
        .route(
            "/hmr",
            axum::routing::get(|ws: axum::extract::WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let axum::extract::ws::Message::Text(t) = msg {
                            let _ = socket
                                .send(axum::extract::ws::Message::Text(format!("echo {t}").into()))
                                .await;
                        }
                    }
                })
            }),
        );
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(up, upstream).await.unwrap() });

    let sb = Sandbox::new();
    let proxy = serve::proxy::Proxy::new(&format!("http://{up_addr}")).unwrap();
    let run = start_with(&sb, vec![], Content::Proxy(Box::new(proxy))).await;
    let der = run.ca.cert_der.to_vec();
    let res = https_request(run.addr, "localhost", &der, &get_head("/hello"))
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        "hi from upstream, host localhost",
        "the client's Host goes through"
    );
    // rtcdev's own routes are not forwarded.
    let res = https_request(run.addr, "localhost", &der, &get_head("/healthz"))
        .await
        .unwrap();
    assert!(res.text().contains("uptime_secs"));

    // wss:// through rtcdev to the upstream's ws://.
    let tls = common::tls_connect(run.addr, "localhost", &der).await;
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/hmr", run.addr.port()), tls)
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("ping")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.into_text().unwrap().as_str(), "echo ping");

    // An upstream that is gone: 502 naming it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let sb2 = Sandbox::new();
    let run2 = start_with(
        &sb2,
        vec![],
        Content::Proxy(Box::new(
            serve::proxy::Proxy::new(&format!("http://{dead}")).unwrap(),
        )),
    )
    .await;
    let res = https_request(run2.addr, "localhost", &run2.ca.cert_der, &get_head("/"))
        .await
        .unwrap();
    assert_eq!(res.status, 502);
    assert!(res.text().contains(&dead.to_string()), "{}", res.text());
}

#[tokio::test]
async fn embedded_turn_server_is_in_config_json_and_relays() {
    let sb = Sandbox::new();
    let turn = rtcdev::turn::TurnConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        realm: "rtcdev".into(),
        users: vec![],
        secret: Some("embedded-secret".into()),
        external_ip: None,
        relay_ports: (53000, 53100),
        tls: None,
        rest_ttl: rtcdev::ice::DEFAULT_TURN_CREDENTIAL_TTL,
        guard: rtcdev::turn::GuardConfig {
            allow_loopback_peers: true,
            ..Default::default()
        },
    };
    let run = start_full(&sb, vec![], Content::Bundled, Some(turn)).await;
    let res = https_request(
        run.addr,
        "localhost",
        &run.ca.cert_der,
        &get_head("/config.json"),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    let targets = rtcdev::probe::parse_ice_servers(&v.to_string(), "config.json").unwrap();
    assert!(
        targets
            .iter()
            .any(|t| t.url.scheme == "turn"
                && t.username.as_deref().is_some_and(|u| u.contains(':'))),
        "{v}"
    );
    let report = rtcdev::probe::run(
        &rtcdev::probe::ProbeConfig {
            targets,
            // Generous: what is checked is that every step passes, not how fast.
            timeout: Duration::from_secs(10),
            ca_dir: None,
        },
        None,
    )
    .await;
    assert!(report.ok(), "{}", report.table());
    assert!(
        report
            .servers
            .iter()
            .any(|r| r.relay_echoes == Some(rtcdev::probe::RELAY_ECHOES))
    );
    // The hub's welcome on /ws carries the same TURN server, with REST credentials made
    // for that peer from the embedded server's secret.
    use futures_util::StreamExt;
    let tls = common::tls_connect(run.addr, "localhost", &run.ca.cert_der).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", run.addr.port()), tls)
            .await
            .unwrap();
    let welcome = match tokio::time::timeout(common::WAIT, ws.next()).await {
        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
            serde_json::from_str::<serde_json::Value>(&t).unwrap()
        }
        other => panic!("no welcome: {other:?}"),
    };
    let id = welcome["id"].as_str().unwrap();
    // The iceServers entry of the TURN URLs.
    let turn_entry = |config: &serde_json::Value| {
        config["iceServers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["urls"][0]
                    .as_str()
                    .is_some_and(|u| u.starts_with("turn:"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no TURN server in {config}"))
    };
    let turn = turn_entry(&welcome);
    let user = turn["username"].as_str().unwrap();
    assert!(user.ends_with(&format!(":{id}")), "{user}");
    assert_eq!(
        turn["credential"].as_str().unwrap(),
        rtcdev::ice::turn_rest_password("embedded-secret", user)
    );
    assert_eq!(turn["urls"], turn_entry(&v)["urls"]);
}

/// Ctrl-C or SIGTERM on `serve`: an open WebSocket (over TLS) gets close 1001, and the
/// server then ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_1001() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let sb = Sandbox::new();
    let mut run = start(&sb, vec![]).await;
    let port = run.addr.port();
    let tls = common::tls_connect(run.addr, "localhost", &run.ca.cert_der).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls)
        .await
        .unwrap();
    // A socket.io peer on the same port, connected to the main namespace.
    let tls = common::tls_connect(run.addr, "localhost", &run.ca.cert_der).await;
    let (mut sio, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/socket.io/?EIO=4&transport=websocket"),
        tls,
    )
    .await
    .unwrap();
    let text = |m: Option<Result<Message, _>>| match m {
        Some(Ok(Message::Text(t))) => Some(t.to_string()),
        _ => None,
    };
    let open = text(sio.next().await).expect("an open packet");
    assert!(open.starts_with("0{"), "{open}");
    futures_util::SinkExt::send(&mut sio, Message::text("40"))
        .await
        .unwrap();
    // An Engine.IO ping ("2") may come first on a busy machine: answered, and skipped.
    let connected = loop {
        let t = text(sio.next().await).expect("a namespace connect");
        if t != "2" {
            break t;
        }
        futures_util::SinkExt::send(&mut sio, Message::text("3"))
            .await
            .unwrap();
    };
    assert!(connected.starts_with("40"), "{connected}");

    run.stop.take().unwrap().send(()).unwrap();
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Message::Close(c) = msg {
            code = c.map(|c| u16::from(c.code));
            break;
        }
    }
    assert_eq!(code, Some(1001), "going away");
    // The socket.io peer is told it is disconnected (a namespace disconnect or an
    // Engine.IO close) before its connection ends.
    let mut told = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), sio.next()).await {
        match msg {
            Message::Text(t) if t.as_str() == "41" || t.as_str() == "1" => told.push(t.to_string()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(!told.is_empty(), "a disconnect packet before the close");
    tokio::time::timeout(Duration::from_secs(15), &mut run.task)
        .await
        .expect("the server ended")
        .unwrap()
        .unwrap();
}

#[test]
fn a_taken_default_port_falls_back_at_most_ten_ports() {
    let sb = Sandbox::new();
    // A run of twelve free ports to play with.
    let base = (20000..60000u16)
        .step_by(97)
        .find(|&p| (p..p + 12).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("twelve free ports in a row");
    let mut config = test_config(&sb, Content::Bundled, None, Arc::new(Vec::new));
    config.port = base;
    config.port_explicit = false;
    let mut held: Vec<std::net::TcpListener> = (base..=base + serve::PORT_TRIES)
        .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).unwrap())
        .collect();
    let err = format!("{:#}", serve::bind(&config).unwrap_err());
    assert!(
        err.contains(&format!(
            "ports {base} to {} are all in use",
            base + serve::PORT_TRIES
        )),
        "{err}"
    );
    // The last one it may try is taken when free.
    held.pop();
    let l = serve::bind(&config).expect("the tenth port after the default");
    assert_eq!(l.local_addr().unwrap().port(), base + serve::PORT_TRIES);
    drop(l);
    // A port the user chose is not swapped for another.
    config.port_explicit = true;
    let err = format!("{:#}", serve::bind(&config).unwrap_err());
    assert!(
        err.contains(&format!("port {base} on 127.0.0.1 is in use")),
        "{err}"
    );
}

/// The join page (plain HTTP) asks `https://same-host/trust-check` whether this device
/// trusts the CA: 204, never cached, readable by that plain-HTTP origin of the same
/// host and by no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_check_answers_the_join_page_over_https() {
    let sb = Sandbox::new();
    let run = start(&sb, vec![]).await;
    let der = run.ca.cert_der.to_vec();
    let port = run.addr.port();
    let ask = |origin: String| {
        format!(
            "GET /trust-check HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
        )
    };
    let own = format!("http://localhost:{port}");
    let r = https_request(run.addr, "localhost", &der, &ask(own.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("access-control-allow-origin"), Some(own.as_str()));
    let foreign = https_request(
        run.addr,
        "localhost",
        &der,
        &ask("http://evil.example".into()),
    )
    .await
    .unwrap();
    assert!(
        foreign.header("access-control-allow-origin").is_none(),
        "{:?}",
        foreign.headers
    );
}

/// The ICE test page is rtcdev's own, whatever `serve` serves besides; what devices
/// report from it is checked (origin, size, shape, rate) before it reaches the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_test_page_and_its_reports() {
    let sb = Sandbox::new();
    let (st, _ca) = state(
        &sb,
        Content::Dir {
            root: sb.path().to_path_buf(),
            hidden: false,
        },
    );
    let app = serve::router(st, &[], &[]).unwrap();
    let (s, h, body) = call(&app, get("/ice")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&body).contains("ICE test"));
    let (s, h, _) = call(&app, get("/ice/ice.js")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().contains("javascript"));

    let post = |body: Vec<u8>, origin: Option<&str>| {
        let mut r = Request::post("/ice/report")
            .header("host", "192.0.2.10:8443")
            .header("content-type", "application/json");
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.body(Body::from(body)).unwrap()
    };
    let report = br#"{"device":"test","results":[{"url":"stun:192.0.2.10:3478","verdict":"ok","detail":"mapped address 192.0.2.99:4000","ms":12}]}"#.to_vec();
    let (s, _, body) = call(&app, post(report.clone(), Some("https://evil.example"))).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (s, _, body) = call(&app, post(b"{\"results\":3}".to_vec(), None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("not an ICE test report"));
    let (s, _, _) = call(&app, post(vec![b' '; 20 * 1024], None)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // The page's own origin posts; past 20 a minute the rest wait.
    let own = Some("https://192.0.2.10:8443");
    for i in 0..20 {
        let (s, _, body) = call(&app, post(report.clone(), own)).await;
        assert_eq!(
            s,
            StatusCode::NO_CONTENT,
            "report {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (s, _, _) = call(&app, post(report, own)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

/// The room inspector holds the devices' addresses: its view is for this machine only,
/// while any page of the origin may report to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_is_for_this_machine_only() {
    let sb = Sandbox::new();
    let (st, _ca) = state(&sb, Content::Bundled);
    let app = serve::router(st, &[], &[]).unwrap();
    let from = |path: &str, ip: &str| {
        let mut r = get(path);
        let addr: std::net::SocketAddr = format!("{ip}:50000").parse().unwrap();
        r.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        r
    };
    for path in ["/inspect", "/inspect/state.json"] {
        let (s, _, body) = call(&app, from(path, "192.0.2.77")).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(String::from_utf8_lossy(&body).contains("this machine only"));
        let (s, _, _) = call(&app, get(path)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path} from an unknown address");
    }
    let report = br#"{"room":"r1","id":"a","name":"Ann","events":[{"peer":"b","at":1,"kind":"connection","detail":"connected"}],"peers":[{"peer":"b","state":"connected","kbpsIn":800}]}"#;
    let mut post = Request::post("/inspect/report")
        .header("host", "192.0.2.10:8443")
        .header("origin", "https://192.0.2.10:8443")
        .body(Body::from(report.to_vec()))
        .unwrap();
    post.extensions_mut().insert(axum::extract::ConnectInfo(
        "192.0.2.77:50000".parse::<std::net::SocketAddr>().unwrap(),
    ));
    let (s, _, _) = call(&app, post).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // From this machine: a loopback address, under a loopback name. A proxy here (the
    // nginx site `--print-nginx` writes) connects from loopback for anyone: what it
    // relays says so, or carries the name the client used.
    let here = |path: &str, ip: &str, host: &str| {
        let mut r = from(path, ip);
        r.headers_mut().insert("host", host.parse().unwrap());
        r
    };
    for (header, value) in [
        ("x-forwarded-for", "192.0.2.77"),
        ("forwarded", "for=192.0.2.77"),
        ("x-real-ip", "192.0.2.77"),
        ("x-forwarded-proto", "https"),
    ] {
        let mut r = here("/inspect/state.json", "127.0.0.1", "localhost:8443");
        r.headers_mut().insert(header, value.parse().unwrap());
        let (s, _, _) = call(&app, r).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "relayed with {header}");
    }
    for host in ["192.0.2.10:8443", "laptop.local:8443"] {
        let (s, _, _) = call(&app, here("/inspect/state.json", "127.0.0.1", host)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "from loopback under {host}");
    }
    let (s, _, body) = call(
        &app,
        here("/inspect/state.json", "127.0.0.1", "localhost:8443"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let side = &v["rooms"]["r1"]["a"];
    assert_eq!(side["name"], "Ann");
    assert_eq!(side["from"], "192.0.2.77");
    assert_eq!(side["connections"]["b"]["state"], "connected");
    assert_eq!(side["connections"]["b"]["summary"]["kbpsIn"], 800);
    for host in ["[::1]:8443", "127.0.0.1:8443"] {
        let (s, _, _) = call(&app, here("/inspect", "[::1]", host)).await;
        assert_eq!(s, StatusCode::OK, "{host}");
    }
    // A link from another site to the page may be followed; a page of another site
    // cannot fetch the state without saying its origin.
    let fetch = |path: &str, mode: &str| {
        let mut r = here(path, "127.0.0.1", "localhost:8443");
        r.headers_mut()
            .insert("sec-fetch-site", "cross-site".parse().unwrap());
        r.headers_mut()
            .insert("sec-fetch-mode", mode.parse().unwrap());
        r
    };
    assert_eq!(
        call(&app, fetch("/inspect", "navigate")).await.0,
        StatusCode::OK
    );
    for (path, mode) in [
        ("/inspect/state.json", "no-cors"),
        ("/inspect/state.json", "navigate"),
    ] {
        assert_eq!(
            call(&app, fetch(path, mode)).await.0,
            StatusCode::FORBIDDEN,
            "{path} {mode}"
        );
    }
}

/// Asking for the echo peer: only pages of the origin may, for a room someone is in,
/// one echo per room, at most `echo::MAX_ECHOES` at once, at the per-address join rate;
/// each refusal says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_requests_are_checked() {
    struct Nobody;
    impl rtcdev::hub::core::PeerSink for Nobody {
        fn deliver(&self, _: &rtcdev::hub::core::Event) {}
    }
    let sb = Sandbox::new();
    let (ca, _) = Ca::load_or_create(&sb.ca_dir()).unwrap();
    let hub = Hub::new(HubConfig::default());
    let st = AppState::new(
        hub.clone(),
        Some(ca_info(&ca)),
        Content::Bundled,
        8443,
        "lobby1".into(),
        vec!["192.0.2.10".parse().unwrap()],
    );
    // webrtc-rs gathers on loopback only, as `serve --bind 127.0.0.1` makes it.
    st.set_bind("127.0.0.1".parse().unwrap());
    let app = serve::router(st, &[], &[]).unwrap();
    let post = |body: &str, origin: &str, ip: &str| {
        let mut r = Request::post("/echo")
            .header("host", "192.0.2.10:8443")
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let addr: std::net::SocketAddr = format!("{ip}:50000").parse().unwrap();
        r.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        r
    };
    let own = "https://192.0.2.10:8443";
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let (s, _, _) = call(
        &app,
        post(r#"{"room":"r1"}"#, "https://evil.example", "192.0.2.5"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, body) = call(&app, post("{", own, "192.0.2.5")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        text(&body).contains("not an echo request"),
        "{}",
        text(&body)
    );
    let (s, _, _) = call(&app, post(&" ".repeat(4096), own, "192.0.2.5")).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, _) = call(&app, post(r#"{"room":"no spaces"}"#, own, "192.0.2.5")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, body) = call(&app, post(r#"{"room":"r1"}"#, own, "192.0.2.5")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        text(&body).contains("nobody is in room r1"),
        "{}",
        text(&body)
    );

    // A page in each of rooms r0..r4 (a peer that never answers).
    let rooms = hub.rooms().clone();
    for i in 0..=rtcdev::echo::MAX_ECHOES {
        let id = rtcdev::hub::protocol::PeerId::random();
        rooms.connect(id.clone(), Arc::new(Nobody));
        let room = rtcdev::hub::protocol::RoomName::parse(&format!("r{i}")).unwrap();
        rooms
            .join(&id, room, Arc::new(serde_json::json!({})))
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..rtcdev::echo::MAX_ECHOES {
        let (s, _, body) = call(
            &app,
            post(&format!(r#"{{"room":"r{i}"}}"#), own, "192.0.2.6"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", text(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["already"], false);
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // The same room again: the echo already there.
    let (s, _, body) = call(
        &app,
        post(r#"{"room":"r0","relay":true}"#, own, "192.0.2.6"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["id"].as_str().unwrap(), v["already"].as_bool()),
        (ids[0].as_str(), Some(true))
    );
    assert_eq!(hub.stats().peers, 2 * rtcdev::echo::MAX_ECHOES + 1);
    let last = format!(r#"{{"room":"r{}"}}"#, rtcdev::echo::MAX_ECHOES);
    let (s, _, body) = call(&app, post(&last, own, "192.0.2.6")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text(&body).contains("at most 4 echo peers"),
        "{}",
        text(&body)
    );

    // Asks are joins: one address past its join rate waits.
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let (s, _, _) = call(&app, post(r#"{"room":"r0"}"#, own, "192.0.2.7")).await;
        statuses.push(s);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    hub.shutdown().await;
}
