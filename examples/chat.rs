//! A chat room: members send lines, the server passes them on to everyone,
//! anyone can ask who is there, and the server pings the members to time them.
//!
//! ```text
//! cargo run --example chat                           # the demo: a server and three members, in one process
//! cargo run --example chat -- server [ADDR]          # a chat server (default 127.0.0.1:5001)
//! cargo run --example chat -- client NAME [ADDR]     # join it: type lines; /who, /quit
//! ```
//!
//! The demo needs nothing else: it starts a server on a free loopback port
//! with a throw-away identity, and alice, bob and carol join it, chat, ask for
//! the member list, get pinged, and carol leaves; then the server shuts down.
//! It writes no files.
//!
//! To chat from several terminals, start `server` in one and a `client` per
//! member in others (the server prints the command). The server keeps a
//! persistent identity named `chat-server`, and clients trust it on first use
//! (like SSH), recording its certificate in the known-hosts file; both live in
//! the EchoStream directory (set `ECHOSTREAM_HOME` to put them elsewhere).
//!
//! # What travels how
//!
//! | name           | kind                             | payload                      |
//! |----------------|----------------------------------|------------------------------|
//! | hello `name`   | metadata of the client's hello   | the member's name            |
//! | `chat.say`     | event, client → server           | the line typed               |
//! | `chat.message` | broadcast, server → every client | `(name, text)`               |
//! | `chat.system`  | broadcast, server → every client | "bob joined", "carol left"   |
//! | `chat.who`     | request, client → server         | `()` → names, `Vec<String>`  |
//! | `client.ping`  | request, server → one client     | a nonce, sent back unchanged |
//!
//! The server never asks a member for its name: it reads it from the
//! connection's hello metadata (`ctx.hello_metadata()` in a listener or
//! handler, `peer.hello_metadata()` for a connection it holds). Joins and
//! leaves come from `ServerHandle::connection_events()`. On the client,
//! `chat.message` arrives through a typed subscription and `chat.system`
//! through a listener, to show both.

use echostream::prelude::*;

use echostream::{ClientTrust, Metadata, ServerIdentity};

use echostream::rpc::{handler_fn, listener_fn, ConnectionEvent, ConnectionEvents, ServerHandle};

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Where `server` listens and `client` connects when no address is given.
const DEFAULT_ADDR: &str = "127.0.0.1:5001";
/// How often `server` pings its members.
const PING_EVERY: Duration = Duration::from_secs(10);
/// How long the server waits for a member to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

const USAGE: &str = "\
usage:
  cargo run --example chat                          the demo, in one process
  cargo run --example chat -- server [ADDR]         a chat server (default 127.0.0.1:5001)
  cargo run --example chat -- client NAME [ADDR]    join as NAME (default 127.0.0.1:5001)";

const CLIENT_HELP: &str = "type a line to send it; /who lists the members; /quit leaves";

/// What the command line asks for.
#[derive(Debug)]
enum Mode<'a> {
    Demo,
    /// `server [ADDR]`
    Server(&'a str),
    /// `client NAME [ADDR]`
    Client(&'a str, &'a str),
}

fn main() -> ExitCode {
    // Warnings only, unless RUST_LOG says otherwise (e.g. RUST_LOG=debug).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mode = match args.as_slice() {
        [] | ["demo"] => Mode::Demo,
        ["server"] => Mode::Server(DEFAULT_ADDR),
        ["server", addr] => Mode::Server(addr),
        ["client", name] => Mode::Client(name, DEFAULT_ADDR),
        ["client", name, addr] => Mode::Client(name, addr),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match mode {
            Mode::Demo => demo().await,
            Mode::Server(addr) => server(addr).await,
            Mode::Client(name, addr) => client(name, addr).await,
        }
    });
    // Not `#[tokio::main]`: tokio reads stdin with a blocking read on a
    // thread of its own, and dropping the runtime would wait for that read,
    // so a client the server disconnected would hang until Enter.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors of the three modes: EchoStream's own, and the demo's "nothing came".
