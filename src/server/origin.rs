//! Which web pages may use rtcdev, and under which host names it answers, as Vite
//! 6.0.9 does it after CVE-2025-24010:
//!
//! - **Origins.** A page in another tab is a client too: the browser sends its
//!   `Origin` with every cross-origin request and every WebSocket upgrade. `serve`
//!   allows by default only its own origins (every URL it prints: localhost, this
//!   host's addresses, its names, on its port) plus `--allow-origin`; the hub's
//!   WebSocket upgrades and socket.io requests (both transports) from other origins
//!   get 403. `signal`, a public hub behind someone's app, allows any origin unless
//!   `--allow-origin` is given, and says so. CORS never carries credentials.
//! - **Hosts.** A request whose `Host` is not an IP literal, `localhost` (or a
//!   `.localhost` name), one of this host's names or an `--allowed-host` gets 403: a
//!   DNS-rebinding page cannot reach `serve` under its own name.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// Browsers may cache a CORS preflight this long.
const CORS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// This machine's addresses now (they change with the network).
pub type Addresses = Arc<dyn Fn() -> Vec<IpAddr> + Send + Sync>;

/// Which origins may use the server and which host names it answers to.
#[derive(Clone)]
pub struct Policy {
    own: Option<Own>,
    allowed_origins: Arc<Vec<String>>,
    allowed_hosts: Option<Arc<Vec<String>>>,
}

/// A server's own origins: its port on localhost, its addresses and its names.
#[derive(Clone)]
struct Own {
    port: u16,
    addresses: Addresses,
    names: Arc<Vec<String>>,
}

impl Policy {
    /// `serve`: its own origins and `allow_origins`; host names checked, with
    /// `allowed_hosts` added to this host's.
    pub fn own(
        port: u16,
        addresses: Addresses,
        allow_origins: &[String],
        allowed_hosts: &[String],
    ) -> Self {
        let names = host_names();
        let mut hosts: Vec<String> = names.clone();
        hosts.extend(allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()));
        Policy {
            own: Some(Own {
                port,
                addresses,
                names: Arc::new(names),
            }),
            allowed_origins: Arc::new(normalize(allow_origins)),
            allowed_hosts: Some(Arc::new(hosts)),
        }
    }

    /// `signal`: any origin, or only `allow_origins` when given; any host name, or
    /// with `allowed_hosts` only IPs, localhost, this host's names and those.
    pub fn public(allow_origins: &[String], allowed_hosts: &[String]) -> Self {
        let hosts = (!allowed_hosts.is_empty()).then(|| {
            let mut h = host_names();
            h.extend(allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()));
            Arc::new(h)
        });
        Policy {
            own: None,
            allowed_origins: Arc::new(normalize(allow_origins)),
            allowed_hosts: hosts,
        }
    }

    /// Whether any origin may connect (a public hub without `--allow-origin`).
    pub fn any_origin(&self) -> bool {
        self.own.is_none() && self.allowed_origins.is_empty()
    }

    /// Whether a page of `origin` may use the server.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self.any_origin() {
            return true;
        }
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let Some(own) = &self.own else { return false };
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if scheme != "https" && scheme != "http" {
            return false;
        }
        let (host, port) = split_host_port(rest);
        let port = port.or(if scheme == "https" {
            Some(443)
        } else {
            Some(80)
        });
        if port != Some(own.port) {
            return false;
        }
        is_local_name(host)
            || own.names.iter().any(|n| n == host)
            || parse_ip(host).is_some_and(|ip| ip.is_loopback() || (own.addresses)().contains(&ip))
    }

    /// Whether the server answers under `host` (a `Host` header or an authority).
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(hosts) = &self.allowed_hosts else {
            return true;
        };
        // Lower-cased only when it has capitals: this runs for every request.
        let lower: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let name = split_host_port(&lower).0.trim_end_matches('.');
        parse_ip(name).is_some() || is_local_name(name) || hosts.iter().any(|h| h == name)
    }

    /// CORS for the routes other pages may call (the hub, `/config.json`): allowed
    /// origins are echoed, never with credentials; requested headers and methods are
    /// echoed explicitly, never `*`, which iOS Safari rejects.
    pub fn cors(&self) -> CorsLayer {
        let origin = if self.any_origin() {
            // Echoed rather than `*`: the same for a browser, and never a wildcard.
            AllowOrigin::mirror_request()
        } else {
            let policy = self.clone();
            AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin.to_str().is_ok_and(|o| policy.origin_allowed(o))
            })
        };
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(CORS_MAX_AGE)
    }
}

