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
    /// Discrete-event simulation of pacing policies (predictive-dialing.md §4): occupancy,
    /// abandon rates and calls per agent-hour per policy, as a table, JSON and an SVG plot.
    SimulateDialer {
        scenario: PathBuf,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        svg: Option<PathBuf>,
        #[arg(long)]
        replications: Option<u32>,
        /// Comma-separated, e.g. progressive,ratio-idle-1.5 (default: the scenario's list).
        #[arg(long)]
        policies: Option<String>,
    },
    /// Convert a backlog of recordings: spool WAVs with their JSON sidecars (left by a crash
    /// or a full queue), or `--add-format` to every stored recording; shows progress.
    Transcode(gridedge::recording::TranscodeArgs),
    /// Inspect the grid outbox and its dead letters (works while the daemon runs).
    Outbox {
        /// The daemon's config (for its state directory); embedded defaults when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        op: OutboxCmd,
    },
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// Pending depth, age of the oldest record, dead letters per target.
    Stats,
    /// Dead letters.
    Dead {
        #[command(subcommand)]
        op: DeadCmd,
    },
}

#[derive(Subcommand)]
enum DeadCmd {
    /// List dead letters (without payloads).
    List {
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only ids above this one (paging).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// One dead letter with its payload.
    Show { id: i64 },
    /// Put dead letters back into the outbox: one by id, or all (of a target) with --all.
    Replay {
        id: Option<i64>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        target: Option<String>,
    },
}

/// The config file, or the embedded defaults; exit code 2 naming the key when it is invalid.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    match path {
        Some(path) => Config::load(path),
        None => Config::parse(""),
    }
    .map_err(|e| {
        eprintln!("gridedge: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn outbox_command(config: Option<PathBuf>, op: OutboxCmd) -> ExitCode {
    use gridedge::outbox::cli::Op;
    use gridedge::outbox::store::ReplaySelection;
    use gridedge::outbox::Target;
    let cfg = match load_config(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let target = |t: Option<String>| -> Result<Option<Target>, String> {
        match t {
            None => Ok(None),
            Some(t) => Target::parse(&t)
                .map(Some)
                .ok_or_else(|| format!("--target: unknown target {t:?}")),
        }
    };
    let op = match op {
        OutboxCmd::Stats => Ok(Op::Stats),
        OutboxCmd::Dead { op } => match op {
            DeadCmd::List {
                target: t,
                limit,
                after,
            } => target(t).map(|target| Op::List {
                target,
                limit: limit.min(100_000),
                after,
            }),
            DeadCmd::Show { id } => Ok(Op::Show(id)),
            DeadCmd::Replay { id, all, target: t } => match (id, all) {
                (Some(id), false) if t.is_none() => Ok(Op::Replay(ReplaySelection::One(id))),
                (None, true) => target(t).map(|t| Op::Replay(ReplaySelection::All(t))),
                _ => Err("replay takes either an id or --all [--target T]".to_string()),
            },
        },
    };
    let op = match op {
        Ok(op) => op,
        Err(e) => {
            eprintln!("gridedge: {e}");
            return ExitCode::from(2);
        }
    };
    match gridedge::outbox::cli::run(&cfg.db_path(), op) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gridedge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Outbox { config, op } => outbox_command(config, op),
        Command::Transcode(args) => match gridedge::recording::run_transcode(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gridedge transcode: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::SimulateDialer {
            scenario,
            json,
            svg,
            replications,
            policies,
        } => {
            let args = gridedge::dialer::sim::CliArgs {
                scenario,
                json,
                svg,
                replications,
                policies,
            };
            match gridedge::dialer::sim::run_cli(&args, &gridedge::dialer::sim::resolve_policy) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gridedge: simulate-dialer: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
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
            let cfg = match load_config(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
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