type AnyError = Box<dyn std::error::Error + Send + Sync>;

// =====================================================================
// The server
// =====================================================================

/// `chat.say`: a member said something; pass it on to everyone, the sender
/// included (that is how the sender knows the server has it).
#[echostream::listener("chat.say")]
async fn on_say(ctx: Context, text: String) -> Result<()> {
    // Who said it: the name this connection gave in its hello.
    let name = member_name(ctx.hello_metadata());
    let server = ctx
        .server()
        .ok_or_else(|| Error::handler("`chat.say` is for the server"))?;
    server_says(format!("<{name}> {text}"));
    let report = server.broadcast("chat.message", (name, text)).await?;
    for addr in report.disconnected {
        server_says(format!("disconnected {addr}: it did not keep up with the chat"));
    }
    Ok(())
}

/// `chat.who`: the names of the members connected now, sorted.
#[echostream::handler("chat.who")]
async fn who(ctx: Context) -> Result<Vec<String>> {
    let server = ctx
        .server()
        .ok_or_else(|| Error::handler("`chat.who` is for the server"))?;
    let mut names: Vec<String> = server
        .peers()
        .iter()
        .map(|peer| member_name(peer.hello_metadata()))
        .collect();
    names.sort();
    server_says(format!(
        "{} asked who is here: {}",
        member_name(ctx.hello_metadata()),
        names.join(", ")
    ));
    Ok(names)
}

/// The member name in a connection's hello metadata.
fn member_name(hello: &Metadata) -> String {
    match hello.get_str("name") {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => "anonymous".to_owned(),
    }
}

/// A line of the server's log.
fn server_says(line: impl std::fmt::Display) {
    println!("{:<6} | {line}", "server");
}

/// The chat server: the `chat.say` listener and the `chat.who` handler.
fn chat_server(bind: &str, identity: ServerIdentity) -> Result<RpcServer> {
    RpcServer::builder()
        .bind(bind)
        .identity(identity)
        .listener(on_say)
        .handler(who)
        .build()
}

/// Tells everyone who joins and who leaves, as `chat.system` broadcasts.
///
/// It holds a `ServerHandle` to broadcast with, and a handle keeps the server's
/// event stream open, so this loop does not end by itself: abort its task.
async fn announce_members(server: ServerHandle, mut events: ConnectionEvents) {
    while let Some(event) = events.recv().await {
        let notice = match event {
            ConnectionEvent::Connected(info) => {
                let name = member_name(&info.hello_metadata);
                server_says(format!("{name} joined from {}", info.remote));
                format!("{name} joined")
            }
            ConnectionEvent::Disconnected { info, reason } => {
                let name = member_name(&info.hello_metadata);
                server_says(format!("{name} left ({reason})"));
                format!("{name} left")
            }
            // `ConnectionEvent` is non-exhaustive: later kinds are not announced.
            _ => continue,
        };
        if let Err(e) = server.broadcast("chat.system", notice).await {
            server_says(format!("cannot announce: {e}"));
        }
    }
}

/// Calls `client.ping` on every member at once, and describes each answer:
/// the round trip measured here, and QUIC's own estimate (`peer.info().rtt`).
async fn ping_members(server: &ServerHandle) -> Vec<String> {
    static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);
    // `peers()` comes in no particular order; number the pings by name.
    let mut peers: Vec<(String, Peer)> = server
        .peers()
        .into_iter()
        .map(|peer| (member_name(peer.hello_metadata()), peer))
        .collect();
    peers.sort_by(|a, b| a.0.cmp(&b.0));
    let pings = peers.into_iter().map(|(name, peer)| async move {
        let nonce = NEXT_NONCE.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        // A request from the server to the client: the same call a client
        // makes, the other way. The timeout keeps a stuck member from holding
        // up the round.
        let answer = peer
            .request_with::<_, u64>("client.ping", nonce, CallOptions::new().timeout(PING_TIMEOUT))
            .await;
        let took = started.elapsed();
        match answer {
            Ok(n) if n == nonce => format!(
                "{name} answered ping {nonce} in {took:.2?} (QUIC's RTT estimate: {:.2?})",
                peer.info().rtt
            ),
            Ok(n) => format!("{name} answered ping {nonce} with {n}?"),
            Err(e) => format!("{name} did not answer ping {nonce}: {e}"),
        }
    });
    futures::future::join_all(pings).await
}

