//! The routes of `serve`: the page (or `--dir`/`--proxy` content), `/config.json`, the
//! hub, the QR code and phone onboarding; plain HTTP only for onboarding.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use anyhow::Result;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use futures_util::future::Either;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};

use super::ice_report::{self, IceReport, ReportLimit};
use super::inspect::{self, Inspector};
use super::{Content, assets, onboarding};
use crate::echo::{self, Echoes, Gather};
use crate::hub::Hub;
use crate::hub::protocol::{PeerId, RoomName};
use crate::net;
use crate::server::Scheme;
use crate::server::origin::{self, Policy};

/// Paths plain HTTP serves; everything else there redirects to HTTPS.
const PLAIN_HTTP_PATHS: &[&str] = &["/join", "/ca.pem", "/ca.mobileconfig", "/healthz"];

/// What a phone needs to trust the local CA.
#[derive(Debug, Clone)]
pub struct CaInfo {
    /// PEM.
    pub pem: String,
    /// DER.
    pub der: Vec<u8>,
    /// Trust store name ("rtcdev development CA 123...").
    pub name: String,
    /// Serial, decimal.
    pub serial: String,
    /// Where rootCA.pem is.
    pub path: PathBuf,
}

/// The LAN addresses the links point at.
struct Lan {
    /// In the order the links use them: the ones in the certificate first.
    links: Vec<IpAddr>,
    /// The ones the certificate leaves out: a browser refuses HTTPS there.
    uncovered: Vec<IpAddr>,
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    hub: Hub,
    ca: Option<CaInfo>,
    content: Content,
    port: u16,
    room: String,
    lan: RwLock<Lan>,
    /// Terminal output as JSON lines (`--json`).
    json: Arc<std::sync::atomic::AtomicBool>,
    ice_reports: ReportLimit,
    inspector: Inspector,
    echoes: Arc<Echoes>,
}

impl AppState {
    /// State for the routes.
    pub fn new(
        hub: Hub,
        ca: Option<CaInfo>,
        content: Content,
        port: u16,
        room: String,
        lan: Vec<IpAddr>,
    ) -> Self {
        let json = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let say_json = json.clone();
        let say = Arc::new(move |line: String| {
            if say_json.load(std::sync::atomic::Ordering::Relaxed) {
                let event = serde_json::json!({"event": "echo", "message": line});
                crate::server::print_stdout(&format!("{event}\n"));
            } else {
                crate::server::print_stdout(&format!("{line}\n"));
            }
        });
        let echoes = Arc::new(Echoes::new(hub.clone(), Gather::Any, say));
        AppState {
            inner: Arc::new(StateInner {
                hub,
                ca,
                content,
                port,
                room,
                lan: RwLock::new(Lan {
                    links: lan,
                    uncovered: Vec::new(),
                }),
                json,
                ice_reports: ReportLimit::default(),
                inspector: Inspector::default(),
                echoes,
            }),
        }
    }

    /// Prints what devices report (the ICE test) as JSON lines.
    pub fn set_json_output(&self, json: bool) {
        self.inner
            .json
            .store(json, std::sync::atomic::Ordering::Relaxed);
    }

    /// The echo peer gathers on the addresses a server bound to `bind` is reached on.
    pub fn set_bind(&self, bind: IpAddr) {
        self.inner.echoes.set_gather(Gather::for_bind(bind));
    }

    /// The port the links carry.
    pub(super) fn port(&self) -> u16 {
        self.inner.port
    }

    /// The room the printed links name.
    pub(super) fn room(&self) -> &str {
        &self.inner.room
    }

    /// The local CA, when the certificate comes from it.
    pub(super) fn ca(&self) -> Option<&CaInfo> {
        self.inner.ca.as_ref()
    }

    /// The LAN addresses the links point at now.
    pub(super) fn lan(&self) -> Vec<IpAddr> {
        self.inner
            .lan
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .links
            .clone()
    }

    /// Points the links at LAN addresses (at start, and when the Wi-Fi changed): `links`
    /// in the order the links use them, and the ones among them the certificate leaves
    /// out.
    pub fn set_lan(&self, links: Vec<IpAddr>, uncovered: Vec<IpAddr>) {
        *self.inner.lan.write().unwrap_or_else(|p| p.into_inner()) = Lan { links, uncovered };
    }

