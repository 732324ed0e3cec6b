//! Command-line definitions (clap), and their conversion into validated configs. No
//! other module sees clap types.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::cert::ca::{CaLocation, DEFAULT_LEAF_DAYS};
use crate::cert::command::{CertConfig, CertTask, IssueConfig};
use crate::cert::names::{default_paths, parse_names};
use crate::cert::tls::TlsSource;
use crate::cert::trust::StoreKind;
use crate::hub::{self, HubConfig};
use crate::ice::url::IceUrl;
use crate::ice::{IceConfig, TurnAuth};
use crate::probe::{ProbeConfig, ProbeTask, Target};
use crate::serve::{Content, QrMode, ServeConfig};
use crate::signal::SignalConfig;

/// Everything a local WebRTC call needs, in one binary.
#[derive(Debug, Parser)]
#[command(name = "rtcdev", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Directory of the local CA (rootCA.pem, rootCA-key.pem), also from RTCDEV_CAROOT
    /// (set but empty counts as unset). Default: mkcert's CAROOT if set, else the
    /// platform data directory (~/.local/share/rtcdev on Linux).
    #[arg(long, global = true, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Local CA and trusted certificates (mkcert-compatible).
    Cert(CertArgs),
    /// The calling page and the hub on one trusted HTTPS origin, with LAN URLs and a QR code.
    Serve(ServeArgs),
    /// The signaling hub alone (a drop-in for a typical socket.io signaling server).
    Signal(SignalArgs),
    /// Check STUN/TURN servers: mapped and relayed addresses, credentials, data across the relay.
    Probe(ProbeArgs),
    /// A local STUN/TURN server (UDP, TCP, TLS) for testing relay paths.
    Turn(TurnArgs),
    /// Shell completions (bash, zsh, fish, elvish, powershell), on stdout.
    Completions(CompletionsArgs),
    /// The manual page (roff), on stdout.
    #[command(
        after_help = "Example:\n  rtcdev man > ~/.local/share/man/man1/rtcdev.1 && man rtcdev"
    )]
    Man,
}

/// `rtcdev completions`.
#[derive(Debug, Args)]
#[command(
    after_help = "Install:\n  bash: rtcdev completions bash > ~/.local/share/bash-completion/completions/rtcdev\n  zsh:  rtcdev completions zsh > ~/.zfunc/_rtcdev   (with fpath+=~/.zfunc before compinit)\n  fish: rtcdev completions fish > ~/.config/fish/completions/rtcdev.fish\n  PowerShell: rtcdev completions powershell >> $PROFILE"
)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `rtcdev probe`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every server passed, 1 one failed, 2 usage error.\nExamples:\n  rtcdev probe --stun stun:stun.example.org:3478\n  rtcdev probe --turn turn:127.0.0.1:3478 --username u --credential p\n  rtcdev probe --ice-servers https://localhost:8443/config.json"
)]
pub struct ProbeArgs {
    /// STUN server URL (repeatable).
    #[arg(long, value_name = "URL", value_parser = parse_ice_url)]
    pub stun: Vec<IceUrl>,
    /// TURN server URL (repeatable): turn:HOST:PORT[?transport=udp|tcp] or turns:HOST:PORT.
    #[arg(long, value_name = "URL", value_parser = parse_ice_url)]
    pub turn: Vec<IceUrl>,
    /// TURN username.
    #[arg(long, env = "RTCDEV_TURN_USER")]
    pub username: Option<String>,
    /// TURN password.
    #[arg(long, env = "RTCDEV_TURN_PASS", hide_env_values = true)]
    pub credential: Option<String>,
    /// TURN REST shared secret: short-lived credentials are made from it.
    #[arg(long, env = "RTCDEV_TURN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// An iceServers JSON as a browser gets it: a file, or https://.../config.json of rtcdev serve.
    #[arg(long, value_name = "FILE_OR_URL")]
    pub ice_servers: Option<String>,
    /// How long a server gets before it counts as unreachable (e.g. 5s, 800ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_ice_url(s: &str) -> Result<IceUrl, String> {
    IceUrl::parse(s).map_err(|e| format!("{e:#}"))
}