/// `chat server [ADDR]`: serves until Ctrl-C, pinging the members now and then.
async fn server(addr: &str) -> std::result::Result<(), AnyError> {
    let server = chat_server(addr, ServerIdentity::persistent("chat-server"))?;
    let handle = server.handle();
    let local = server.local_addr();
    println!("chat server listening on {local}");
    println!("certificate: sha256:{}", server.fingerprint());
    println!(
        "identity:    `chat-server`, kept in {}",
        echostream::tls::echostream_home()
            .join("identities")
            .join("chat-server")
            .display()
    );
    println!();
    println!("Join from other terminals with:");
    println!(
        "    cargo run --example chat -- client NAME {}",
        client_addr(local)
    );
    println!("Press Ctrl-C to stop.");
    println!();

    // Subscribe before serving, so that no join is missed.
    let announcer = tokio::spawn(announce_members(handle.clone(), handle.connection_events()));
    let pinger = tokio::spawn(async move {
        let mut every = tokio::time::interval(PING_EVERY);
        every.tick().await; // the first tick is immediate
        loop {
            every.tick().await;
            for line in ping_members(&handle).await {
                server_says(line);
            }
        }
    });
    server.run_until(ctrl_c()).await?;
    announcer.abort();
    pinger.abort();
    println!("chat server stopped");
    Ok(())
}

/// Resolves on Ctrl-C.
async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot listen for Ctrl-C ({e}); stop the server with `kill`");
        std::future::pending::<()>().await;
    }
    println!("\nCtrl-C: shutting down");
}

/// The address a client on this machine should dial: a wildcard bind
/// (`0.0.0.0`, `[::]`) is reachable through loopback.
fn client_addr(local: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, local.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, local.port()).into(),
        _ => local,
    }
}

// =====================================================================
// The client
// =====================================================================

/// Where a member's incoming lines go.
#[derive(Clone, Debug)]
enum Screen {
    /// The interactive client: straight to stdout.
    Terminal,
    /// The demo: to the narrator, tagged with the member's name, which prints
    /// the lines of one step together, in member order.
    Demo {
        name: String,
        lines: mpsc::UnboundedSender<(String, String)>,
    },
}

impl Screen {
    fn show(&self, line: String) {
        match self {
            Screen::Terminal => println!("{line}"),
            Screen::Demo { name, lines } => {
                let _ = lines.send((name.clone(), line));
            }
        }
    }

    /// The server pinged us. Only the demo says so: a terminal shows chat.
    fn pinged(&self, nonce: u64) {
        if let Screen::Demo { .. } = self {
            self.show(format!("ping {nonce} from the server: sending it back"));
        }
    }
}

