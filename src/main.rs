//! The `drgit` executable: parse, run, print, exit with the right status.

use clap::Parser;
use drgit::cli::{Cli, run};

fn main() {
    let cli = Cli::parse();
    drgit::QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRGIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_target(false)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .without_time()
        .init();
    if let Err(e) = run(&cli) {
        if cli.json
            && !matches!(
                e,
                drgit::error::Error::Unhealthy { .. }
                    | drgit::error::Error::ChecksFailed { .. }
                    | drgit::error::Error::DrillFailed { .. }
            )
        {
            println!(
                "{}",
                serde_json::json!({ "error": e.to_string(), "exit_code": e.exit_code() })
            );
        }
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
