//! The command line: every command, argument and flag, with an example each (`--help` is the
//! tool's reference).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

use crate::exit::EXIT_CODES_HELP;

/// Find, inspect, call, load and debug EchoStream services.
#[derive(Debug, Parser)]
#[command(name = "echostream", version, about, after_long_help = EXIT_CODES_HELP)]
pub(crate) struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// When to colour the output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub(crate) color: ColorChoice,
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the EchoStream services announced on the LAN (mDNS, `_echostream._udp`).
    #[command(
        after_help = "Examples:\n  echostream browse\n  echostream browse AudioService --timeout 5\n  \
                            echostream browse --watch --json"
    )]
    Browse(BrowseArgs),
    /// List a server's methods, events and streams (reflection).
    #[command(
        after_help = "Example:\n  echostream list 127.0.0.1:5000\n  echostream list mdns:AudioService --json"
    )]
    List(TargetArgs),
    /// Describe one method, event or stream of a server, with its types and JSON Schemas.
    #[command(after_help = "Example:\n  echostream describe 127.0.0.1:5000 math.add")]
    Describe(DescribeArgs),
    /// Call a method with a JSON argument and print the JSON result.
    #[command(
        after_help = "Examples:\n  echostream call 127.0.0.1:5000 math.add '[2, 3]'\n  \
                            echostream call 127.0.0.1:5000 user.login '\"alice\"' --metadata trace-id=abc\n  \
                            echo '{\"x\": 1}' | echostream call mdns:Sensors sensor.set -\n\n\
                            Several arguments travel as a JSON array; a method without arguments takes no JSON \
                            (null)."
    )]
    Call(CallArgs),
    /// Send one event with a JSON value.
    #[command(after_help = "Example:\n  echostream emit 127.0.0.1:5000 user.logged_out 42")]
    Emit(EmitArgs),
    /// Print the events of one name the server sends, one JSON line each, until Ctrl-C.
    #[command(after_help = "Example:\n  echostream listen 127.0.0.1:5000 chat.message --count 10")]
    Listen(ListenArgs),
    /// Send a file over a stream (progress, SHA-256 checked at both ends, resumable).
    #[command(
        after_help = "Example:\n  echostream send 127.0.0.1:5000 files.upload ./video.mp4\n\n\
                            The receiver is `echostream receive` (or any server that speaks the same \
                            metadata: name, size, sha256, resume)."
    )]
    Send(SendArgs),
    /// Receive files sent with `echostream send` into a directory (a server).
    #[command(
        after_help = "Example:\n  echostream receive --bind 0.0.0.0:5000 --stream files.upload ./incoming"
    )]
    Receive(ReceiveArgs),
    /// Measure round trips and the clock offset to a server.
    #[command(after_help = "Example:\n  echostream ping 127.0.0.1:5000 -c 5 -i 0.2")]
    Ping(PingArgs),
    /// A server's health (`echostream.health`), like grpc-health-probe: exit 0 when SERVING.
    #[command(
        after_help = "Examples:\n  echostream health 127.0.0.1:5000\n  echostream health 127.0.0.1:5000 math --watch"
    )]
    Health(HealthArgs),
    /// Load-test one method: calls/s, latency percentiles and histogram, errors by status.
    #[command(
        after_help = "Examples:\n  echostream bench 127.0.0.1:5000 echo '\"hi\"' --concurrency 64 --duration 10s\n  \
                            echostream bench 127.0.0.1:5000 math.add '[2, 3]' --calls 10000 --json"
    )]
    Bench(BenchArgs),
    /// Persistent server identities (self-signed certificate and key).
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// The client's trust store (trust on first use).
    #[command(subcommand, name = "known-hosts")]
    KnownHosts(KnownHostsCommand),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  echostream completions bash > /etc/bash_completion.d/echostream")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How to reach and trust a server; flattened into every command that connects.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// Accept only a server with this certificate fingerprint (`sha256:HEX`); repeatable.
    #[arg(long = "pin", value_name = "sha256:HEX")]
    pub(crate) pins: Vec<String>,
    /// Verify the server's certificate chain against the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "pins")]
    pub(crate) ca: Option<PathBuf>,
    /// The known-hosts file for trust on first use (default: $ECHOSTREAM_HOME/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub(crate) known_hosts: Option<PathBuf>,
    /// Accept any certificate. Anyone on the path can then read and change the traffic.
    #[arg(long, conflicts_with_all = ["pins", "ca"])]
    pub(crate) insecure: bool,
    /// A bearer token sent in the hello (the server's authenticator checks it).
    #[arg(long, env = "ECHOSTREAM_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// The name checked against a CA-issued certificate (default: the target's host).
    #[arg(long, value_name = "NAME")]
    pub(crate) server_name: Option<String>,
    /// Seconds allowed to find (mdns:, dns-sd:) and connect to the server.
    #[arg(long, value_name = "SECONDS", default_value = "10")]
    pub(crate) connect_timeout: f64,
}