/// Connects as `name`: the name travels in the hello, `client.ping` is
/// answered here, `chat.system` notices go to a listener, and `chat.message`
/// lines come through a subscription.
async fn join(name: &str, addr: &str, trust: ClientTrust, screen: Screen) -> Result<RpcClient> {
    let (notices, pings) = (screen.clone(), screen.clone());
    let mut builder = RpcClient::builder()
        .trust(trust)
        .connect_timeout(Duration::from_secs(5))
        .metadata("name", name.to_owned())
        // A handler on the client, for the server to call.
        .handler(handler_fn("client.ping", move |_ctx: Context, nonce: u64| {
            pings.pinged(nonce);
            async move { Ok::<_, Error>(nonce) }
        }))
        .listener(listener_fn(
            "chat.system",
            move |_ctx: Context, notice: String| {
                notices.show(format!("* {notice}"));
                async {}
            },
        ));
    // Subscribed on the builder, so nothing broadcast right after the
    // welcome is missed (`client.subscribe(..)` works too, from then on).
    let mut messages = builder.subscribe::<(String, String)>("chat.message");
    let client = builder.connect(addr).await?;
    tokio::spawn(async move {
        while let Some((from, text)) = messages.recv().await {
            screen.show(format!("<{from}> {text}"));
        }
    });
    Ok(client)
}

/// What a typed line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Typed {
    Continue,
    Quit,
}

/// Acts on one typed line: `/who`, `/quit`, or a line to say.
async fn typed(client: &RpcClient, screen: &Screen, line: &str) -> Result<Typed> {
    match line.trim() {
        "" => {}
        "/quit" => return Ok(Typed::Quit),
        "/who" => {
            let members: Vec<String> = client.request("chat.who", ()).await?;
            screen.show(format!("members: {}", members.join(", ")));
        }
        command if command.starts_with('/') => {
            screen.show(format!("unknown command {command}: {CLIENT_HELP}"));
        }
        text => client.emit("chat.say", text).await?,
    }
    Ok(Typed::Continue)
}

/// `chat client NAME [ADDR]`: lines from stdin go to the room until `/quit`,
/// the end of input, or the server going away.
async fn client(name: &str, addr: &str) -> std::result::Result<(), AnyError> {
    println!("joining {addr} as {name} ...");
    // The default trust: trust on first use, with the known-hosts file.
    let client = join(name, addr, ClientTrust::default(), Screen::Terminal).await?;
    // (The notice of our own arrival may already be on screen.)
    let fingerprint = client
        .server_fingerprint()
        .map_or_else(|| "(none)".to_owned(), |f| format!("sha256:{f}"));
    println!("connected; server certificate {fingerprint}");
    println!("{CLIENT_HELP}");

    let mut input = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let peer = client.peer();
    loop {
        tokio::select! {
            line = input.next_line() => {
                let Some(line) = line? else { break };
                match typed(&client, &Screen::Terminal, &line).await {
                    Ok(Typed::Continue) => {}
                    Ok(Typed::Quit) => break,
                    Err(e) if e.is_connection_error() => {
                        println!("disconnected: {e}");
                        return Ok(());
                    }
                    Err(e) => println!("error: {e}"),
                }
            }
            why = peer.closed() => {
                println!("disconnected: {why}");
                return Ok(());
            }
        }
    }
    client.close().await;
    // `close` returns once the close is queued, not once it is sent: give
    // QUIC a moment to put it on the wire before the process exits, or the
    // server only learns that we left at its idle timeout (30 s).
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("left the chat");
    Ok(())
}

// =====================================================================
// The demo
// =====================================================================

/// The demo's members, in the order they print.
const MEMBERS: [&str; 3] = ["alice", "bob", "carol"];

/// Prints what the members see, one step at a time. Members receive in
/// parallel, so each step waits for the lines it expects and prints them
/// in member order; a member's own lines keep their order.
struct Narrator {
    tx: mpsc::UnboundedSender<(String, String)>,
    rx: mpsc::UnboundedReceiver<(String, String)>,
}