/// 403 for a request under a host name the server does not answer to (DNS
/// rebinding), before anything else sees it.
pub async fn check_host(State(policy): State<Policy>, req: Request, next: Next) -> Response {
    match refuse_host(&policy, &req) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// The host (and port) a request names: the request line's authority (HTTP/2, an
/// absolute URI), else its Host header. What the host check reads, and what a link
/// built from the request must use.
pub fn request_authority<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// The 403 of [`check_host`], when the request's host name is not one the server
/// answers to; for a front door that checks more than the host in one step.
pub fn refuse_host(policy: &Policy, req: &Request) -> Option<Response> {
    // One Host, or none where the request line carries the authority (HTTP/2, an
    // absolute URI): a second one could name another host than the one checked.
    let hosts = req.headers().get_all(header::HOST).iter().count();
    let missing =
        hosts == 0 && req.uri().authority().is_none() && req.version() == http::Version::HTTP_11;
    // HTTP/2 carries the host in `:authority`; a Host beside it must name the same one
    // (RFC 9113, 8.3.1), or a part that reads Host would act on an unchecked name.
    let differs = req.version() == http::Version::HTTP_2
        && req.uri().authority().is_some_and(|a| {
            req.headers()
                .get(header::HOST)
                .is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()))
        });
    if hosts > 1 || missing || differs {
        let why = if missing {
            "an HTTP/1.1 request needs a Host header"
        } else if differs {
            "the Host header names another host than :authority"
        } else {
            "a request may carry one Host header, not several"
        };
        return Some((StatusCode::BAD_REQUEST, format!("Bad request: {why}.\n")).into_response());
    }
    let host = match request_authority(req.uri(), req.headers()) {
        Some(host) => host,
        // A Host that is not ASCII text (browsers send names in punycode).
        None if req.headers().contains_key(header::HOST) => "",
        // HTTP/1.0 without a Host.
        None => return None,
    };
    if !well_formed_authority(host) {
        return Some(
            (
                StatusCode::BAD_REQUEST,
                "Bad request: the Host header is not a host name or address with an optional port.\n",
            )
                .into_response(),
        );
    }
    if policy.host_allowed(host) {
        return None;
    }
    let name = split_host_port(host).0;
    crate::info_limited!("host refused", host = %name, "refusing a request for a host name rtcdev does not answer to");
    Some(forbidden(format!(
        "Blocked request: this server does not answer to the host name {name:?}.\n\
         To allow it, restart rtcdev with --allowed-host {name}\n"
    )))
}

/// 403 for a request from a page of an origin that may not use the hub (WebSocket
/// upgrades and socket.io's requests carry the page's `Origin`), and for one a browser
/// says came from a page of another site that left `Origin` out: an image or a no-cors
/// fetch, which could otherwise open socket.io sessions that hold the user's own
/// connection places. Requests with neither (not from a browser page) pass, and so do
/// links followed to rtcdev's own pages (`/inspect`, `/ice`).
pub async fn check_origin(State(policy): State<Policy>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if !policy.origin_allowed(text) {
            crate::info_limited!("origin refused", origin = %text, "refusing the hub to a page of another origin (allow it with --allow-origin)");
            return forbidden(format!(
                "Blocked request: pages of {text} may not use this hub.\n\
                 To allow them, restart rtcdev with --allow-origin {text}\n"
            ));
        }
    } else if let Some(site) = foreign_without_origin(req.uri().path(), req.headers()) {
        crate::info_limited!("foreign request refused", sec_fetch_site = %site, "refusing a request a page of another site made without its Origin");
        return forbidden(format!(
            "Blocked request: a page of another site made it (Sec-Fetch-Site: {site}) \
             without saying its origin.\nPages that use this hub must send their Origin, \
             as WebSocket, fetch and XHR do.\n"
        ));
    }
    next.run(req).await
}

