//! `rtcdev signal`: the hub alone on one port, plain HTTP/WS by default (a drop-in for
//! a plain socket.io signaling server on port 3000), HTTPS with a certificate.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::{Json, Router};

use crate::cert::tls::TlsSource;
use crate::hub::{Hub, HubConfig};
use crate::net;
use crate::server::origin::{self, Policy};

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
    /// Print the URLs at start (off for a hub run inside another program or a test).
    pub banner: bool,
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
    let network = net::reachable(addr.ip(), &net::lan_addresses())
        .iter()
        .map(|ip| format!("{scheme}://{}:{port}", net::url_host(ip)))
        .collect();
    (local, network)
}

/// Binds `config.addr`, starts a hub from `config.hub` and runs it until `shutdown`.
pub async fn run(
    config: SignalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // The certificate first: a bad file is reported before the port is taken.
    let tls = config
        .tls
        .as_ref()
        .map(TlsSource::server_config)
        .transpose()?;
    let listener = crate::server::bind(config.addr)?;
    let hub = Hub::start(config.hub.clone()).await?;
    serve_on(listener, hub, tls, &config, shutdown).await
}

/// Serves `hub` on a listener the caller bound (tests bind 127.0.0.1:0 and keep the
/// hub to look into) until `shutdown`. `config.addr` and `config.hub` are [`run`]'s.
pub async fn run_on(
    listener: std::net::TcpListener,
    hub: Hub,
    config: &SignalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tls = config
        .tls
        .as_ref()
        .map(TlsSource::server_config)
        .transpose()?;
    serve_on(listener, hub, tls, config, shutdown).await
}

async fn serve_on(
    listener: std::net::TcpListener,
    hub: Hub,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    config: &SignalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
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
    if config.banner {
        crate::server::print_stdout(&text);
    }
    crate::server::serve(listener, app, tls, Some(hub), shutdown).await
}