impl ProbeArgs {
    /// The probe's task and whether to print JSON. Naming no server at all is a usage
    /// error (exit 2), as a bad URL is.
    pub fn into_task(self, ca_dir: Option<PathBuf>) -> Result<(ProbeTask, bool), clap::Error> {
        if self.stun.is_empty() && self.turn.is_empty() && self.ice_servers.is_none() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "nothing to probe: give --stun URL, --turn URL or --ice-servers FILE_OR_URL",
            ));
        }
        let targets = self
            .stun
            .into_iter()
            .chain(self.turn)
            .map(|url| Target {
                url,
                username: self.username.clone(),
                credential: self.credential.clone(),
            })
            .collect();
        let task = ProbeTask {
            config: ProbeConfig {
                targets,
                timeout: self.timeout,
                ca_dir,
            },
            ice_servers: self.ice_servers,
            secret: self.secret,
        };
        Ok((task, self.json))
    }
}

impl Cli {
    /// Parses the command line, then takes `RTCDEV_CAROOT` for `--ca-dir` when the flag is
    /// absent. Read here rather than by clap, which refuses a variable that is set but
    /// empty (as shells and .env files leave it) for every command.
    pub fn parse_with_env() -> Cli {
        let mut cli = Cli::parse();
        if cli.ca_dir.is_none() {
            cli.ca_dir = std::env::var_os("RTCDEV_CAROOT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
        }
        cli
    }
}

/// `rtcdev turn`.
#[derive(Debug, Args)]
pub struct TurnArgs {
    /// UDP port.
    #[arg(long, short, default_value_t = crate::turn::DEFAULT_PORT, env = "RTCDEV_TURN_PORT")]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "RTCDEV_TURN_BIND")]
    pub bind: IpAddr,
    /// The realm the server names in its 401 answers (long-term passwords are keyed on it).
    #[arg(long, default_value = "rtcdev")]
    pub realm: String,
    /// A long-term user NAME:PASSWORD (repeatable). Without --user or --secret, user "rtcdev" gets a random password.
    #[arg(
        long,
        value_name = "NAME:PASS",
        env = "RTCDEV_TURN_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub user: Vec<String>,
    /// TURN REST shared secret (coturn's static-auth-secret).
    #[arg(long, env = "RTCDEV_TURN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The address relayed candidates carry (behind NAT: the public one).
    #[arg(long, value_name = "IP")]
    pub external_ip: Option<IpAddr>,
    /// Relay port range.
    #[arg(long, default_value = "49152-65535", value_name = "LOW-HIGH")]
    pub relay_ports: String,
    /// Also serve TURN over TLS (`turns:`) on this port (5349 is the usual one), with
    /// --cert/--key or a certificate from the local CA.
    #[arg(long, value_name = "PORT")]
    pub tls_port: Option<u16>,
    /// TLS certificate chain (PEM) for --tls-port.
    #[arg(long, value_name = "FILE", requires = "tls_port", requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM) for --tls-port.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Print the URLs and iceServers as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub guard: TurnGuardArgs,
}

/// What the TURN server relays to, and how much one client may hold.
#[derive(Debug, Args)]
#[command(next_help_heading = "TURN peers and quotas")]
pub struct TurnGuardArgs {
    /// Relay to loopback peers (127.0.0.0/8, ::1) too. Refused by default: anyone with
    /// credentials could reach this host's local services through the relay.
    #[arg(long)]
    pub allow_loopback_peers: bool,
    /// Always relay to this address or CIDR block (repeatable; before every other rule),
    /// e.g. a link-local range or a service on this host.
    #[arg(long, value_name = "CIDR", value_parser = crate::turn::policy::parse_net, value_delimiter = ',')]
    pub allow_peer: Vec<ipnet::IpNet>,
    /// Never relay to this address or CIDR block (repeatable), e.g. a VPN or Docker range.
    #[arg(long, value_name = "CIDR", value_parser = crate::turn::policy::parse_net, value_delimiter = ',')]
    pub deny_peer: Vec<ipnet::IpNet>,
    /// Allocations one user name, and one client address, may hold (more: 486).
    #[arg(long, default_value_t = crate::turn::guard::DEFAULT_USER_QUOTA, value_name = "N", value_parser = positive_usize())]
    pub user_quota: usize,
    /// Allocations the server holds in all (more: 508).
    #[arg(long, default_value_t = crate::turn::guard::DEFAULT_TOTAL_QUOTA, value_name = "N", value_parser = positive_usize())]
    pub total_quota: usize,
}

impl TurnGuardArgs {
    /// The guard's configuration.
    pub fn config(&self) -> crate::turn::GuardConfig {
        crate::turn::GuardConfig {
            allow_loopback_peers: self.allow_loopback_peers,
            allow_peers: self.allow_peer.clone(),
            deny_peers: self.deny_peer.clone(),
            user_quota: self.user_quota,
            total_quota: self.total_quota,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 800ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: use ms, s or m")),
    };
    if !(secs > 0.0 && secs < 3600.0) {
        return Err(format!("{s:?}: between 1ms and 1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl TurnArgs {
    /// Validates the arguments.
    pub fn into_config(
        self,
        ca_dir: Option<PathBuf>,
    ) -> Result<(crate::turn::TurnConfig, bool, Option<String>)> {
        let tls = match self.tls_port {
            Some(port) => {
                let source = match (self.cert, self.key) {
                    (Some(cert), Some(key)) => TlsSource::Files { cert, key },
                    _ => TlsSource::LocalCa(CaLocation::resolve(ca_dir.as_deref())?),
                };
                Some((port, source))
            }
            None => None,
        };
        let mut users = self
            .user
            .iter()
            .map(|u| crate::turn::parse_user(u))
            .collect::<Result<Vec<_>>>()?;
        let mut generated = None;
        if users.is_empty() && self.secret.is_none() {
            let pass = crate::turn::random_password();
            generated = Some(pass.clone());
            users.push(("rtcdev".into(), pass));
        }
        Ok((
            crate::turn::TurnConfig {
                bind: self.bind,
                port: self.port,
                realm: self.realm,
                users,
                secret: self.secret,
                external_ip: self.external_ip,
                relay_ports: crate::turn::parse_port_range(&self.relay_ports)?,
                tls,
                guard: self.guard.config(),
                rest_ttl: crate::ice::DEFAULT_TURN_CREDENTIAL_TTL,
            },
            self.json,
            generated,
        ))
    }
}

/// `rtcdev serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Routes: / (the calling page, or --dir), /ws and /socket.io/ (the hub), /config.json (ICE servers),\n/qr.svg?room=R, /healthz; plain HTTP on the same port: /join?room=R (phone onboarding), /ca.pem, /ca.mobileconfig."
)]
pub struct ServeArgs {
    /// Port for HTTPS and plain HTTP (default 8443; if taken, the next free one of the ten after it).
    #[arg(long, short, env = "RTCDEV_PORT")]
    pub port: Option<u16>,

    #[command(flatten)]
    pub listen: ListenArgs,

    /// The room the printed links and the QR code open (default: a random one).
    #[arg(long, env = "RTCDEV_ROOM")]
    pub room: Option<String>,

    /// Serve this folder instead of the bundled calling page.
    #[arg(long, value_name = "DIR", env = "RTCDEV_DIR", conflicts_with = "proxy")]
    pub dir: Option<PathBuf>,

    /// With --dir: serve dotfiles (.env, .git/) and key files (*.pem, *.key, *.p12, *.pfx,
    /// *.crt) too; by default they answer 404.
    #[arg(long, requires = "dir")]
    pub hidden: bool,

    /// Forward everything rtcdev does not own (WebSocket upgrades too) to a dev server, e.g. http://localhost:5173.
    #[arg(long, value_name = "URL", env = "RTCDEV_PROXY")]
    pub proxy: Option<String>,

    /// With --proxy: put rtcdev's inspector agent at the top of the app's HTML pages, so
    /// its own RTCPeerConnections show in /inspect and get verdicts (nothing else in
    /// the page changes).
    #[arg(long, requires = "proxy")]
    pub inspect: bool,

    /// Print the terminal QR code even when stdout is not a terminal (not when no phone can
    /// open the link: rtcdev listens on loopback, or has no network).
    #[arg(long, conflicts_with = "no_qr")]
    pub qr: bool,

    /// Never print the terminal QR code.
    #[arg(long)]
    pub no_qr: bool,

    /// Open the room in this machine's browser once the server is up ($BROWSER, or the
    /// system's default).
    #[arg(long)]
    pub open: bool,

    /// Print only the URLs.
    #[arg(long, short)]
    pub quiet: bool,

    /// Print the URLs as one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub nginx: NginxArgs,

    /// For the embedded TURN server (`--turn` without a URL).
    #[command(flatten)]
    pub turn_guard: TurnGuardArgs,

    /// Print a systemd unit that keeps this server running, and exit.
    #[arg(long)]
    pub print_systemd: bool,

    #[command(flatten)]
    pub hub: HubArgs,

    #[command(flatten)]
    pub ice: IceArgs,
}

/// `--print-nginx` and its upstreams, for `serve` and `signal`.
#[derive(Debug, Args)]
pub struct NginxArgs {
    /// Print an nginx site that proxies HTTPS and WebSockets to this server, and exit.
    #[arg(long)]
    pub print_nginx: bool,

    /// With --print-nginx: a hub process (HOST:PORT) to balance across (repeatable), for
    /// processes that share rooms through --redis.
    #[arg(long, value_name = "HOST:PORT", requires = "print_nginx", value_parser = parse_upstream)]
    pub upstream: Vec<String>,
}

impl NginxArgs {
    /// The nginx site, if asked for: HTTPS terminates in nginx with --cert/--key (or the
    /// files `rtcdev cert` would write there) and goes to this server on `port`.
    pub fn site(&self, port: u16, upstream_https: bool, listen: &ListenArgs) -> Option<String> {
        if !self.print_nginx {
            return None;
        }
        let cert = listen
            .cert
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/ssl/rtcdev/cert.pem"));
        let key = listen
            .key
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/ssl/rtcdev/key.pem"));
        Some(crate::serve::deploy::nginx_site(
            port,
            upstream_https,
            &cert,
            &key,
            &self.upstream,
        ))
    }
}

/// What `rtcdev serve` was asked to do.
pub enum ServeTask {
    /// Run the server.
    Run(Box<ServeConfig>),
    /// Print text (nginx site, systemd unit) and exit.
    Print(String),
}

impl ServeArgs {
    /// Validates the arguments.
    pub fn into_task(self, ca_dir: Option<PathBuf>) -> Result<ServeTask> {
        let port = self.port.unwrap_or(crate::serve::DEFAULT_PORT);
        let location = CaLocation::resolve(ca_dir.as_deref())?;
        // nginx needs the certificate as files: the given ones, or ones from `rtcdev cert`.
        if let Some(site) = self.nginx.site(port, true, &self.listen) {
            return Ok(ServeTask::Print(site));
        }
        if self.print_systemd {
            let mut args = format!("--port {port} --bind {}", self.listen.bind);
            if let Some(room) = &self.room {
                args.push_str(&format!(" --room {room}"));
            }
            return Ok(ServeTask::Print(crate::serve::deploy::systemd_unit(
                &args,
                &location.dir,
            )));
        }
        let room = match self.room {
            Some(r) => crate::hub::protocol::RoomName::parse(&r)
                .map_err(|e| anyhow::anyhow!("--room {r:?}: {e}"))?
                .as_str()
                .to_string(),
            None => crate::serve::random_room(),
        };
        let content = match (&self.dir, &self.proxy) {
            (Some(d), _) => crate::serve::content_dir_with(d, self.hidden)?,
            (None, Some(url)) => Content::Proxy(Box::new(
                crate::serve::proxy::Proxy::new(url)?.with_inspect(self.inspect),
            )),
            (None, None) => Content::Bundled,
        };
        let tls = match (self.listen.cert, self.listen.key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            _ => TlsSource::LocalCa(location),
        };
        let rest_ttl = Duration::from_secs(self.ice.turn_ttl);
        let (ice, embedded) = self.ice.into_config()?;
        if embedded && (!ice.turn.is_empty() || ice.turn_auth.is_some()) {
            bail!(
                "--turn without a URL runs rtcdev's own TURN server with its own secret; leave out the other --turn URLs and TURN credentials"
            );
        }
        let embedded_turn = embedded.then(|| crate::turn::TurnConfig {
            bind: self.listen.bind,
            port: crate::turn::DEFAULT_PORT,
            realm: "rtcdev".into(),
            users: Vec::new(),
            secret: Some(crate::turn::random_password()),
            external_ip: None,
            relay_ports: crate::turn::DEFAULT_RELAY_PORTS,
            tls: None,
            guard: self.turn_guard.config(),
            rest_ttl,
        });
        Ok(ServeTask::Run(Box::new(ServeConfig {
            bind: self.listen.bind,
            port,
            port_explicit: self.port.is_some(),
            room,
            content,
            tls,
            hub: self.hub.into_config(ice, crate::serve::MESH_ROOM_SIZE)?,
            allow_origins: self.listen.allow_origin,
            allowed_hosts: self.listen.allowed_host,
            qr: if self.qr {
                QrMode::Always
            } else if self.no_qr {
                QrMode::Never
            } else {
                QrMode::Auto
            },
            quiet: self.quiet,
            open: self.open,
            json: self.json,
            lan_poll: crate::serve::LAN_POLL_INTERVAL,
            lan: std::sync::Arc::new(crate::net::lan_addresses),
            embedded_turn,
        })))
    }
}

/// `rtcdev signal`.
#[derive(Debug, Args)]
#[command(
    after_help = "Endpoints: /ws (native protocol), /socket.io/ (socket.io v2-v4 clients), /healthz.\nExamples:\n  rtcdev signal                     http://0.0.0.0:3000, like a socket.io server.js\n  rtcdev signal --tls               HTTPS with a certificate from the local CA"
)]
pub struct SignalArgs {
    /// Port to listen on (0: any free port).
    #[arg(long, short, default_value_t = 3000, env = "RTCDEV_PORT")]
    pub port: u16,

