//! `rtcdev serve`: the calling page and the hub on one trusted HTTPS origin, plain HTTP
//! on the same port for phone onboarding, LAN URLs, a QR code, and a certificate that
//! follows the LAN addresses without a restart.

pub mod assets;
pub mod certs;
pub mod deploy;
pub mod onboarding;
pub mod proxy;

use std::collections::HashMap;
use std::future::Future;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;

use crate::cert::ca::Ca;
use crate::cert::tls::{self, SwappableCert, TlsSource};
use crate::hub::protocol::{PeerId, RoomName};
use crate::hub::{Hub, HubConfig};
use crate::net;
use crate::server::Scheme;
use crate::server::origin::{self, Policy};

/// The port `serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8443;
/// When the default port is taken, the ports after it that are tried.
pub const PORT_TRIES: u16 = 10;
/// How often the LAN addresses are looked at for a certificate swap.
pub const LAN_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Paths plain HTTP serves; everything else there redirects to HTTPS.
const PLAIN_HTTP_PATHS: &[&str] = &["/join", "/ca.pem", "/ca.mobileconfig", "/healthz"];

/// What `/` and other unknown paths serve.
#[derive(Debug, Clone)]
pub enum Content {
    /// The bundled calling page.
    Bundled,
    /// A folder (canonical path); `hidden`: serve dotfiles and key files too.
    Dir {
        /// The folder, canonical.
        root: PathBuf,
        /// Serve hidden and key files too (`--hidden`).
        hidden: bool,
    },
    /// A dev server everything else is forwarded to.
    Proxy(Box<proxy::Proxy>),
}

/// When to print the terminal QR code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrMode {
    /// On a terminal, when a LAN address exists.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The LAN addresses, as a function so tests can move the machine between networks.
pub type LanSource = Arc<dyn Fn() -> Vec<IpAddr> + Send + Sync>;

