//! `--proxy URL`: everything rtcdev does not own goes to a dev server (vite, webpack),
//! WebSocket upgrades included, so HMR works through rtcdev's trusted HTTPS.
//!
//! Headers as Caddy's `reverse_proxy` sets them: the client's `Host` goes through (so
//! the dev server sees who it is talking to, not "localhost"), whatever the client
//! claims in `X-Forwarded-*`, `Forwarded` and `X-Real-IP` is dropped, and
//! `X-Forwarded-For`, `-Proto` and `-Host` are set from the real connection. A dev
//! server that trusts requests from localhost is thus not fooled by LAN clients.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How long the upstream may take to answer a request's head.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that belong to one connection and are not forwarded (RFC 9110 7.6.1), and
/// claims about the client that only rtcdev may make (set again below). Every other
/// `X-Forwarded-*` is dropped too ([`client_claim`]).
const HOP_BY_HOP: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A reverse proxy to one upstream.
#[derive(Clone)]
pub struct Proxy {
    base: Uri,
    client: Client<HttpConnector, Body>,
    /// Inject the inspector agent into HTML pages (`--inspect`).
    inspect: bool,
}

/// The tag `--inspect` puts at the top of the upstream's HTML pages.
pub const AGENT_TAG: &str = "<script src=\"/inspect/agent.js\"></script>";
/// Largest HTML page the agent is put into; a bigger one passes unchanged.
const MAX_INJECT: usize = 8 << 20;

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({})", self.base)
    }
}

impl Proxy {
    /// A proxy to `url` (`http://host:port`, optionally with a path prefix).
    pub fn new(url: &str) -> Result<Self> {
        let base: Uri = url
            .parse()
            .with_context(|| format!("--proxy {url:?} is not a URL"))?;
        match base.scheme_str() {
            Some("http") => {}
            Some(other) => bail!(
                "--proxy {url:?}: only http:// upstreams are supported (got {other}://); dev servers listen on plain HTTP"
            ),
            None => bail!("--proxy {url:?}: write it as http://host:port"),
        }
        if base.authority().is_none() {
            bail!("--proxy {url:?}: no host; write it as http://host:port");
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Proxy {
            base,
            client,
            inspect: false,
        })
    }

    /// Puts the inspector agent into the upstream's HTML pages.
    pub fn with_inspect(mut self, inspect: bool) -> Self {
        self.inspect = inspect;
        self
    }

    /// The upstream URL as given.
    pub fn upstream(&self) -> String {
        self.base.to_string()
    }

    fn target(&self, uri: &Uri) -> Result<Uri> {
        let prefix = self.base.path().trim_end_matches('/');
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = self.base.authority().context("no authority")?;
        format!("http://{authority}{prefix}{pq}")
            .parse()
            .context("bad target URI")
    }

    /// Forwards one request.
    pub async fn forward(&self, mut req: Request) -> Response {
        let target = match self.target(req.uri()) {
            Ok(t) => t,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        };
        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(target.clone());
        let headers = builder.headers_mut().expect("fresh builder");
        copy_end_to_end(&parts.headers, headers);
        // A page the agent goes into is asked for uncompressed.
        let wants_html = self.inspect
            && parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
        if wants_html {
            headers.remove(header::ACCEPT_ENCODING);
        }
        // The host the client asked for: HTTP/2 carries it as the authority.
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned());
        if let Some(host) = host {
            headers.insert(header::HOST, host.clone());
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if let Some(ip) = crate::hub::client_ip_parts(&parts.extensions)
            && let Ok(v) = HeaderValue::from_str(&ip.to_string())
        {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("https"),
        );
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(u) = parts.headers.get(header::UPGRADE) {
                headers.insert(header::UPGRADE, u.clone());
            }
        }
        let up_req = match builder.body(body) {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        };
        let res = match tokio::time::timeout(UPSTREAM_TIMEOUT, self.client.request(up_req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return self.bad_gateway(&format!("{e}")),
            Err(_) => return self.bad_gateway("no answer in time"),
        };
        if upgrade && res.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (mut res_parts, res_body) = res.into_parts();
            let mut upstream_res = hyper::Response::from_parts(res_parts.clone(), res_body);
            let upstream_upgrade = hyper::upgrade::on(&mut upstream_res);
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(async move {
                    let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await)
                    else {
                        tracing::debug!("proxied upgrade failed");
                        return;
                    };
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
            res_parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return Response::from_parts(res_parts, Body::empty());
        }
        let (mut res_parts, res_body) = res.into_parts();
        strip_hop_by_hop(&mut res_parts.headers);
        if res_parts.status == StatusCode::FORBIDDEN
            && let Some(host) = headers_host(&parts.headers, &parts.uri)
        {
            crate::info_limited!(
                "upstream refused host",
                host,
                "the --proxy upstream refused a request for host {host}; if it is vite, add the name to server.allowedHosts in vite.config (webpack-dev-server: allowedHosts)"
            );
        }
        let html = res_parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/html"));
        if self.inspect && html && !res_parts.headers.contains_key(header::CONTENT_ENCODING) {
            let small = res_parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_none_or(|n| n <= MAX_INJECT);
            if small {
                return match axum::body::to_bytes(Body::new(res_body), MAX_INJECT).await {
                    Ok(page) => {
                        res_parts.headers.remove(header::CONTENT_LENGTH);
                        res_parts.headers.remove(header::ETAG);
                        Response::from_parts(res_parts, Body::from(inject_agent(&page)))
                    }
                    Err(e) => self.bad_gateway(&format!("reading the page for --inspect: {e}")),
                };
            }
        }
        Response::from_parts(res_parts, Body::new(res_body))
    }

