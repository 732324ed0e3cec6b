//! The `rtcdev` binary: parse arguments, set up tracing, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::CommandFactory;
use rtcdev::cert::command::{self as cert_cmd, CertTask};
use rtcdev::cli::{Cli, Command, ServeTask};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::prelude::*;

/// See `server::heap` for why, and how its memory goes back to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_with_env();
    init_tracing(cli.verbose);
    rtcdev::cert::tls::install_default_provider();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rtcdev: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        // Other crates (webrtc-rs above all) log routine events as warnings.
        0 => "rtcdev=info,error",
        1 => "rtcdev=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter.and(OtherCratesGated));
    tracing_subscriber::registry().with(lines).init();
}

/// rtcdev's own repeated lines go through `info_limited!`; other crates' are gated by
/// where they come from, one line per target and level every `LOG_EVERY`: a client can
/// make the TURN library log an error for every datagram it sends. Decided per event
/// (`event_enabled`), since `enabled` may be asked more than once for one line.
struct OtherCratesGated;

impl<S> tracing_subscriber::layer::Filter<S> for OtherCratesGated {
    /// It never lets more through than the level filter it is combined with; without
    /// this hint the combination has none, every `log` record of every crate (one per
    /// WebSocket frame from tungstenite) is bridged into tracing to be filtered out,
    /// and that was 13 % of the hub's CPU under load.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        meta.target().starts_with("rtcdev")
            || rtcdev::hub::limits::log_gate(&format!("{} {}", meta.target(), meta.level()))
                .is_some()
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(
        cli.command,
        Command::Serve(_) | Command::Signal(_) | Command::Turn(_)
    ) {
        // Before anything else: a signal during start-up still gets a graceful close.
        rtcdev::server::watch_signals_now();
    }
    match cli.command {
        Command::Cert(args) => {
            let json = args.json;
            let config = args.into_config(cli.ca_dir)?;
            if let CertTask::Caroot = config.task {
                rtcdev::server::print_stdout(&format!("{}\n", config.ca.dir.display()));
                return Ok(ExitCode::SUCCESS);
            }
            let report = cert_cmd::run(&config)?;
            cert_cmd::print(&report, json)?;
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Serve(args) => match args.into_task(cli.ca_dir)? {
            ServeTask::Print(text) => {
                rtcdev::server::print_stdout(&text);
                Ok(ExitCode::SUCCESS)
            }
            ServeTask::Run(config) => {
                run_server(rtcdev::serve::run(
                    *config,
                    rtcdev::server::shutdown_signal(),
                ))?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Probe(args) => {
            let (task, json) = args.into_task(cli.ca_dir).unwrap_or_else(|e| e.exit());
            runtime()?.block_on(probe(task, json))
        }
        Command::Turn(args) => {
            let (config, json, _generated) = args.into_config(cli.ca_dir)?;
            run_server(rtcdev::turn::run(
                config,
                json,
                rtcdev::server::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            // Into a buffer first: a closed pipe (`| head`) is no panic.
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "rtcdev", &mut out);
            rtcdev::server::print_stdout(&String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            rtcdev::server::print_stdout(&String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Command::Signal(args) => {
            let https = args.tls || args.listen.cert.is_some();
            if let Some(site) = args.nginx.site(args.port, https, &args.listen) {
                rtcdev::server::print_stdout(&site);
                return Ok(ExitCode::SUCCESS);
            }
            let config = args.into_config(cli.ca_dir)?;
            run_server(rtcdev::signal::run(
                config,
                rtcdev::server::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a server to its end on the runtime's workers: the accept loop then allocates
/// each connection's task from a worker's heap, which that worker gives back when it
/// goes idle (`server::heap`), and its spawns go to that worker's own queue.
fn run_server(
    server: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        tokio::spawn(server)
            .await
            .map_err(|e| anyhow::anyhow!("the server stopped unexpectedly: {e}"))?
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A worker with nothing to do gives its free heap back (server::heap).
        .on_thread_park(rtcdev::server::heap::collect_when_idle)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

async fn probe(task: rtcdev::probe::ProbeTask, json: bool) -> anyhow::Result<ExitCode> {
    let report = rtcdev::probe::run_task(&task).await?;
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.table()
    };
    rtcdev::server::print_stdout(&text);
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