/// The `Sec-Fetch-Site` of a request without `Origin` that a browser made for a page of
/// another site (or that says so in a value it does not know), unless it is a
/// navigation to one of rtcdev's own pages (a link to `/inspect` or `/ice` followed).
/// `None` for a request of the page's own origin, one the user made (typed address,
/// bookmark), and one from outside a browser (no `Sec-Fetch-Site`). A navigation to
/// anything else (an iframe, `window.open` or a GET form aimed at the hub) is refused:
/// the hub would act on it before any framing rule could stop it.
fn foreign_without_origin(path: &str, headers: &HeaderMap) -> Option<String> {
    let site = headers.get("sec-fetch-site")?;
    if site == "same-origin" || site == "none" {
        return None;
    }
    let navigation = headers
        .get("sec-fetch-mode")
        .is_some_and(|m| m == "navigate");
    if navigation && PAGES.contains(&path) {
        return None;
    }
    // Shown in the log and the answer: printable ASCII only (a header may carry bytes
    // that decode to terminal control codes).
    Some(
        site.as_bytes()
            .iter()
            .take(40)
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect(),
    )
}

/// The HTML pages among the routes [`check_origin`] guards: a link to them from
/// elsewhere may be followed.
const PAGES: [&str; 2] = ["/inspect", "/ice"];

/// Whether a request comes from this machine itself: from a loopback address, for a
/// loopback name (`localhost`, `127.0.0.1`, `[::1]`), and not relayed by a proxy (which
/// connects from loopback for whoever is behind it, and says so in `Forwarded`,
/// `X-Forwarded-*` or `X-Real-IP`, or passes their host name on).
pub fn from_this_machine(req: &Request) -> bool {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if !peer.is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    let relayed = req.headers().keys().any(|k| {
        let k = k.as_str();
        k == "forwarded" || k == "x-real-ip" || k.starts_with("x-forwarded-")
    });
    if relayed {
        return false;
    }
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    host.is_some_and(|host| {
        let name = split_host_port(host)
            .0
            .trim_end_matches('.')
            .to_ascii_lowercase();
        is_local_name(&name) || parse_ip(&name).is_some_and(|ip| ip.is_loopback())
    })
}

fn forbidden(text: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Checks an `--allow-origin` value: `scheme://host[:port]`, no path.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let o = s.trim().trim_end_matches('/');
    let ok = o.split_once("://").is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && !rest.is_empty()
            && !rest.contains('/')
            && HeaderValue::from_str(o).is_ok()
    });
    if ok {
        Ok(o.to_string())
    } else {
        Err(format!(
            "{s:?} is not an origin; write it as scheme://host[:port], e.g. https://app.example:5173"
        ))
    }
}

/// This host's names (its host name and `<host>.local`), lowercase.
fn host_names() -> Vec<String> {
    let host = crate::cert::ca::hostname().to_ascii_lowercase();
    if host.is_empty() || host == "localhost" {
        return Vec::new();
    }
    vec![format!("{host}.local"), host]
}

fn normalize(origins: &[String]) -> Vec<String> {
    origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect()
}

