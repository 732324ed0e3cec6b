//! Phone onboarding: the plain-HTTP `/join` page the QR code points at, which sends a
//! device that trusts the local CA straight to the HTTPS call and shows one that does
//! not how to install it (`/ca.pem`, `/ca.mobileconfig`), and `/trust-check`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;

use super::CaInfo;

const JOIN_TEMPLATE: &str = include_str!("../../templates/join.html");
const MOBILECONFIG_TEMPLATE: &str = include_str!("../../templates/ca.mobileconfig");

/// Escapes text for HTML and for a single-quoted JS string inside it.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\\' => out.push_str("&#92;"),
            c => out.push(c),
        }
    }
    out
}

/// The host (and port) the request came in on, if it looks like one; the page
/// builds its HTTPS link from it: the name the host check read
/// ([`crate::server::origin::request_authority`]).
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = crate::server::origin::request_authority(uri, headers)?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    ok.then(|| host.to_string())
}

/// The `/join` page for `room`, linking to `https_base` (`https://host:port`).
pub fn join_page(room: &str, https_base: &str, host: &str, ca: Option<&CaInfo>) -> Response {
    let ca_name = ca.map_or("the server's CA", |c| c.name.as_str());
    let html = JOIN_TEMPLATE
        .replace("{{ROOM}}", &escape(room))
        .replace("{{HTTPS_BASE}}", &escape(https_base))
        .replace("{{HOST}}", &escape(host))
        .replace("{{CA_NAME}}", &escape(ca_name))
        .replace(
            "{{FINGERPRINT}}",
            &ca.map_or_else(
                || "(not rtcdev's CA)".to_string(),
                |c| crate::cert::ca::fingerprint_groups(&c.der),
            ),
        );
    let mut r = Html(html).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `/ca.pem`: the CA certificate for Android and desktops.
pub fn ca_pem(ca: Option<&CaInfo>) -> Response {
    let Some(ca) = ca else { return no_local_ca() };
    download(
        ca.pem.clone(),
        "application/x-x509-ca-cert",
        "attachment; filename=\"rtcdev-rootCA.crt\"",
    )
}

/// `/ca.mobileconfig`: an iOS configuration profile carrying the CA. iOS saves a
/// plain .crt from Safari as .html; a profile is what it installs.
pub fn mobileconfig(ca: Option<&CaInfo>) -> Response {
    let Some(ca) = ca else { return no_local_ca() };
    let body = MOBILECONFIG_TEMPLATE
        .replace(
            "{{CA_DER_BASE64}}",
            &base64::engine::general_purpose::STANDARD.encode(&ca.der),
        )
        .replace("{{CA_NAME}}", &escape(&ca.name))
        .replace(
            "{{FINGERPRINT}}",
            &crate::cert::ca::fingerprint_sha256(&ca.der),
        )
        .replace("{{SERIAL}}", &ca.serial)
        .replace("{{HOST}}", &escape(&crate::cert::ca::hostname()))
        .replace("{{CERT_UUID}}", &uuid_from(&ca.der, b"cert"))
        .replace("{{PROFILE_UUID}}", &uuid_from(&ca.der, b"profile"));
    download(
        body,
        "application/x-apple-aspen-config",
        "attachment; filename=\"rtcdev-ca.mobileconfig\"",
    )
}

/// A file to save, with its type and name.
fn download(body: String, content_type: &'static str, disposition: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(disposition),
    );
    r
}

/// A UUID derived from the CA, so downloading the profile again replaces the same one.
fn uuid_from(der: &[u8], salt: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(der);
    let d = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 style (name-based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn no_local_ca() -> Response {
    (
        StatusCode::NOT_FOUND,
        "this server uses a certificate given with --cert/--key, not rtcdev's local CA; get its CA from whoever issued it\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_break_out() {
        assert_eq!(
            escape("<a href='x'>&\"\\"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&#92;"
        );
    }

    #[test]
    fn host_header_is_validated() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("192.0.2.1:8443"));
        assert_eq!(
            request_host(&Uri::from_static("/join"), &h).as_deref(),
            Some("192.0.2.1:8443")
        );
        // The authority the host check read wins over a Host that says otherwise.
        let absolute = Uri::from_static("http://192.0.2.9:8443/join");
        h.insert(header::HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(
            request_host(&absolute, &h).as_deref(),
            Some("192.0.2.9:8443")
        );
        h.insert(header::HOST, HeaderValue::from_static("evil'><script>"));
        assert_eq!(request_host(&Uri::from_static("/join"), &h), None);
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_from(b"der", b"cert");
        assert_eq!(a, uuid_from(b"der", b"cert"));
        assert_ne!(a, uuid_from(b"der", b"profile"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
    }
}