    fn bad_gateway(&self, why: &str) -> Response {
        tracing::warn!(upstream = %self.base, why, "upstream unreachable");
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>502 upstream unreachable</title>\
             <h1>502: the upstream is unreachable</h1><p>rtcdev forwards this request to \
             <code>{}</code> (--proxy), which did not answer: {}.</p><p>Is the dev server running?</p>",
            html_escape(&self.base.to_string()),
            html_escape(why)
        );
        (StatusCode::BAD_GATEWAY, Html(page)).into_response()
    }
}

/// The host name a request was for, when it is a name (not an IP or localhost), the
/// kind dev servers refuse unless told.
/// The page with the agent's tag right after `<head ...>` (or `<html ...>`, or at the
/// start), before any script of the page's own.
pub fn inject_agent(page: &[u8]) -> Vec<u8> {
    let lower = page.to_ascii_lowercase();
    let after = |tag: &[u8]| -> Option<usize> {
        let at = lower.windows(tag.len()).position(|w| w == tag)?;
        let next = *lower.get(at + tag.len())?;
        if next != b'>' && !next.is_ascii_whitespace() {
            return None;
        }
        Some(at + lower[at..].iter().position(|&b| b == b'>')? + 1)
    };
    let at = after(b"<head").or_else(|| after(b"<html")).unwrap_or(0);
    let mut out = Vec::with_capacity(page.len() + AGENT_TAG.len());
    out.extend_from_slice(&page[..at]);
    out.extend_from_slice(AGENT_TAG.as_bytes());
    out.extend_from_slice(&page[at..]);
    out
}

fn headers_host(h: &HeaderMap, uri: &Uri) -> Option<String> {
    let host = uri.authority().map(|a| a.host().to_string()).or_else(|| {
        let v = h.get(header::HOST)?.to_str().ok()?;
        Some(v.rsplit_once(':').map_or(v, |(h, _)| h).to_string())
    })?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    (bare.parse::<std::net::IpAddr>().is_err() && bare != "localhost").then_some(host)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE).is_some()
        && h.get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for (k, v) in from {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name)
            || client_claim(name)
            || named.iter().any(|n| n == name)
            || k == header::HOST
        {
            continue;
        }
        to.append(k.clone(), v.clone());
    }
}

/// An `X-Forwarded-*` header: what a proxy says about the client (its address, host,
/// scheme, port, path prefix, TLS). A client's own claim is never passed on: upstreams
/// that trust a proxy on loopback build redirects and links from them.
fn client_claim(name: &str) -> bool {
    name.starts_with("x-forwarded-")
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
    let claims: Vec<_> = h
        .keys()
        .filter(|k| client_claim(k.as_str()))
        .cloned()
        .collect();
    for name in claims {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_upstreams() {
        assert!(Proxy::new("http://127.0.0.1:5173").is_ok());
        assert!(
            Proxy::new("https://x")
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        assert!(Proxy::new("localhost:5173").is_err());
        assert!(Proxy::new("not a url").is_err());
    }

    #[test]
    fn the_agent_goes_first_into_the_head() {
        let tag = AGENT_TAG;
        let page =
            b"<!doctype html><HTML lang=en><Head data-x=1><script src=app.js></script></head>";
        let out = String::from_utf8(inject_agent(page)).unwrap();
        assert_eq!(
            out,
            format!(
                "<!doctype html><HTML lang=en><Head data-x=1>{tag}<script src=app.js></script></head>"
            )
        );
        let out = String::from_utf8(inject_agent(b"<html><header>x</header>")).unwrap();
        assert_eq!(
            out,
            format!("<html>{tag}<header>x</header>"),
            "<header> is no <head>"
        );
        let out = String::from_utf8(inject_agent(b"<p>bare")).unwrap();
        assert_eq!(out, format!("{tag}<p>bare"));
    }

    #[test]
    fn joins_prefix_and_path() {
        let p = Proxy::new("http://127.0.0.1:5173/app/").unwrap();
        assert_eq!(
            p.target(&"/x?y=1".parse().unwrap()).unwrap(),
            "http://127.0.0.1:5173/app/x?y=1"
        );
    }
}
