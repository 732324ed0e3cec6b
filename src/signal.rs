//! `rtcdev signal`: the hub alone on one port, plain HTTP/WS by default (a drop-in for
//! a plain socket.io signaling server on port 3000), HTTPS with a certificate.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::{Json, Router};

use crate::cert::CaLocation;
use crate::cert::ca::{Ca, LeafRequest};
use crate::cert::tls::{self, SwappableCert};
use crate::hub::{Hub, HubConfig};
use crate::net;
use crate::server::origin::{self, Policy};

/// Where `signal` gets a certificate, if it serves HTTPS.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files given by the user.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A leaf issued now by the local CA for localhost and the LAN addresses.
    LocalCa(CaLocation),
}

/// Everything `rtcdev signal` needs.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// HTTPS, if any.
    pub tls: Option<TlsSource>,
    /// Origins whose pages may use the hub (empty: any).
    pub allow_origins: Vec<String>,
    /// Host names it answers to (empty: any).
    pub allowed_hosts: Vec<String>,
    /// Hub limits and ICE servers.
    pub hub: HubConfig,
    /// Print the URLs as JSON.
    pub json: bool,
}

/// The hub's routes plus `/healthz`, with CORS; pages of origins not allowed get 403
/// on the hub.
pub fn router(hub: &Hub, allow_origins: &[String]) -> Result<Router> {
    router_with_hosts(hub, allow_origins, &[])
}

/// [`router`], answering only under IPs, localhost, this host's names and
/// `allowed_hosts` when that is not empty.
pub fn router_with_hosts(
    hub: &Hub,
    allow_origins: &[String],
    allowed_hosts: &[String],
) -> Result<Router> {
    let health = hub.clone();
    let policy = Policy::public(allow_origins, allowed_hosts);
    Ok(hub
        .routes()
        .layer(from_fn_with_state(policy.clone(), origin::check_origin))
        .route("/healthz", get(move || async move { Json(health.stats()) }))
        .layer(policy.cors())
        .layer(from_fn_with_state(policy, origin::check_host)))
}

/// Loads or issues the server certificate.
pub fn load_tls(source: &TlsSource) -> Result<Arc<rustls::ServerConfig>> {
    let key = match source {
        TlsSource::Files { cert, key } => {
            let cert_pem = std::fs::read(cert)
                .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
            let key_pem = std::fs::read(key)
                .with_context(|| format!("cannot read the key {}", key.display()))?;
            tls::certified_key_from_pem(&cert_pem, &key_pem, &cert.display().to_string())?
        }
        TlsSource::LocalCa(location) => {
            let (ca, _) = Ca::load_or_create(&location.dir)?;
            let (names, left_out) = ca.permitted(&net::default_cert_names());
            for n in &left_out {
                tracing::warn!(name = %n, "left out of the certificate: the local CA is name-constrained to local names");
            }
            let leaf = ca.issue(&LeafRequest {
                names,
                days: crate::cert::ca::DEFAULT_LEAF_DAYS,
                client: false,
            })?;
            tls::certified_key_from_pem(
                leaf.cert_pem.as_bytes(),
                leaf.key_pem.as_bytes(),
                "the issued leaf",
            )?
        }
    };
    Ok(Arc::new(tls::server_config(SwappableCert::new(key))?))
}

/// The URLs a user can reach the hub on.
pub fn urls(addr: SocketAddr, https: bool) -> (Vec<String>, Vec<String>) {
    let scheme = if https { "https" } else { "http" };
    let port = addr.port();
    let local = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        let host = if addr.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            net::url_host(&addr.ip())
        };
        vec![format!("{scheme}://{host}:{port}")]
    } else {
        Vec::new()
    };
    let network = if addr.ip().is_unspecified() {
        net::lan_addresses()
            .iter()
            .filter(|ip| ip.is_ipv4() == addr.is_ipv4() || addr.is_ipv6())
            .map(|ip| format!("{scheme}://{}:{port}", net::url_host(ip)))
            .collect()
    } else if addr.ip().is_loopback() {
        Vec::new()
    } else {
        vec![format!("{scheme}://{}:{port}", net::url_host(&addr.ip()))]
    };
    (local, network)
}

/// Runs the hub until `shutdown`.
pub async fn run(
    config: SignalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let listener = crate::server::bind(config.addr)?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let hub = Hub::start(config.hub.clone()).await?;
    let app = router_with_hosts(&hub, &config.allow_origins, &config.allowed_hosts)?;
    let (local, network) = urls(addr, tls.is_some());
    let text = if config.json {
        serde_json::json!({"local": local, "network": network, "ws": "/ws", "socketio": "/socket.io/", "healthz": "/healthz"})
            .to_string()
            + "\n"
    } else {
        let mut t = String::from(
            "rtcdev signal: the hub is up (native WebSocket at /ws, socket.io at /socket.io/)\n\n",
        );
        for url in &local {
            t.push_str(&format!("  Local:   {url}\n"));
        }
        for url in &network {
            t.push_str(&format!("  Network: {url}\n"));
        }
        if config.allow_origins.is_empty() {
            t.push_str(
                "\n  Pages of any origin may use this hub (restrict it with --allow-origin).\n",
            );
        } else {
            t.push_str(&format!(
                "\n  Pages of {} may use this hub; others get 403.\n",
                config.allow_origins.join(", ")
            ));
        }
        t + "\n"
    };
    crate::server::print_stdout(&text);
    crate::server::serve(listener, app, tls, Some(hub), shutdown).await
}