/// Everything `rtcdev serve` needs, validated.
#[derive(Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port (0: any).
    pub port: u16,
    /// Whether the port was asked for (then a taken port is an error, not a retry).
    pub port_explicit: bool,
    /// The room the printed links and QR code open.
    pub room: String,
    /// What `/` serves.
    pub content: Content,
    /// The certificate.
    pub tls: TlsSource,
    /// Hub limits and ICE servers.
    pub hub: HubConfig,
    /// Origins besides its own whose pages may use the hub and `/config.json`.
    pub allow_origins: Vec<String>,
    /// Host names it answers to besides IPs, localhost and this host's names.
    pub allowed_hosts: Vec<String>,
    /// Terminal QR code.
    pub qr: QrMode,
    /// Print only the essentials.
    pub quiet: bool,
    /// Print the URLs as one JSON object.
    pub json: bool,
    /// How often to look at the LAN addresses.
    pub lan_poll: Duration,
    /// The LAN addresses.
    pub lan: LanSource,
    /// rtcdev's own TURN server, run alongside and put in `/config.json` and `welcome`
    /// with short-lived REST credentials.
    pub embedded_turn: Option<crate::turn::TurnConfig>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("room", &self.room)
            .field("content", &self.content)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

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
    lan: RwLock<Vec<IpAddr>>,
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
        AppState {
            inner: Arc::new(StateInner {
                hub,
                ca,
                content,
                port,
                room,
                lan: RwLock::new(lan),
            }),
        }
    }

    fn lan(&self) -> Vec<IpAddr> {
        self.inner
            .lan
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_lan(&self, lan: Vec<IpAddr>) {
        *self.inner.lan.write().unwrap_or_else(|p| p.into_inner()) = lan;
    }

    /// The link a phone scans: plain HTTP to `/join` on the first LAN address (it
    /// onboards the CA if needed), or the HTTPS room on localhost without a LAN.
    pub fn phone_link(&self, room: &str) -> String {
        let port = self.inner.port;
        match self.lan().first() {
            Some(ip) => format!("http://{}:{port}/join?room={room}", net::url_host(ip)),
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
    let content = Router::new()
        .fallback(move |req: Request| {
            let state = content_state.clone();
            async move {
                let (uri, headers) = (req.uri().clone(), req.headers().clone());
                match &state.inner.content {
                    Content::Bundled => assets::bundled(&uri, &headers),
                    Content::Dir { root, hidden } => {
                        assets::from_dir(root, &uri, &headers, *hidden).await
                    }
                    Content::Proxy(proxy) => proxy.forward(req).await,
                }
            }
        })
        .layer(CompressionLayer::new());
    let hub = state
        .inner
        .hub
        .routes()
        .layer(middleware::from_fn_with_state(
            policy.clone(),
            origin::check_origin,
        ));
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
        .layer(policy.cors())
        .merge(content)
        .layer(middleware::from_fn_with_state(state, plain_http_guard))
        .layer(middleware::from_fn_with_state(policy, origin::check_host));
    Ok(app)
}

fn scheme_of(ext: Option<Extension<Scheme>>) -> Scheme {
    ext.map_or(Scheme::Https, |Extension(s)| s)
}

async fn plain_http_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let scheme = req
        .extensions()
        .get::<Scheme>()
        .copied()
        .unwrap_or(Scheme::Https);
    if scheme == Scheme::Http && !PLAIN_HTTP_PATHS.contains(&req.uri().path()) {
        let host = onboarding::request_host(req.headers())
            .unwrap_or_else(|| format!("localhost:{}", state.inner.port));
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        return Redirect::temporary(&format!("https://{host}{path}")).into_response();
    }
    next.run(req).await
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
    let host = onboarding::request_host(&headers).unwrap_or_else(|| format!("localhost:{port}"));
    onboarding::join_page(
        &room,
        &format!("https://{host}"),
        onboarding::strip_port(&host),
        state.inner.ca.as_ref(),
    )
}

async fn ca_pem(State(state): State<AppState>) -> Response {
    onboarding::ca_pem(state.inner.ca.as_ref())
}

async fn mobileconfig(State(state): State<AppState>) -> Response {
    onboarding::mobileconfig(state.inner.ca.as_ref())
}

/// The URLs `serve` prints (and `--json` gives).
#[derive(Debug, Clone, Serialize)]
pub struct Urls {
    /// On this machine.
    pub local: Vec<String>,
    /// On the LAN.
    pub network: Vec<String>,
    /// The room.
    pub room: String,
    /// The room on the best address.
    pub room_url: String,
    /// The link the QR code carries.
    pub phone_url: String,
    /// The local CA certificate, if rtcdev's CA is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Its SHA-256 fingerprint, as openssl prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
}

fn urls(addr: SocketAddr, state: &AppState) -> Urls {
    let port = addr.port();
    let (local_hosts, lan) = if addr.ip().is_unspecified() {
        (vec!["localhost".to_string()], state.lan())
    } else if addr.ip().is_loopback() {
        (vec![net::url_host(&addr.ip())], Vec::new())
    } else {
        (Vec::new(), vec![addr.ip()])
    };
    let local: Vec<String> = local_hosts
        .iter()
        .map(|h| format!("https://{h}:{port}/"))
        .collect();
    let network: Vec<String> = lan
        .iter()
        .map(|ip| format!("https://{}:{port}/", net::url_host(ip)))
        .collect();
    let room = state.inner.room.clone();
    let base = network
        .first()
        .or(local.first())
        .cloned()
        .unwrap_or_default();
    Urls {
        room_url: format!("{base}?room={room}"),
        phone_url: state.phone_link(&room),
        room,
        local,
        network,
        ca_file: state.inner.ca.as_ref().map(|c| c.path.clone()),
        ca_fingerprint: state
            .inner
            .ca
            .as_ref()
            .map(|c| crate::cert::ca::fingerprint_sha256(&c.der)),
    }
}

fn banner(u: &Urls, config: &ServeConfig, has_lan: bool) -> String {
    if config.json {
        return serde_json::to_string(u).unwrap_or_default() + "\n";
    }
    let mut t = format!("\n  rtcdev serve v{}\n\n", env!("CARGO_PKG_VERSION"));
    for l in &u.local {
        t.push_str(&format!("  ➜  Local:   {l}\n"));
    }
    for n in &u.network {
        t.push_str(&format!("  ➜  Network: {n}\n"));
    }
    t.push_str(&format!("  ➜  Room:    {}\n", u.room_url));
    if has_lan {
        t.push_str(&format!("  ➜  Phone:   {}\n", u.phone_url));
    }
    let show_qr = match config.qr {
        QrMode::Always => true,
        QrMode::Never => false,
        QrMode::Auto => has_lan && std::io::stdout().is_terminal(),
    };
    if show_qr && !config.quiet {
        match crate::qr::terminal(&u.phone_url) {
            Ok(q) => {
                t.push_str(
                    "\n  Scan to join from a phone (it sets up the certificate if needed):\n\n",
                );
                for line in q.lines() {
                    t.push_str(&format!("  {line}\n"));
                }
            }
            Err(e) => tracing::warn!(%e, "no QR code"),
        }
    }
    if let (Content::Proxy(p), false) = (&config.content, config.quiet) {
        t.push_str(&format!(
            "\n  Proxying to {} (--proxy): it is now reachable from the LAN through rtcdev.\n  \
             It sees each client's address (X-Forwarded-For) and Host; for host names other than\n  \
             IPs and localhost, vite needs server.allowedHosts (webpack-dev-server: allowedHosts).\n",
            p.upstream()
        ));
    }
    if let (Some(ca), false) = (&u.ca_file, config.quiet) {
        t.push_str(&format!(
            "\n  Certificate by the local CA {} (trust it here: rtcdev cert --install)\n",
            ca.display()
        ));
        if let Some(fp) = &u.ca_fingerprint {
            t.push_str(&format!(
                "  CA SHA-256 fingerprint (a phone shows it before trusting; compare):\n  {fp}\n"
            ));
        }
    }
    t.push('\n');
    t
}

/// Binds the port: the given one, or the default and the next few if it is taken.
pub fn bind(config: &ServeConfig) -> Result<std::net::TcpListener> {
    let first = crate::server::bind(SocketAddr::new(config.bind, config.port));
    if config.port_explicit || config.port == 0 {
        return first;
    }
    let mut last = match first {
        Ok(l) => return Ok(l),
        Err(e) => e,
    };
    for port in config.port.saturating_add(1)..=config.port.saturating_add(PORT_TRIES) {
        match crate::server::bind(SocketAddr::new(config.bind, port)) {
            Ok(l) => {
                tracing::warn!("port {} is in use; using {port}", config.port);
                return Ok(l);
            }
            Err(e) => last = e,
        }
    }
    Err(last.context(format!(
        "ports {} to {} are all in use",
        config.port,
        config.port.saturating_add(PORT_TRIES)
    )))
}

/// Binds, prints the URLs and serves until `shutdown`.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = bind(&config)?;
    run_on(listener, config, shutdown).await
}