    #[command(flatten)]
    pub listen: ListenArgs,

    /// Serve HTTPS with a certificate from the local CA (created on first use).
    #[arg(long, conflicts_with = "cert")]
    pub tls: bool,

    /// Print the URLs as JSON.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub nginx: NginxArgs,

    #[command(flatten)]
    pub hub: HubArgs,

    #[command(flatten)]
    pub ice: IceArgs,
}

/// Where and how `serve` and `signal` listen.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "RTCDEV_BIND")]
    pub bind: IpAddr,

    /// TLS certificate (PEM) to serve HTTPS with (serve's default: one from the local CA); needs --key.
    #[arg(long, value_name = "FILE", requires = "key", env = "RTCDEV_CERT")]
    pub cert: Option<PathBuf>,

    /// TLS private key (PEM) for --cert.
    #[arg(long, value_name = "FILE", requires = "cert", env = "RTCDEV_KEY")]
    pub key: Option<PathBuf>,

    /// Let pages of this origin (scheme://host[:port], repeatable) use the hub and
    /// /config.json. `serve` allows its own origins and these; `signal` any origin
    /// unless this is given. Pages of other origins get 403 on the hub.
    #[arg(
        long,
        value_name = "ORIGIN",
        env = "RTCDEV_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_parser = crate::server::origin::parse_origin
    )]
    pub allow_origin: Vec<String>,

    /// `serve` answers only under IP addresses, localhost and this host's names (a
    /// defence against DNS rebinding); let it answer under this name too (repeatable).
    /// `signal` answers under any name unless this is given.
    #[arg(
        long,
        value_name = "HOST",
        env = "RTCDEV_ALLOWED_HOST",
        value_delimiter = ','
    )]
    pub allowed_host: Vec<String>,
}