impl Narrator {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { tx, rx }
    }

    fn screen(&self, name: &str) -> Screen {
        Screen::Demo {
            name: name.to_owned(),
            lines: self.tx.clone(),
        }
    }

    /// Waits for `count` lines from the members, then prints them.
    async fn expect(&mut self, count: usize) -> std::result::Result<(), AnyError> {
        let mut lines = Vec::with_capacity(count);
        while lines.len() < count {
            match tokio::time::timeout(Duration::from_secs(5), self.rx.recv()).await {
                Ok(Some(line)) => lines.push(line),
                _ => return Err(format!("expected {count} lines, got {}: {lines:?}", lines.len()).into()),
            }
        }
        // Stable: a member's lines stay in the order they arrived.
        lines.sort_by_key(|(name, _)| MEMBERS.iter().position(|m| m == name));
        for (name, line) in lines {
            println!("{name:<6} | {line}");
        }
        Ok(())
    }

    /// Prints any line that arrived without being expected.
    fn flush(&mut self) {
        while let Ok((name, line)) = self.rx.try_recv() {
            println!("{name:<6} | {line}");
        }
    }
}

/// One demo member: its client and its screen.
struct Member {
    name: &'static str,
    client: RpcClient,
    screen: Screen,
}

impl Member {
    /// Types a line, as the interactive client would.
    async fn types(&self, line: &str) -> Result<Typed> {
        println!("{:<6} > {line}", self.name);
        typed(&self.client, &self.screen, line).await
    }
}

fn step(title: &str) {
    println!("\n-- {title}");
}

/// The demo: a server and three members in one process, on loopback.
async fn demo() -> std::result::Result<(), AnyError> {
    // A throw-away identity: nothing is written to disk, and the members pin
    // its fingerprint instead of trusting on first use.
    let server = chat_server("127.0.0.1:0", ServerIdentity::Ephemeral)?;
    let handle = server.handle();
    let fingerprint = server.fingerprint();
    let addr = server.local_addr().to_string();
    let announcer = tokio::spawn(announce_members(handle.clone(), handle.connection_events()));
    let shutdown = server.shutdown_handle();
    let serving = tokio::spawn(server.run());
    server_says(format!("listening on {addr}"));
    server_says(format!("certificate sha256:{fingerprint} (ephemeral)"));

    let mut narrator = Narrator::new();
    let mut members = Vec::new();
    step("alice, bob and carol join");
    for (n, name) in MEMBERS.into_iter().enumerate() {
        let screen = narrator.screen(name);
        let trust = ClientTrust::pinned(fingerprint);
        let client = join(name, &addr, trust, screen.clone()).await?;
        // Everyone here so far sees the notice, the newcomer included.
        narrator.expect(n + 1).await?;
        // Tell when the connection ends, whoever ends it.
        let peer = client.peer();
        let watcher = screen.clone();
        tokio::spawn(async move {
            let why = peer.closed().await;
            watcher.show(format!("disconnected: {why}"));
        });
        members.push(Member { name, client, screen });
    }
    let [alice, bob, carol] = &members[..] else {
        unreachable!("three members joined");
    };

    step("they chat");
    for (member, line) in [
        (alice, "hi everyone"),
        (bob, "hey alice!"),
        (carol, "hello from carol"),
    ] {
        member.types(line).await?;
        narrator.expect(MEMBERS.len()).await?;
    }

    step("bob asks who is here");
    bob.types("/who").await?;
    narrator.expect(1).await?;

    step("the server pings everyone");
    server_says(format!("pinging {} members", handle.connection_count()));
    let answers = ping_members(&handle).await;
    narrator.expect(MEMBERS.len()).await?;
    for line in answers {
        server_says(line);
    }

    step("carol leaves");
    if carol.types("/quit").await? == Typed::Quit {
        carol.client.close().await;
    }
    // carol's own "disconnected", and the notice for alice and bob.
    narrator.expect(3).await?;
    alice.types("bye carol").await?;
    narrator.expect(2).await?;

    step("the server shuts down gracefully");
    // Stop announcing first: the members still here are about to leave together.
    announcer.abort();
    let started = Instant::now();
    shutdown.shutdown();
    serving.await??;
    server_says(format!("stopped in {:.0?}", started.elapsed()));
    narrator.expect(2).await?;
    narrator.flush();
    println!("\ndemo done");
    Ok(())
}