/// Serves on an already-bound listener (tests bind 127.0.0.1:0).
pub async fn run_on(
    listener: std::net::TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let lan = (config.lan)();
    let (certs, ca, ca_info) = match &config.tls {
        TlsSource::LocalCa(location) => {
            let (ca, outcome) = Ca::load_or_create(&location.dir)?;
            if outcome == crate::cert::CaOutcome::Created && !config.quiet {
                crate::server::print_stdout(&format!(
                    "Created a new local CA at {}\n",
                    location.dir.display()
                ));
            }
            let (key, _) = certs::leaf_for(&ca, &net::cert_names_for(&lan))?;
            let info = CaInfo {
                pem: ca.cert_pem.clone(),
                der: ca.cert_der.to_vec(),
                name: ca.nickname(),
                serial: ca.serial.clone(),
                path: location.cert_path(),
            };
            (SwappableCert::new(key), Some(ca), Some(info))
        }
        TlsSource::Files { cert, key } => (
            SwappableCert::new(tls::certified_key_from_files(cert, key)?),
            None,
            None,
        ),
    };
    let tls_config = Arc::new(tls::server_config(certs.clone())?);
    let mut hub_config = config.hub.clone();
    let turn_server = match &config.embedded_turn {
        Some(t) => Some(start_embedded_turn(t, &lan, &mut hub_config).await?),
        None => None,
    };
    let hub = Hub::start(hub_config).await?;
    if let Some(t) = &turn_server {
        let guard = t.guard.clone();
        hub.attach_turn_report(move || serde_json::to_value(guard.report()).unwrap_or_default());
    }
    let state = AppState::new(
        hub.clone(),
        ca_info,
        config.content.clone(),
        addr.port(),
        config.room.clone(),
        net::reachable(addr.ip(), &lan),
    );
    let app = router(state.clone(), &config.allow_origins, &config.allowed_hosts)?;
    let u = urls(addr, &state);
    crate::server::print_stdout(&banner(&u, &config, !state.lan().is_empty()));

    let stop_watch = CancellationToken::new();
    if let Some(ca) = ca {
        tokio::spawn(watch_lan(
            config.clone(),
            ca,
            certs,
            state,
            lan,
            stop_watch.clone(),
        ));
    }
    let stop = stop_watch.clone();
    let served = crate::server::serve(listener, app, Some(tls_config), Some(hub), async move {
        shutdown.await;
        stop.cancel();
    })
    .await;
    if let Some(t) = turn_server {
        t.close().await;
    }
    served
}