/// `localhost` and `*.localhost` (RFC 6761: always this machine).
fn is_local_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// `host[:port]` as a Host header carries it (RFC 9110, 7.2): a name of unreserved
/// characters, an IPv4 address or a bracketed IPv6 one, and a port that fits in 16 bits.
fn well_formed_authority(s: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (v6.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let name = !host.is_empty()
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'));
        (name, port)
    };
    host_ok
        && port.is_none_or(|p| p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u16>().is_ok())
}

/// The host of `host[:port]` (an IPv6 address keeps its brackets).
pub fn host_name(authority: &str) -> &str {
    split_host_port(authority).0
}

/// `host[:port]` or `[v6][:port]` into the host (brackets kept for v6) and the port.
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if s.starts_with('[') {
        return match s.find(']') {
            Some(end) => (
                &s[..=end],
                s[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok()),
            ),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (s, None),
    }
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_drop_the_port_only() {
        assert_eq!(host_name("192.0.2.1:8443"), "192.0.2.1");
        assert_eq!(host_name("[fd00::1]:8443"), "[fd00::1]");
        assert_eq!(host_name("[fd00::1]"), "[fd00::1]");
        assert_eq!(host_name("laptop.local"), "laptop.local");
    }

    #[test]
    fn a_host_header_is_host_and_optional_port() {
        for ok in [
            "localhost",
            "localhost:8443",
            "192.0.2.1:1",
            "[::1]:8443",
            "[fd00::1]",
            "a_b.local:65535",
        ] {
            assert!(well_formed_authority(ok), "{ok}");
        }
        for bad in [
            "",
            ":8443",
            "[::1",
            "[::1]x",
            "[zz::1]:80",
            "a b",
            "localhost:",
            "localhost:65536",
            "localhost:+80",
            "user@localhost",
            "::1",
        ] {
            assert!(!well_formed_authority(bad), "{bad}");
        }
    }

    fn serve_policy() -> Policy {
        Policy::own(
            8443,
            Arc::new(|| vec!["192.168.1.20".parse().unwrap()]),
            &["https://app.example:3000/".into()],
            &["dev.test".into()],
        )
    }

    #[test]
    fn serve_allows_its_own_origins_and_the_listed_ones() {
        let p = serve_policy();
        for ok in [
            "https://localhost:8443",
            "http://localhost:8443",
            "https://127.0.0.1:8443",
            "https://[::1]:8443",
            "https://192.168.1.20:8443",
            "https://app.example:3000",
            "https://foo.localhost:8443",
        ] {
            assert!(p.origin_allowed(ok), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "https://evil.example:8443",
            "https://192.168.1.99:8443",
            "https://localhost:5173",
            "null",
            "file://",
            "https://localhost.evil.example:8443",
        ] {
            assert!(!p.origin_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn serve_answers_to_ips_localhost_its_names_and_listed_hosts() {
        let p = serve_policy();
        for ok in [
            "localhost:8443",
            "127.0.0.1:8443",
            "[::1]:8443",
            "10.0.0.5",
            "dev.test:8443",
            "DEV.TEST",
            "app.localhost",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8443",
            "localhost.evil.example",
            "attacker.rebind.network:8443",
        ] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn an_origin_without_a_port_has_its_schemes_default() {
        let p = Policy::own(443, Arc::new(Vec::new), &[], &[]);
        assert!(p.origin_allowed("https://localhost"));
        assert!(!p.origin_allowed("http://localhost"));
    }

    #[test]
    fn signal_allows_any_origin_unless_told() {
        let any = Policy::public(&[], &[]);
        assert!(any.any_origin());
        assert!(any.origin_allowed("https://evil.example"));
        assert!(any.host_allowed("anything.example"));
        let listed = Policy::public(&["https://app.example".into()], &["hub.test".into()]);
        assert!(listed.host_allowed("hub.test:3000"));
        assert!(!listed.host_allowed("evil.example"));
        assert!(listed.origin_allowed("https://app.example"));
        assert!(!listed.origin_allowed("https://evil.example"));
    }
}