/// Hub limits.
#[derive(Debug, Args)]
#[command(next_help_heading = "Hub limits")]
pub struct HubArgs {
    /// Largest frame a peer may send, in bytes, 1024 to 16 MiB (larger: WebSocket close
    /// 1009).
    #[arg(long, default_value_t = hub::DEFAULT_MAX_FRAME_BYTES, value_name = "BYTES", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1024..=16 * 1024 * 1024), |n| n as usize))]
    pub max_frame: usize,

    /// Peers a room holds, 2 to 256 (default: 8 for serve, the most its mesh call
    /// carries well, and the page learns it; 16 for signal).
    #[arg(long, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(2..=256), |n| n as usize))]
    pub room_size: Option<usize>,

    /// Sustained frames a second per connection.
    #[arg(long, default_value_t = hub::DEFAULT_RATE_PER_SEC, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,

    /// Frames a connection may send in a burst.
    #[arg(long, default_value_t = hub::DEFAULT_RATE_BURST, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,

    /// Bytes queued for a peer that does not read before it is disconnected (close 1008);
    /// at least --max-frame.
    #[arg(long, default_value_t = hub::DEFAULT_MAX_QUEUE_BYTES, value_name = "BYTES", value_parser = positive_usize())]
    pub max_queue: usize,

    /// Seconds of silence (no frame, no pong) after which a connection is dropped.
    #[arg(long, default_value_t = hub::DEFAULT_HEARTBEAT_TIMEOUT.as_secs(), value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat: u64,