    /// Where a phone on the LAN reaches this server with HTTPS its browser accepts: the
    /// first LAN address the certificate covers, else this machine's mDNS name (in every
    /// certificate the local CA issues for it). `None` without a LAN, or when the
    /// certificate covers no LAN address and the host name makes no mDNS name.
    pub(super) fn phone_host(&self) -> Option<String> {
        let lan = self.inner.lan.read().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = lan.links.iter().find(|ip| !lan.uncovered.contains(ip)) {
            return Some(net::url_host(ip));
        }
        if lan.links.is_empty() {
            return None;
        }
        net::mdns_name()
    }

    /// The link a phone scans: plain HTTP to `/join` on [`AppState::phone_host`] (it
    /// onboards the CA if needed), or the HTTPS room on localhost without one.
    pub fn phone_link(&self, room: &str) -> String {
        let port = self.inner.port;
        match self.phone_host() {
            Some(host) => format!("http://{host}:{port}/join?room={room}"),
            None => format!("https://localhost:{port}/?room={room}"),
        }
    }
}

/// The router: page, hub, config, QR, onboarding, health; plain HTTP limited to
/// onboarding; host names checked first; CORS and the origin check only on what other
/// pages may call (the hub and the JSON/QR routes), never on the page, `--dir` or
/// `--proxy` content. Tests call it with `oneshot`.
pub fn router(
    state: AppState,
    allow_origins: &[String],
    allowed_hosts: &[String],
) -> Result<Router> {
    let lan_state = state.clone();
    let policy = Policy::own(
        state.inner.port,
        Arc::new(move || lan_state.lan()),
        allow_origins,
        allowed_hosts,
    );
    let content_state = state.clone();
    let content = Router::new().fallback(move |req: Request| {
        let state = content_state.clone();
        async move {
            let files = !matches!(state.inner.content, Content::Proxy(_));
            if files && req.method() != Method::GET && req.method() != Method::HEAD {
                return assets::method_not_allowed();
            }
            match &state.inner.content {
                Content::Bundled => assets::bundled(req.uri(), req.headers()),
                Content::Dir { root, hidden } => {
                    assets::from_dir(root, req.method(), req.uri(), req.headers(), *hidden).await
                }
                Content::Proxy(proxy) => proxy.forward(req).await,
            }
        }
    });
    // The bundled page is compressed once, at start (see `assets`): compression per
    // response is for `--dir` and `--proxy` content only.
    let content = match &state.inner.content {
        Content::Bundled => content,
        // Not media: it is compressed already, and a compressed answer loses its byte
        // ranges (a <video> seeks with them).
        _ => content.layer(
            CompressionLayer::new().compress_when(
                DefaultPredicate::new()
                    .and(NotForContentType::const_new("video/"))
                    .and(NotForContentType::const_new("audio/")),
            ),
        ),
    };
    let hub = state
        .inner
        .hub
        .routes()
        .layer(middleware::from_fn_with_state(
            policy.clone(),
            origin::check_origin,
        ));
    // The ICE test page and the room inspector are rtcdev's own whatever the content;
    // what pages report is checked like the hub: pages of other origins may not post.
    let ice = Router::new()
        .route("/ice", own_asset("/ice.html"))
        .route("/ice/ice.js", own_asset("/ice/ice.js"))
        .route("/ice/report", axum::routing::post(ice_report))
        .route("/inspect", get(inspect_page))
        .route("/inspect/view.js", own_asset("/inspect/view.js"))
        // The agent `--proxy --inspect` puts into the app's pages, and the two modules
        // it loads: the calling page's own reporter and stats summary.
        .route("/inspect/agent.js", own_asset("/inspect/agent.js"))
        .route("/inspect/reporter.js", own_asset("/js/inspect.js"))
        .route("/inspect/stats.js", own_asset("/js/stats.js"))
        .route("/inspect/state.json", get(inspect_state))
        .route("/inspect/report", axum::routing::post(inspect_report))
        .route("/echo", axum::routing::post(echo_start))
        .layer(middleware::from_fn_with_state(
            policy.clone(),
            origin::check_origin,
        ))
        .with_state(state.clone());
    let app = Router::new()
        .route("/config.json", get(config_json))
        .route("/qr.svg", get(qr_svg))
        .route("/healthz", get(healthz))
        .route("/trust-check", get(trust_check))
        .route("/join", get(join))
        .route("/ca.pem", get(ca_pem))
        .route("/ca.mobileconfig", get(mobileconfig))
        .with_state(state.clone())
        .merge(hub)
        .merge(ice)
        .layer(policy.cors())
        .merge(content)
        .layer(tower::layer::layer_fn(move |inner| FrontDoor {
            inner,
            state: state.clone(),
            policy: policy.clone(),
        }));
    Ok(app)
}