/// A TARGET and how to connect to it.
#[derive(Debug, Args)]
pub(crate) struct TargetArgs {
    /// `host:port`, `mdns:NAME` to find the service on the LAN, or `dns-sd:SERVICE` to find it by
    /// unicast DNS-SD through the system resolver (the announced fingerprint is pinned).
    pub(crate) target: String,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BrowseArgs {
    /// Only instances of this service name (default: every EchoStream service).
    pub(crate) name: Option<String>,
    /// Seconds to listen before printing (ignored with --watch).
    #[arg(long, value_name = "SECONDS", default_value = "3")]
    pub(crate) timeout: f64,
    /// Print appearances, updates and departures as they happen, until Ctrl-C.
    #[arg(long)]
    pub(crate) watch: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// A method, event or stream name.
    pub(crate) name: String,
}

/// Per-call options of `call` and `bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CallOptionArgs {
    /// Seconds before the call fails (the deadline travels to the server).
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    pub(crate) timeout: f64,
    /// Request metadata `KEY=VALUE`; repeatable.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<String>,
    /// Mark the call safe to repeat (it may travel as 0-RTT early data).
    #[arg(long)]
    pub(crate) idempotent: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// The method name.
    pub(crate) method: String,
    /// The argument as JSON, or `-` to read it from stdin; omitted: null.
    #[arg(value_name = "JSON")]
    pub(crate) argument: Option<String>,
    #[command(flatten)]
    pub(crate) opts: CallOptionArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EmitArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// The event name.
    pub(crate) event: String,
    /// The value as JSON, or `-` to read it from stdin.
    #[arg(value_name = "JSON")]
    pub(crate) value: String,
    /// Event metadata `KEY=VALUE`; repeatable.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// The event name.
    pub(crate) event: String,
    /// Stop after this many events.
    #[arg(long, short = 'c')]
    pub(crate) count: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// The stream name the receiver accepts (for `echostream receive`: its --stream).
    pub(crate) stream: String,
    /// The file to send.
    pub(crate) file: PathBuf,
    /// The name to store it under (default: the file's name).
    #[arg(long = "as", value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Start again from the first byte even if the receiver has a partial file.
    #[arg(long)]
    pub(crate) no_resume: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// The address to listen on.
    #[arg(long, default_value = "0.0.0.0:5000")]
    pub(crate) bind: String,
    /// The stream name to accept.
    #[arg(long, default_value = "files.upload")]
    pub(crate) stream: String,
    /// The directory files are written to (created if needed).
    pub(crate) dir: PathBuf,
    /// The persistent identity to serve with (see `echostream identity`).
    #[arg(long, default_value = "default")]
    pub(crate) identity: String,
    /// Announce the receiver on the LAN under this service name (mDNS).
    #[arg(long, value_name = "NAME")]
    pub(crate) announce: Option<String>,
    /// Refuse files larger than this many bytes (the sender sees why).
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_size: Option<u64>,
    /// Replace files that already exist (default: refuse them).
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Exit after the first transfer (0 if it succeeded).
    #[arg(long)]
    pub(crate) once: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PingArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Stop after this many pings (default: until Ctrl-C).
    #[arg(short = 'c', long)]
    pub(crate) count: Option<u64>,
    /// Seconds between pings.
    #[arg(short = 'i', long, default_value = "1")]
    pub(crate) interval: f64,
    /// Seconds to wait for each answer.
    #[arg(short = 'W', long, default_value = "5")]
    pub(crate) wait: f64,
}