    /// Hub connections one client address may hold (WebSocket and
    /// socket.io together; more get HTTP 429); its TCP connections of every kind may be
    /// this and 64 more, at least 256.
    #[arg(long, default_value_t = hub::DEFAULT_MAX_CONNS_PER_IP, value_name = "N", value_parser = positive_usize())]
    pub max_conns_per_ip: usize,

    /// Hub connections in all (more get HTTP 503).
    #[arg(long, default_value_t = hub::DEFAULT_MAX_CONNS, value_name = "N", value_parser = positive_usize())]
    pub max_conns: usize,

    /// New hub connections a second one client address may open (bursts of four times
    /// as many; more get HTTP 429).
    #[arg(long, default_value_t = hub::DEFAULT_CONN_RATE_PER_SEC, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub conn_rate: u32,

    /// Joins a second one client address may make, over all its connections (bursts of
    /// six times as many; more get a rate-limited error): nobody tries room names fast.
    #[arg(long, default_value_t = hub::DEFAULT_JOIN_RATE, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub join_rate: u32,

    /// Share rooms with other hub processes through this Redis (redis://HOST:PORT[/DB]):
    /// any number of hubs behind a load balancer act as one.
    #[arg(long, value_name = "URL", env = "RTCDEV_REDIS", value_parser = parse_redis_url)]
    pub redis: Option<String>,
}

