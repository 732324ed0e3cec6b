//! `rtcdev probe`: checks STUN and TURN servers from a terminal or CI with webrtc-rs.
//!
//! It reports the mapped address and round trip of each STUN server, the relayed address
//! of each TURN server, and then whether data really crosses the relay (two relay-only
//! peer connections echoing over a data channel). Failures become a sentence and a next
//! step.
//!
//! The parts: `checks` (the STUN and TURN checks), `conn` (opening UDP, TCP and TLS
//! connections), `relay` (the relay echo), `report` (rows, verdicts, failure classes)
//! and `ice_servers` (reading `--ice-servers`). URLs are parsed in
//! [`crate::ice::url`].

mod checks;
mod conn;
mod ice_servers;
mod relay;
mod report;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::ice::url::IceUrl;
pub use ice_servers::{fetch_ice_servers, parse_ice_servers};
pub use relay::relay_echo;
pub use report::{Failure, Report, Row, Verdict};

/// Default time a server gets before it counts as unreachable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages echoed across the relay of each TURN server that allocates.
pub const RELAY_ECHOES: usize = 10;

/// One server to check: its URL and, for TURN, the credentials to allocate with.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its URL.
    pub url: IceUrl,
    /// TURN username.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

/// The probe's configuration: the servers, the time each gets, the CA to trust.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Servers.
    pub targets: Vec<Target>,
    /// Per-server timeout.
    pub timeout: Duration,
    /// rtcdev's CA directory, trusted (besides the system store) for `turns:`.
    pub ca_dir: Option<PathBuf>,
}

/// A whole `rtcdev probe` run as the command line gives it: the servers named there,
/// a list of ICE servers to fetch and add, the secret for TURN REST credentials.
#[derive(Debug, Clone)]
pub struct ProbeTask {
    /// The servers from `--stun` and `--turn`, the time each gets, the CA to trust.
    pub config: ProbeConfig,
    /// `--ice-servers`: a file, or an http(s) URL such as serve's `/config.json`.
    pub ice_servers: Option<String>,
    /// `--secret`: TURN servers without credentials get REST ones made from it.
    pub secret: Option<String>,
}

/// Fetches `--ice-servers` (if any), adds its servers and runs every check. Fails only
/// when the list cannot be read; a server that fails is a row of the report.
pub async fn run_task(task: &ProbeTask) -> anyhow::Result<Report> {
    let mut config = task.config.clone();
    if let Some(source) = &task.ice_servers {
        let text = fetch_ice_servers(source, config.ca_dir.as_deref()).await?;
        config.targets.extend(parse_ice_servers(&text, source)?);
    }
    Ok(run(&config, task.secret.as_deref()).await)
}

/// Runs every check; STUN and TURN servers are checked concurrently. TURN servers
/// without credentials get TURN REST ones made from `secret`, when given. With two or
/// more passing STUN servers, the report also says how the NAT maps.
pub async fn run(config: &ProbeConfig, secret: Option<&str>) -> Report {
    let pending = config.targets.iter().map(|t| async move {
        if t.url.is_turn() {
            checks::turn(t, config.timeout, secret, config.ca_dir.as_deref()).await
        } else {
            checks::stun(&t.url, config.timeout, config.ca_dir.as_deref()).await
        }
    });
    let servers = futures_util::future::join_all(pending).await;
    let stuns: Vec<&IceUrl> = config
        .targets
        .iter()
        .zip(&servers)
        .filter(|(t, r)| !t.url.is_turn() && r.passed())
        .map(|(t, _)| &t.url)
        .collect();
    let nat = if stuns.len() >= 2 {
        checks::nat_mapping(&stuns, config.timeout).await
    } else {
        None
    };
    Report { servers, nat }
}