fn scheme_of(ext: Option<Extension<Scheme>>) -> Scheme {
    ext.map_or(Scheme::Https, |Extension(s)| s)
}

/// Every request's first step (it runs for every file a page loads): a host name the
/// server does not answer to gets 403 (DNS rebinding); plain HTTP is redirected to
/// HTTPS but for onboarding. A service of its own rather than `from_fn`, which boxes
/// every request's future.
#[derive(Clone)]
struct FrontDoor<S> {
    inner: S,
    state: AppState,
    policy: Policy,
}

impl<S> tower::Service<Request> for FrontDoor<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match turned_away(&self.state, &self.policy, &req) {
            Some(answer) => Either::Left(std::future::ready(Ok(answer))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

/// The front door's answer to a request that goes no further.
fn turned_away(state: &AppState, policy: &Policy, req: &Request) -> Option<Response> {
    if let Some(refused) = origin::refuse_host(policy, req) {
        return Some(refused);
    }
    let scheme = req
        .extensions()
        .get::<Scheme>()
        .copied()
        .unwrap_or(Scheme::Https);
    if scheme == Scheme::Http && !PLAIN_HTTP_PATHS.contains(&req.uri().path()) {
        let host = onboarding::request_host(req.uri(), req.headers())
            .unwrap_or_else(|| format!("localhost:{}", state.inner.port));
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        return Some(Redirect::temporary(&format!("https://{host}{path}")).into_response());
    }
    None
}

async fn config_json(State(state): State<AppState>) -> Response {
    let who = PeerId::random();
    let mut r =
        Json(serde_json::json!({"iceServers": state.inner.hub.config().ice.servers(who.as_str())}))
            .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn room_param(
    state: &AppState,
    q: &HashMap<String, String>,
) -> Result<String, (StatusCode, String)> {
    let room = q
        .get("room")
        .cloned()
        .unwrap_or_else(|| state.inner.room.clone());
    RoomName::parse(&room)
        .map(|r| r.as_str().to_string())
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")))
}

async fn qr_svg(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let room = match room_param(&state, &q) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match crate::qr::svg(&state.phone_link(&room)) {
        Ok(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            svg,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    Json(state.inner.hub.stats()).into_response()
}

async fn trust_check() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn join(
    State(state): State<AppState>,
    scheme: Option<Extension<Scheme>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let room = match room_param(&state, &q) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if scheme_of(scheme) == Scheme::Https {
        return Redirect::temporary(&format!("/?room={room}")).into_response();
    }
    let port = state.inner.port;
    let host =
        onboarding::request_host(&uri, &headers).unwrap_or_else(|| format!("localhost:{port}"));
    onboarding::join_page(
        &room,
        &format!("https://{host}"),
        origin::host_name(&host),
        state.inner.ca.as_ref(),
    )
}

async fn ca_pem(State(state): State<AppState>) -> Response {
    onboarding::ca_pem(state.inner.ca.as_ref())
}

async fn mobileconfig(State(state): State<AppState>) -> Response {
    onboarding::mobileconfig(state.inner.ca.as_ref())
}

/// A device's ICE test result: printed in the terminal, labelled with the device.
async fn ice_report(State(state): State<AppState>, req: Request) -> Response {
    let (from, user_agent, body) = match read_report(req, ice_report::MAX_BODY).await {
        Ok(parts) => parts,
        Err(refused) => return refused,
    };
    let report = match IceReport::parse(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    if !state.inner.ice_reports.allow() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many ICE test reports; try again in a minute\n",
        )
            .into_response();
    }
    if state.inner.json.load(std::sync::atomic::Ordering::Relaxed) {
        crate::server::print_stdout(&format!("{}\n", report.json(&user_agent, &from)));
    } else {
        crate::server::print_stdout(&report.lines(&user_agent, &from));
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The inspector shows devices' addresses: only to this machine.
/// Not for a request relayed from elsewhere by a proxy on this machine, nor for one under
/// a name other than a loopback one (see [`origin::from_this_machine`]).
fn only_here(req: &Request, port: u16) -> Option<Response> {
    (!origin::from_this_machine(req)).then(|| {
        (
            StatusCode::FORBIDDEN,
            format!(
                "The room inspector shows the devices' addresses, so it is served to this \
                 machine only: open https://localhost:{port}/inspect there.\n"
            ),
        )
            .into_response()
    })
}

async fn inspect_page(State(state): State<AppState>, req: Request) -> Response {
    if let Some(refused) = only_here(&req, state.inner.port) {
        return refused;
    }
    assets::bundled(
        &axum::http::Uri::from_static("/inspect.html"),
        req.headers(),
    )
}

async fn inspect_state(State(state): State<AppState>, req: Request) -> Response {
    if let Some(refused) = only_here(&req, state.inner.port) {
        return refused;
    }
    let mut r = Json(state.inner.inspector.snapshot()).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A calling page's report on its connections; a failure's verdict is printed.
async fn inspect_report(State(state): State<AppState>, req: Request) -> Response {
    let (from, user_agent, body) = match read_report(req, inspect::MAX_BODY).await {
        Ok(parts) => parts,
        Err(refused) => return refused,
    };
    let browser = ice_report::device_label(&user_agent);
    let report: inspect::Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a report: {e}\n")).into_response(),
    };
    let origin = inspect::Origin {
        browser: &browser,
        from: &from,
    };
    match state.inner.inspector.report(report, origin) {
        Ok(verdicts) => {
            // Printed after the inspector's lock is released.
            for line in verdicts {
                if state.inner.json.load(std::sync::atomic::Ordering::Relaxed) {
                    crate::server::print_stdout(&format!(
                        "{}\n",
                        serde_json::json!({"event": "call-failed", "verdict": line.trim()})
                    ));
                } else {
                    crate::server::print_stdout(&format!("{line}\n"));
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(inspect::Refused::Invalid(e)) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        Err(inspect::Refused::Full(e)) => {
            (StatusCode::TOO_MANY_REQUESTS, format!("{e}\n")).into_response()
        }
    }
}

/// What a page asks the echo for.
#[derive(serde::Deserialize)]
struct EchoAsk {
    room: String,
    #[serde(default)]
    relay: bool,
}

/// Largest body of an echo request.
const ECHO_BODY: usize = 1024;

/// A page asks for the echo peer in its room ("test alone").
async fn echo_start(State(state): State<AppState>, req: Request) -> Response {
    let ip = crate::hub::client_ip_parts(req.extensions());
    let (from, user_agent, body) = match read_report(req, ECHO_BODY).await {
        Ok(parts) => parts,
        Err(refused) => return refused,
    };
    let ask: EchoAsk = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an echo request ({{\"room\": NAME, \"relay\": BOOL}}): {e}\n"),
            )
                .into_response();
        }
    };
    // An echo is a join: the same per-address rate.
    if !state.inner.hub.limits().join_allowed(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many joins from this address; try again in a few seconds\n",
        )
            .into_response();
    }
    match state.inner.echoes.start(&ask.room, ask.relay).await {
        Ok(started) => {
            if !started.already {
                let device = ice_report::device_label(&user_agent);
                let via = if ask.relay { ", relay only" } else { "" };
                (state.inner.echoes.say())(format!(
                    "echo: joined room {} for {device} at {from}{via}",
                    ice_report::clean(&ask.room)
                ));
            }
            Json(serde_json::json!({"id": started.id, "already": started.already})).into_response()
        }
        Err(refused) => {
            let status = match refused {
                echo::Refused::BadRoom(_) => StatusCode::BAD_REQUEST,
                echo::Refused::Empty(_) | echo::Refused::Full(_) => StatusCode::CONFLICT,
                echo::Refused::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                echo::Refused::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, format!("{refused}\n")).into_response()
        }
    }
}

/// A file of rtcdev's own pages at a fixed path, whatever `serve` serves besides.
fn own_asset(path: &'static str) -> axum::routing::MethodRouter<AppState> {
    get(move |headers: HeaderMap| async move {
        assets::bundled(&axum::http::Uri::from_static(path), &headers)
    })
}

/// What a device's report comes with: its address, its user agent, and the body, up to
/// `max` bytes (past it, 413).
async fn read_report(
    req: Request,
    max: usize,
) -> Result<(String, String, axum::body::Bytes), Response> {
    let from = crate::hub::client_ip_parts(req.extensions())
        .map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // A body sent a byte now and then would hold the connection for good.
    let read = axum::body::to_bytes(req.into_body(), max);
    match tokio::time::timeout(crate::server::HEADER_READ_TIMEOUT, read).await {
        Ok(Ok(body)) => Ok((from, user_agent, body)),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a report is at most {max} bytes\n"),
        )
            .into_response()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time\n",
        )
            .into_response()),
    }
}