/// Starts rtcdev's TURN server next to `serve` (UDP 3478, or a free port when that is
/// taken) and points the hub's ICE servers at it with short-lived REST credentials.
async fn start_embedded_turn(
    config: &crate::turn::TurnConfig,
    lan: &[IpAddr],
    hub: &mut HubConfig,
) -> Result<crate::turn::TurnServer> {
    let server = match crate::turn::start(config).await {
        Ok(s) => s,
        Err(e) if config.port != 0 => {
            tracing::warn!(%e, "TURN port {} unavailable; using a free one", config.port);
            let mut any = config.clone();
            any.port = 0;
            crate::turn::start(&any).await?
        }
        Err(e) => return Err(e),
    };
    let ice = server.ice_config(lan);
    hub.ice.stun.extend(ice.stun);
    hub.ice.turn.extend(ice.turn);
    hub.ice.turn_auth = ice.turn_auth;
    tracing::info!(addr = %server.addr, "embedded TURN server running");
    Ok(server)
}

/// Looks at the LAN addresses every `lan_poll`; when they change (a new Wi-Fi), issues
/// a certificate for the new ones and swaps it in: new handshakes get it, open
/// connections keep theirs.
async fn watch_lan(
    config: ServeConfig,
    ca: Ca,
    certs: Arc<SwappableCert>,
    state: AppState,
    mut current: Vec<IpAddr>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.lan_poll);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (config.lan)();
        if now == current {
            continue;
        }
        match certs::leaf_for(&ca, &net::cert_names_for(&now)) {
            Ok((key, _)) => {
                certs.swap(key);
                state.set_lan(net::reachable(config.bind, &now));
                tracing::info!(addresses = ?now, "LAN addresses changed; new certificate in use");
                if !config.quiet && !config.json {
                    let port = state.inner.port;
                    let mut t = String::from("  Network changed:\n");
                    for ip in &state.lan() {
                        t.push_str(&format!(
                            "  ➜  Network: https://{}:{port}/\n",
                            net::url_host(ip)
                        ));
                    }
                    crate::server::print_stdout(&t);
                }
                current = now;
            }
            Err(e) => tracing::warn!(%e, "cannot issue a certificate for the new LAN addresses"),
        }
    }
}

/// Random characters in a generated room name: 13 of a 32-letter alphabet, 65 bits, so
/// nobody on the network guesses their way into a call.
pub const ROOM_RANDOM_CHARS: usize = 13;
/// The tail's alphabet: lowercase letters and digits without i, l, o and 1.
const ROOM_ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz023456789";

/// A random room name for the printed links: two words to read, and a random tail.
pub fn random_room() -> String {
    const WORDS: &[&str] = &[
        "amber", "brisk", "cedar", "delta", "ember", "fjord", "gale", "harbor", "iris", "jade",
        "kestrel", "lumen", "maple", "nova", "orbit", "pine", "quartz", "river", "sierra", "tidal",
    ];
    let a = WORDS[rand::random_range(0..WORDS.len())];
    let b = WORDS[rand::random_range(0..WORDS.len())];
    let bytes: [u8; ROOM_RANDOM_CHARS] = rand::random();
    let tail: String = bytes
        .iter()
        .map(|b| ROOM_ALPHABET[usize::from(b % 32)] as char)
        .collect();
    format!("{a}-{b}-{tail}")
}

/// Validates `--dir` (hidden and key files refused).
pub fn content_dir(dir: &std::path::Path) -> Result<Content> {
    content_dir_with(dir, false)
}

/// Validates `--dir`; `hidden` serves dotfiles and key files too (`--hidden`).
pub fn content_dir_with(dir: &std::path::Path, hidden: bool) -> Result<Content> {
    let canonical = std::fs::canonicalize(dir)
        .with_context(|| format!("--dir {}: no such directory", dir.display()))?;
    if !canonical.is_dir() {
        bail!("--dir {} is not a directory", dir.display());
    }
    Ok(Content::Dir {
        root: canonical,
        hidden,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rooms_carry_65_random_bits_and_are_valid_names() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let r = random_room();
            assert!(RoomName::parse(&r).is_ok(), "{r}");
            let tail = r.rsplit('-').next().unwrap();
            assert_eq!(tail.len(), ROOM_RANDOM_CHARS, "{r}");
            assert!(tail.bytes().all(|b| ROOM_ALPHABET.contains(&b)), "{r}");
            assert!(seen.insert(tail.to_string()), "a repeat in 200: {r}");
        }
        // 13 characters of 32 letters: 65 bits.
        const { assert!(ROOM_RANDOM_CHARS * 5 >= 64) };
    }
}