fn parse_upstream(u: &str) -> Result<String, String> {
    let ok = u
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        && !u.contains(|c: char| c.is_whitespace() || c == ';' || c == '{' || c == '}');
    if ok {
        Ok(u.to_string())
    } else {
        Err("give HOST:PORT, e.g. 127.0.0.1:8443".into())
    }
}

fn parse_redis_url(s: &str) -> Result<String, String> {
    redis::Client::open(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not a Redis URL ({e}); the form is redis://HOST:PORT[/DB]"))
}

/// ICE servers handed to clients.
#[derive(Debug, Args)]
#[command(next_help_heading = "ICE servers for clients")]
pub struct IceArgs {
    /// STUN server URL (repeatable), e.g. stun:stun.example.org:3478.
    #[arg(long, value_name = "URL", env = "RTCDEV_STUN", value_delimiter = ',')]
    pub stun: Vec<String>,

    /// TURN server URL (repeatable), e.g. turn:turn.example.org:3478?transport=udp. `rtcdev serve
    /// --turn` without a URL runs rtcdev's own TURN server alongside (UDP 3478).
    #[arg(long, value_name = "URL", env = "RTCDEV_TURN", value_delimiter = ',', num_args = 0..=1, default_missing_value = EMBEDDED_TURN)]
    pub turn: Vec<String>,

    /// TURN username (with --turn-pass).
    #[arg(
        long,
        value_name = "USER",
        env = "RTCDEV_TURN_USER",
        requires = "turn_pass"
    )]
    pub turn_user: Option<String>,

    /// TURN password (with --turn-user).
    #[arg(
        long,
        value_name = "PASS",
        env = "RTCDEV_TURN_PASS",
        hide_env_values = true,
        requires = "turn_user"
    )]
    pub turn_pass: Option<String>,

    /// TURN REST shared secret (coturn static-auth-secret): clients get short-lived credentials.
    #[arg(
        long,
        value_name = "SECRET",
        env = "RTCDEV_TURN_SECRET",
        hide_env_values = true,
        conflicts_with = "turn_user"
    )]
    pub turn_secret: Option<String>,

    /// How long the TURN REST credentials handed to clients (from --turn-secret, or of
    /// the embedded TURN server) stay valid, in seconds: anyone who loads the page gets
    /// them, so they are short-lived.
    #[arg(long, value_name = "SECS", default_value_t = crate::ice::DEFAULT_TURN_CREDENTIAL_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(60..=7 * 24 * 3600))]
    pub turn_ttl: u64,
}

