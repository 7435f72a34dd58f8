//! `echostream`: the command-line tool for EchoStream services.
//!
//! One binary to find services on the LAN (`browse`), inspect them through reflection (`list`,
//! `describe`), call them with JSON (`call`, `emit`, `listen`), move files over streams (`send`,
//! `receive`), measure them (`ping`, `bench`), and manage identities and trust (`identity`,
//! `known-hosts`). It is a thin front: every network operation is the public `echostream` API a
//! Rust program would call, with JSON as the codec.
//!
//! Layout: `args` (the command line), `connect` (targets, trust flags), `exit` (failure classes
//! and exit codes), `output` (tables, JSON, colour), `cmd/*` (one file per command family).

mod args;
mod cmd;
mod connect;
mod exit;
mod output;

use clap::Parser;
use exit::{Class, Failure};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    init_tracing(cli.verbose);
    output::init_color(cli.color);
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return report(
                &Failure::other(format!("cannot start the async runtime: {e}")),
                json,
            )
        }
    };
    let result = runtime.block_on(cmd::run(cli));
    // Background tasks (connections closing, an mDNS daemon) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(&failure, json),
    }
}

/// Prints a failure on stderr (and as JSON on stdout with --json); returns its exit code.
fn report(failure: &Failure, json: bool) -> ExitCode {
    if failure.class != Class::Interrupted || !failure.message.is_empty() {
        eprintln!("{} {}", output::stderr_red("error:"), failure.message);
    }
    if let Some(status) = &failure.status {
        eprintln!(
            "status: {}: {}",
            exit::code_label(status.code()),
            status.message()
        );
    }
    if let Some(hint) = &failure.hint {
        eprintln!("hint: {hint}");
    }
    if json {
        let mut error = serde_json::json!({
            "class": failure.class.name(),
            "exit_code": failure.class.code(),
            "message": failure.message,
        });
        if let Some(status) = &failure.status {
            error["code"] = status.code().0.into();
            error["status_message"] = status.message().to_owned().into();
        }
        output::json_line(&serde_json::json!({ "error": error }));
    }
    ExitCode::from(failure.class.code())
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "warn,echostream=info,echostream_core=info,echostream_cli=info",
        2 => "info,echostream=debug,echostream_core=debug,echostream_cli=debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
