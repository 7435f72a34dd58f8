//! An EchoStream client for the `server` example: type commands, see replies.
//!
//! ```text
//! cargo run --example client                             # 127.0.0.1:5000, commands from stdin
//! cargo run --example client -- 127.0.0.1:6000           # another address
//! cargo run --example client -- 127.0.0.1:5000 add 2 3   # one command, then exit
//! printf 'echo hi\nadd 2 3\n' | cargo run --example client
//! ```
//!
//! Trust works like SSH: the first connection to an address records the
//! server's certificate fingerprint in the known-hosts file (under the
//! EchoStream directory; set `ECHOSTREAM_HOME` to put it elsewhere), and later
//! connections refuse a server that presents a different certificate.

#[path = "shared/mod.rs"]
mod shared;

use echostream::prelude::*;

use echostream::Codec;
use shared::{Session, DEFAULT_ADDR};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const HELP: &str = "\
Commands:
  echo <text>     the server sends <text> back
  login [name]    returns a Session; without a name the server refuses (code 1001)
  add <a> <b>     adds two integers on the server
  fail            a method that always fails
  slow <ms>       the server waits <ms> ms; this client gives up after 2000 ms
  call <method>   calls any method without arguments (try one that does not exist)
  help            this text
  quit            exit (end of input works too)";

/// How long `slow` waits for its answer.
const SLOW_TIMEOUT: Duration = Duration::from_millis(2000);

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings only, unless RUST_LOG says otherwise (e.g. RUST_LOG=debug).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode> {
    // `client [ADDR] [COMMAND ...]`: the address is optional.
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.first() {
        Some(first) if !is_command(first) => args.remove(0),
        _ => DEFAULT_ADDR.to_owned(),
    };
    if let Some(command) = args.first().filter(|c| !is_command(c)) {
        eprintln!("unknown command `{command}`\n\n{HELP}");
        return Ok(ExitCode::from(2));
    }

    let client = connect(&addr).await?;

    if !args.is_empty() {
        // One command from the arguments, then exit (non-zero if it failed).
        let ok = execute(&client, &args.join(" ")).await? != Outcome::Failed;
        client.close().await;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }

    println!("{HELP}");
    let interactive = std::io::stdin().is_terminal();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        if interactive {
            print!("> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next_line().await? else {
            break; // end of input
        };
        if !interactive {
            // Piped input: show what was read, so the output reads as a transcript.
            println!("> {line}");
        }
        if execute(&client, &line).await? == Outcome::Quit {
            break;
        }
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Connects with the default trust (trust on first use), and says whether the
/// server was already known.
async fn connect(addr: &str) -> Result<RpcClient> {
    let known_hosts = echostream::tls::echostream_home().join("known_hosts");
    let known_before = is_known_host(&known_hosts, addr);

    println!("connecting to {addr} ...");
    let client = RpcClient::builder()
        .connect_timeout(Duration::from_secs(5))
        .connect(addr)
        .await?;

    let fingerprint = client
        .server_fingerprint()
        .map_or_else(|| "(none)".to_owned(), |f| format!("sha256:{f}"));
    if known_before {
        println!("connected; the server's certificate {fingerprint}");
        println!("matches the one recorded in {}", known_hosts.display());
    } else {
        println!("connected; first contact with {addr}: its certificate is");
        println!("    {fingerprint}");
        println!("(compare it with what the server printed). It is now recorded in");
        println!(
            "{}, and a different certificate at this address",
            known_hosts.display()
        );
        println!("will be refused from now on.");
    }
    println!();
    Ok(client)
}

/// Whether the known-hosts file has a line for `addr` (`HOST_KEY sha256:...`).
fn is_known_host(file: &std::path::Path, addr: &str) -> bool {
    std::fs::read_to_string(file)
        .map(|text| {
            text.lines()
                .any(|line| line.split_whitespace().next() == Some(addr))
        })
        .unwrap_or(false)
}

fn is_command(word: &str) -> bool {
    matches!(
        word,
        "echo" | "login" | "add" | "fail" | "slow" | "call" | "help" | "quit" | "exit"
    )
}

/// What became of one command line.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed,
    Quit,
}

/// Runs one command line and prints what came back. Returns an error only
/// when the connection is gone.
async fn execute(client: &RpcClient, line: &str) -> Result<Outcome> {
    let line = line.trim();
    let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let words: Vec<&str> = rest.split_whitespace().collect();

    // Each arm calls the server and turns a successful reply into text.
    let reply: Result<String> = match (command, words.as_slice()) {
        ("", _) => return Ok(Outcome::Done),
        ("quit" | "exit", _) => return Ok(Outcome::Quit),
        ("help", _) => {
            println!("{HELP}");
            return Ok(Outcome::Done);
        }
        ("echo", _) => client
            .request::<_, String>("echo", rest)
            .await
            .map(|text| format!("{text:?}")),
        ("login", [] | [_]) => client
            .request::<_, Session>("user.login", rest)
            .await
            .map(|s| format!("Session {{ user: {:?}, token: {} }}", s.user, s.token)),
        ("add", [a, b]) => {
            let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) else {
                return usage("add <a> <b> takes two integers");
            };
            // Two arguments travel as a tuple; the handler takes `a: i64, b: i64`.
            client
                .request::<_, i64>("math.add", (a, b))
                .await
                .map(|sum| sum.to_string())
        }
        // A method returning `()`: nothing else fixes the result type, so name it.
        ("fail", []) => client
            .request::<_, ()>("fail", ())
            .await
            .map(|()| "ok".to_owned()),
        ("slow", [ms]) => {
            let Ok(ms) = ms.parse::<u64>() else {
                return usage("slow <ms> takes a number of milliseconds");
            };
            let opts = CallOptions::new().timeout(SLOW_TIMEOUT);
            client
                .request_with::<_, u64>("slow", ms, opts)
                .await
                .map(|ms| format!("done after {ms} ms"))
        }
        ("call", [method]) => {
            // Without a Rust type for the result, ask for JSON and show it as is.
            let opts = CallOptions::new().codec(Codec::Json);
            client
                .request_with::<_, serde_json::Value>(method, (), opts)
                .await
                .map(|value| value.to_string())
        }
        (c, _) if is_command(c) => return usage(&format!("wrong arguments for `{c}`")),
        (c, _) => return usage(&format!("unknown command `{c}`")),
    };

    match reply {
        Ok(text) => {
            println!("<- {text}");
            Ok(Outcome::Done)
        }
        // The connection is gone (the server stopped, say): nothing more to do.
        Err(e) if e.is_connection_error() => Err(e),
        Err(e) => {
            println!("<- {}", describe(&e));
            Ok(Outcome::Failed)
        }
    }
}

fn usage(message: &str) -> Result<Outcome> {
    println!("{message}; type `help` for the commands");
    Ok(Outcome::Failed)
}

/// A one-line description of a failed call.
fn describe(e: &Error) -> String {
    match e {
        Error::Remote { status, .. } => {
            format!("error, code {}: {}", status.code(), status.message())
        }
        Error::UnknownMethod { method } => format!("error: the server has no method `{method}`"),
        Error::Timeout { after, .. } => {
            format!("error: no answer within {after:?} (the server cancels the call)")
        }
        other => format!("error: {other}"),
    }
}