/// A count of at least one, as a `usize`.
fn positive_usize() -> impl clap::builder::TypedValueParser<Value = usize> {
    clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize)
}

impl HubArgs {
    /// The hub configuration, with `room_size` unless `--room-size` was given; a queue
    /// smaller than one frame is an error.
    pub fn into_config(self, ice: IceConfig, room_size: usize) -> Result<HubConfig> {
        if self.max_queue < self.max_frame {
            bail!(
                "--max-queue {} is smaller than --max-frame {}: a peer could not be sent one frame",
                self.max_queue,
                self.max_frame
            );
        }
        Ok(HubConfig {
            max_frame_bytes: self.max_frame,
            max_peers_per_room: self.room_size.unwrap_or(room_size),
            rate_per_sec: self.rate,
            rate_burst: self.burst,
            max_queue_bytes: self.max_queue,
            heartbeat_timeout: Duration::from_secs(self.heartbeat),
            ice,
            redis: self.redis,
            max_conns_per_ip: self.max_conns_per_ip,
            max_conns: self.max_conns,
            conn_rate: (self.conn_rate, self.conn_rate.saturating_mul(4)),
            join_rate: (self.join_rate, self.join_rate.saturating_mul(6)),
            resume_secret: None,
        })
    }
}

impl IceArgs {
    /// Validates the URLs into an ICE configuration, and says whether the embedded TURN
    /// server was asked for (`--turn` without a URL).
    pub fn into_config(mut self) -> Result<(IceConfig, bool)> {
        let embedded = self.turn.iter().any(|t| t == EMBEDDED_TURN);
        self.turn.retain(|t| t != EMBEDDED_TURN);
        // One grammar for every ICE URL (the probe's); the page gets them as written.
        for (flag, url, turn) in self
            .stun
            .iter()
            .map(|u| ("--stun", u, false))
            .chain(self.turn.iter().map(|u| ("--turn", u, true)))
        {
            let (kind, form) = if turn {
                ("TURN", "turn:HOST:PORT or turns:HOST:PORT")
            } else {
                ("STUN", "stun:HOST:PORT")
            };
            match IceUrl::parse(url) {
                Ok(parsed) if parsed.is_turn() == turn => {}
                Ok(_) => bail!("{flag} {url:?} is not a {kind} URL; write it as {form}"),
                Err(e) => bail!("{flag} is not a {kind} URL: {e:#}; write it as {form}"),
            }
        }
        let turn_auth = match (self.turn_user, self.turn_pass, self.turn_secret) {
            (Some(username), Some(password), _) => Some(TurnAuth::Static { username, password }),
            (_, _, Some(secret)) => Some(TurnAuth::Secret {
                secret,
                ttl: Duration::from_secs(self.turn_ttl),
            }),
            _ => None,
        };
        if !self.turn.is_empty() && turn_auth.is_none() {
            bail!("--turn needs credentials: --turn-user and --turn-pass, or --turn-secret");
        }
        Ok((
            IceConfig {
                stun: self.stun,
                turn: self.turn,
                turn_auth,
            },
            embedded,
        ))
    }
}

/// What `--turn` without a URL stands for.
const EMBEDDED_TURN: &str = "embedded";

impl SignalArgs {
    /// Validates the arguments into a config.
    pub fn into_config(self, ca_dir: Option<PathBuf>) -> Result<SignalConfig> {
        let tls = match (self.listen.cert, self.listen.key, self.tls) {
            (Some(cert), Some(key), _) => Some(TlsSource::Files { cert, key }),
            (_, _, true) => Some(TlsSource::LocalCa(CaLocation::resolve(ca_dir.as_deref())?)),
            _ => None,
        };
        let (ice, embedded) = self.ice.into_config()?;
        if embedded {
            bail!(
                "--turn without a URL (rtcdev's own TURN server) is for rtcdev serve; run `rtcdev turn` next to `rtcdev signal` and pass its URL"
            );
        }
        Ok(SignalConfig {
            addr: SocketAddr::new(self.listen.bind, self.port),
            tls,
            allow_origins: self.listen.allow_origin,
            allowed_hosts: self.listen.allowed_host,
            hub: self.hub.into_config(ice, hub::DEFAULT_MAX_PEERS_PER_ROOM)?,
            json: self.json,
            banner: true,
        })
    }
}

