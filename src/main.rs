//! The `rtcdev` binary: parse arguments, set up tracing, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use rtcdev::cert::command::{self as cert_cmd, CertTask};
use rtcdev::cli::{Cli, Command, ServeTask};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        0 => "rtcdev=info,rustls=error,warn",
        1 => "rtcdev=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
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
                runtime()?.block_on(rtcdev::serve::run(
                    *config,
                    rtcdev::server::shutdown_signal(),
                ))?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Signal(args) => {
            let config = args.into_config(cli.ca_dir)?;
            runtime()?.block_on(rtcdev::signal::run(
                config,
                rtcdev::server::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}
