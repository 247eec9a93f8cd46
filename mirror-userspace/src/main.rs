//! The `mirror` binary: parses the command line, sets up logging and runs a subcommand.

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use mirror::cli::{Cli, Command, LogFormat};
use tracing_subscriber::{EnvFilter, fmt};

/// The Kubernetes client logs every failed request (an error a retry while the API cannot be
/// reached); the pod watch logs once per outage instead, with the cause. These are off unless
/// RUST_LOG names them (e.g. `RUST_LOG=info,kube_client=debug`).
const QUIET_LIBRARIES: [&str; 2] = ["kube_client=off", "kube_runtime=off"];

fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    if !spec.contains("kube") {
        for directive in QUIET_LIBRARIES {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A command line clap rejected: help and version print and succeed; usage errors print and
/// exit with clap's status (2), except for `mirror verdict`, whose 2 means "inconclusive": its
/// usage errors exit with 3, its error status, so a gate never reads a typo as a verdict.
fn rejected(error: clap::Error) -> ExitCode {
    if !error.use_stderr() {
        error.exit();
    }
    let _ = error.print();
    let verdict = mirror::cli::subcommand_name(std::env::args_os()).as_deref() == Some("verdict");
    if verdict {
        ExitCode::from(mirror::commands::verdict::ERROR_EXIT)
    } else {
        ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return rejected(error),
    };
    init_logging(cli.log_format);
    // One thread: the daemon's work is a pipeline of non-blocking steps, and cross-thread task
    // wake-ups (futexes) cost more than they gain; it also caps the daemon at one core, leaving
    // the rest of the node to the services it observes.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if matches!(cli.command, Command::Run(_)) {
        mirror::wake_ups::WakeUpBatching::install(&mut builder, mirror::wake_ups::WINDOW);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mirror: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let status = runtime.block_on(async {
        let result = match cli.command {
            // Its exit status is the verdict (0 pass, 1 fail, 2 inconclusive, 3 error).
            Command::Verdict(args) => return mirror::commands::verdict::run(args).await,
            Command::Capture(args) => mirror::commands::capture::run(args).await,
            Command::Demo(args) => mirror::commands::demo::run(args).await,
            Command::Stats(args) => mirror::commands::stats::run(args).await,
            Command::Run(args) => mirror::commands::run::run(args).await,
            Command::CheckConfig { file } => mirror::commands::check_config(&file),
        };
        match result {
            Ok(()) => 0,
            Err(error) => {
                // One sentence with its causes, e.g. "mirror: attaching ...: permission denied".
                eprintln!("mirror: {error:#}");
                1
            }
        }
    });
    ExitCode::from(status)
}