/// `rtcdev cert`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  rtcdev cert                       certificate for localhost and every LAN address\n  rtcdev cert --install             trust the local CA in the system store and browsers\n  rtcdev cert example.test '*.example.test' 127.0.0.1\n  rtcdev cert --pkcs12 localhost    a .p12 bundle (password \"changeit\")"
)]
pub struct CertArgs {
    /// Names to cover: DNS names, IP addresses, *.wildcards, e-mail addresses, URIs.
    /// Default: localhost, 127.0.0.1, ::1, the host name, <host>.local and every LAN address.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Where to write the certificate (default ./<first-name>[+N].pem).
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,

    /// Where to write the private key (default ./<first-name>[+N]-key.pem).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Write a PKCS#12 bundle to FILE instead of PEM files.
    #[arg(long, value_name = "FILE")]
    pub p12_file: Option<PathBuf>,

    /// Write a PKCS#12 bundle (./<first-name>[+N].p12) instead of PEM files.
    #[arg(long)]
    pub pkcs12: bool,

    /// Issue a client-authentication certificate.
    #[arg(long)]
    pub client: bool,

    /// Leaf validity in days (825 is Apple's limit; WebTransport serverCertificateHashes needs <= 14).
    #[arg(long, default_value_t = DEFAULT_LEAF_DAYS, env = "RTCDEV_CERT_DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,

    /// Create the CA without name constraints, so it can vouch for public names too
    /// (only when the CA is created; by default a new CA can only vouch for localhost,
    /// .local, .test, .internal, .home.arpa, this host's name and private addresses).
    #[arg(long)]
    pub unconstrained_ca: bool,

    /// Install the local CA in the trust stores (system, NSS); with names, then issue.
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,

    /// Remove the local CA from the trust stores (its files stay).
    #[arg(long)]
    pub uninstall: bool,

    /// Print the CA directory and exit.
    #[arg(long, conflicts_with_all = ["install", "uninstall"])]
    pub caroot: bool,

    /// Trust stores for --install/--uninstall, comma-separated: system, nss.
    #[arg(
        long,
        env = "RTCDEV_TRUST_STORES",
        value_name = "LIST",
        default_value = "system,nss"
    )]
    pub trust_stores: String,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl CertArgs {
    /// Validates the arguments into a config.
    pub fn into_config(self, ca_dir: Option<PathBuf>) -> Result<CertConfig> {
        let ca = CaLocation::resolve(ca_dir.as_deref())?;
        let stores = StoreKind::parse_list(&self.trust_stores)?;
        let wants_leaf = !self.names.is_empty()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.p12_file.is_some()
            || self.pkcs12;
        let issue = || -> Result<IssueConfig> {
            let defaults = self.names.is_empty();
            let names = if defaults {
                crate::net::default_cert_names()
            } else {
                parse_names(&self.names)?
            };
            let (cert, key, p12) = default_paths(&names, self.client);
            let p12_file = match (&self.p12_file, self.pkcs12) {
                (Some(f), _) => Some(f.clone()),
                (None, true) => Some(p12),
                (None, false) => None,
            };
            Ok(IssueConfig {
                names,
                defaults,
                days: self.days,
                client: self.client,
                cert_file: self.cert_file.clone().unwrap_or(cert),
                key_file: self.key_file.clone().unwrap_or(key),
                p12_file,
            })
        };
        let task = if self.caroot {
            CertTask::Caroot
        } else if self.uninstall {
            CertTask::Uninstall
        } else if self.install {
            CertTask::Install(if wants_leaf { Some(issue()?) } else { None })
        } else {
            CertTask::Issue(issue()?)
        };
        Ok(CertConfig {
            ca,
            task,
            stores,
            unconstrained_ca: self.unconstrained_ca,
        })
    }
}
