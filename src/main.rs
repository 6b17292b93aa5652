//! The `gridedge` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gridedge::config::Config;

#[derive(Parser)]
#[command(
    name = "gridedge",
    version,
    about = "Contact-center edge daemon: SIP registrar, presence, pacing, recording, grid forwarding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded defaults when no --config is given).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit: 0 when valid, 2 with the offending key otherwise.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
                // What `run` would refuse at start-up, check-config refuses too.
                if let (true, Some(cert), Some(key)) =
                    (cfg.tls_enabled(), &cfg.sip.tls_cert, &cfg.sip.tls_key)
                {
                    if let Err(e) = gridedge::sip::transport::tls::acceptor(cert, key) {
                        let detail = std::error::Error::source(&e)
                            .map(|s| format!(": {s}"))
                            .unwrap_or_default();
                        eprintln!("gridedge: invalid configuration: {e}{detail}");
                        return ExitCode::from(2);
                    }
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gridedge: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let cfg = match &config {
                Some(path) => Config::load(path),
                None => Config::parse(""),
            };
            let cfg = match cfg {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("gridedge: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let log = gridedge::daemon::init_logging(&cfg);
            let rt = match gridedge::daemon::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("gridedge: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(gridedge::daemon::run(cfg, config, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "gridedge failed");
                    eprintln!("gridedge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