#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// The service (default: the whole server).
    #[arg(default_value = "")]
    pub(crate) service: String,
    /// Print each change until the server shuts down or Ctrl-C.
    #[arg(long)]
    pub(crate) watch: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// The method name.
    pub(crate) method: String,
    /// The argument as JSON (the same for every call), or `-` for stdin; omitted: null.
    #[arg(value_name = "JSON", conflicts_with = "binary")]
    pub(crate) argument: Option<String>,
    /// Send the bytes of this file as the argument, already encoded with --codec (like ghz's
    /// --binary): for comparing with Rust callers that use bincode.
    #[arg(long, value_name = "FILE")]
    pub(crate) binary: Option<std::path::PathBuf>,
    /// The codec of --binary's bytes.
    #[arg(long, value_enum, default_value_t = BinaryCodec::Json, requires = "binary")]
    pub(crate) codec: BinaryCodec,
    /// Calls in flight at once.
    #[arg(long, short = 'n', default_value = "16")]
    pub(crate) concurrency: usize,
    /// Connections the callers share (round robin).
    #[arg(long, default_value = "1")]
    pub(crate) connections: usize,
    /// How long to run, for example `10s`, `500ms`, `2m` (default 10s unless --calls).
    #[arg(long, short = 'd', value_parser = parse_duration, conflicts_with = "calls")]
    pub(crate) duration: Option<std::time::Duration>,
    /// Make exactly this many calls.
    #[arg(long)]
    pub(crate) calls: Option<u64>,
    /// Calls made before measuring (connections warm, caches filled).
    #[arg(long, default_value = "0")]
    pub(crate) warmup: u64,
    #[command(flatten)]
    pub(crate) opts: CallOptionArgs,
}

/// `bench --codec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BinaryCodec {
    /// JSON text.
    Json,
    /// bincode 2 (serde, standard configuration), the Rust default.
    Bincode,
}

#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// Show a persistent identity's fingerprint and files.
    #[command(after_help = "Example:\n  echostream identity show --name my-server")]
    Show(IdentityName),
    /// Generate a persistent identity (with --force: replace it, a key rotation).
    #[command(after_help = "Example:\n  echostream identity new --name my-server")]
    New {
        #[command(flatten)]
        name: IdentityName,
        /// Replace an existing identity: clients that recorded the old fingerprint will refuse
        /// the server until they forget it.
        #[arg(long)]
        force: bool,
    },
    /// Print the identity's certificate (PEM) for clients to pin or trust.
    #[command(after_help = "Example:\n  echostream identity export --name my-server > my-server.pem")]
    Export {
        #[command(flatten)]
        name: IdentityName,
        /// Print the private key too (keep it secret).
        #[arg(long)]
        with_key: bool,
    },
    /// List the persistent identities.
    #[command(after_help = "Example:\n  echostream identity list")]
    List,
}

#[derive(Debug, Args)]
pub(crate) struct IdentityName {
    /// The identity's name (servers use `default` unless told otherwise).
    #[arg(long, default_value = "default")]
    pub(crate) name: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KnownHostsCommand {
    /// List the servers this client has recorded.
    #[command(after_help = "Example:\n  echostream known-hosts list")]
    List(KnownHostsFile),
    /// Forget a server's recorded fingerprint (`HOST:PORT`, or `HOST` for every port), so the
    /// next connection is a first contact again.
    #[command(after_help = "Example:\n  echostream known-hosts forget 192.0.2.7:5000")]
    Forget {
        /// `HOST:PORT` as connected to, or `HOST` for all of its ports.
        host: String,
        #[command(flatten)]
        file: KnownHostsFile,
    },
}

#[derive(Debug, Args)]
pub(crate) struct KnownHostsFile {
    /// The known-hosts file (default: $ECHOSTREAM_HOME/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
}

/// `10s`, `1.5s`, `250ms`, `2m`, `1h`, or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 10s, 250ms, 2m)"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m or h)")),
    };
    seconds(value * scale).ok_or_else(|| format!("`{text}` is not a positive duration"))
}

/// A duration from a number of seconds given on the command line.
pub(crate) fn seconds(value: f64) -> Option<std::time::Duration> {
    (value.is_finite() && value > 0.0 && value < 1e9).then(|| std::time::Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(std::time::Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(std::time::Duration::from_secs(3)));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
