//! `rtcdev serve`: the calling page and the hub on one trusted HTTPS origin, plain HTTP
//! on the same port for phone onboarding, LAN URLs, a QR code, and a certificate that
//! follows the LAN addresses without a restart.

pub mod assets;
mod banner;
pub mod certs;
pub mod deploy;
mod ice_report;
mod inspect;
pub mod onboarding;
pub mod proxy;
mod routes;

pub use banner::Urls;
pub use routes::{AppState, CaInfo, router};

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;

use crate::cert::ca::Ca;
use crate::cert::tls::{self, SwappableCert, TlsSource};
use crate::hub::{Hub, HubConfig};
use crate::net;

/// Peers a room of `serve` holds unless `--room-size` says otherwise: in a mesh every
/// phone encodes and uploads once per other peer, and eight is about what a phone's
/// uplink and encoder carry. The page reads the hub's size from `welcome`.
pub const MESH_ROOM_SIZE: usize = 8;
/// The port `serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8443;
/// When the default port is taken, the ports after it that are tried.
pub const PORT_TRIES: u16 = 10;
/// How often the LAN addresses are looked at for a certificate swap.
pub const LAN_POLL_INTERVAL: Duration = Duration::from_secs(5);

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
    /// Open the room in this machine's browser once up.
    pub open: bool,
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
    if let Some(ca) = &ca {
        hub_config.resume_secret = Some(ca.derived_secret("rtcdev hub resume tokens v1"));
    }
    let hub = Hub::start(hub_config).await?;
    if let Some(t) = &turn_server {
        let guard = t.guard.clone();
        hub.attach_turn_report(move || serde_json::to_value(guard.report()).unwrap_or_default());
    }
    let (links, uncovered) = match &ca {
        Some(ca) => certs::covered_first(ca, net::reachable(addr.ip(), &lan)),
        None => (net::reachable(addr.ip(), &lan), Vec::new()),
    };
    let state = AppState::new(
        hub.clone(),
        ca_info,
        config.content.clone(),
        addr.port(),
        config.room.clone(),
        Vec::new(),
    );
    state.set_lan(links, uncovered.clone());
    state.set_json_output(config.json);
    state.set_bind(addr.ip());
    assets::warm();
    let app = router(state.clone(), &config.allow_origins, &config.allowed_hosts)?;
    let u = banner::urls(addr, &state, &uncovered);
    crate::server::print_stdout(&banner::banner(&u, &config, state.phone_host().is_some()));
    if config.open {
        open_browser(&u);
    }

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
/// Opens the room, at its address on this machine, in this machine's browser;
/// a machine without one is told, not failed.
fn open_browser(u: &banner::Urls) {
    let Some(local) = u.local.first() else {
        return;
    };
    let url = format!("{local}?room={}", u.room);
    if let Err(e) = opener::open_browser(&url) {
        tracing::warn!(%url, "could not open a browser ({e}); open the URL yourself");
    }
}

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
                let (links, uncovered) =
                    certs::covered_first(&ca, net::reachable(config.bind, &now));
                state.set_lan(links, uncovered.clone());
                tracing::info!(addresses = ?now, "LAN addresses changed; new certificate in use");
                if !config.quiet && !config.json {
                    let port = state.port();
                    let lan = state.lan();
                    let mut t = String::from("  Network changed:\n");
                    for ip in &lan {
                        t.push_str(&banner::network_line(ip, port, &uncovered));
                    }
                    // The phone link follows the network, and so does its QR code.
                    let phone = state.phone_host().is_some();
                    let link = state.phone_link(state.room());
                    t.push_str(&banner::phone_line(&link, phone, !lan.is_empty()));
                    t.push_str(&banner::uncovered_note(&uncovered, port));
                    t.push_str(&banner::qr_block(&link, config.qr, phone, !lan.is_empty()));
                    t.push('\n');
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
    use crate::hub::protocol::RoomName;

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
