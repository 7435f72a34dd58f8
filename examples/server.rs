//! A standalone EchoStream server, to talk to with the `client` example.
//!
//! ```text
//! cargo run --example server                      # listens on 127.0.0.1:5000
//! cargo run --example server -- 127.0.0.1:6000    # or on another address
//! ```
//!
//! Then, in another terminal, `cargo run --example client` (the server prints
//! the exact command). Stop the server with Ctrl-C: it shuts down gracefully.
//!
//! The server keeps a persistent self-signed identity named `example-server`
//! (generated on the first run, under the EchoStream directory; set
//! `ECHOSTREAM_HOME` to put it elsewhere), so its certificate fingerprint stays
//! the same across restarts and clients that trusted it once keep trusting it.
//!
//! Every `#[echostream::handler]` and `#[echostream::stream_handler]` function
//! below is registered by `.register_all()`: no list to keep in sync. The
//! server also broadcasts a `tick` event (a counter) to every client once a
//! second, or every `ECHOSTREAM_TICK_MS` milliseconds.

#[path = "shared/mod.rs"]
mod shared;

use echostream::prelude::*;

use echostream::stream::StreamError;
use echostream::ServerIdentity;
use shared::{Session, DEFAULT_ADDR};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Refused user name (an application error code: 1000 and up are free).
const INVALID_USER_NAME: Code = Code(1001);
/// The sum does not fit in an `i64`.
const OVERFLOW: Code = Code(1002);

/// `echo`: sends the text back.
#[echostream::handler("echo")]
async fn echo(ctx: Context, text: String) -> Result<String> {
    println!("[{}] echo {text:?}", ctx.peer_addr());
    Ok(text)
}

/// `user.login`: returns a [`Session`], or refuses an empty name.
#[echostream::handler("user.login")]
async fn login(ctx: Context, username: String) -> Result<Session> {
    println!("[{}] user.login {username:?}", ctx.peer_addr());
    if username.trim().is_empty() {
        return Err(Error::with_code(INVALID_USER_NAME, "the user name is empty"));
    }
    static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);
    Ok(Session {
        user: username,
        token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
    })
}

/// `math.add`: two arguments, sent by the caller as the tuple `(a, b)`.
#[echostream::handler("math.add")]
async fn add(ctx: Context, a: i64, b: i64) -> Result<i64> {
    println!("[{}] math.add {a} {b}", ctx.peer_addr());
    a.checked_add(b)
        .ok_or_else(|| Error::with_code(OVERFLOW, format!("{a} + {b} does not fit in an i64")))
}

/// `fail`: always fails, with the default application code (1000).
#[echostream::handler("fail")]
async fn fail(ctx: Context) -> Result<()> {
    println!("[{}] fail", ctx.peer_addr());
    Err(Error::handler("this method always fails"))
}

/// `slow`: waits before answering. If the caller's deadline passes first, the
/// call is cancelled here (this future is dropped), so nothing is printed
/// after "sleeping".
#[echostream::handler("slow")]
async fn slow(ctx: Context, millis: u64) -> Result<u64> {
    let deadline = match ctx.remaining() {
        Some(left) => format!("the caller waits {} ms more", left.as_millis()),
        None => "the caller waits without a deadline".to_owned(),
    };
    println!("[{}] slow: sleeping {millis} ms ({deadline})", ctx.peer_addr());
    tokio::time::sleep(Duration::from_millis(millis)).await;
    println!("[{}] slow: woke up after {millis} ms", ctx.peer_addr());
    Ok(millis)
}

/// `upload`: a byte stream; reads it to its end and writes back how many
/// bytes arrived (8 bytes, big-endian), so the sender knows what was received.
#[echostream::stream_handler("upload")]
async fn upload(ctx: Context, stream: XStream) -> std::result::Result<(), StreamError> {
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    println!("[{}] upload: {total} bytes", ctx.peer_addr());
    stream.write_all(&total.to_be_bytes()).await?;
    stream.write_eof().await
}

#[tokio::main]
async fn main() -> Result<()> {
    // Warnings only, unless RUST_LOG says otherwise (e.g. RUST_LOG=debug).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let addr = std::env::args().nth(1).unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let server = RpcServer::builder()
        .bind(addr)
        .identity(ServerIdentity::persistent("example-server"))
        .register_all()
        .build()?;

    let local = server.local_addr();
    let mut methods: Vec<&str> = echostream::rpc::registered_handlers().map(|h| h.method).collect();
    methods.sort_unstable();
    println!("EchoStream example server listening on {local}");
    println!("certificate: sha256:{}", server.fingerprint());
    println!(
        "identity:    `example-server`, kept in {}",
        echostream::tls::echostream_home()
            .join("identities")
            .join("example-server")
            .display()
    );
    println!("methods:     {}", methods.join(", "));
    println!();
    println!("In another terminal, run:");
    println!("    cargo run --example client -- {}", client_addr(local));
    println!();
    println!("Press Ctrl-C to stop.");

    // The `tick` broadcast: events pushed to every connected client.
    let handle = server.handle();
    let every = std::env::var("ECHOSTREAM_TICK_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        for n in 0u64.. {
            interval.tick().await;
            if let Err(e) = handle.broadcast("tick", n).await {
                eprintln!("tick {n} not broadcast: {e}");
            }
        }
    });

    server.run_until(ctrl_c()).await?;
    println!("server stopped");
    Ok(())
}

/// Resolves on Ctrl-C.
async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot listen for Ctrl-C ({e}); stop the server with `kill`");
        std::future::pending::<()>().await;
    }
    println!("\nCtrl-C: shutting down (calls in flight may finish first)");
}

/// The address a client on this machine should dial: a wildcard bind
/// (`0.0.0.0`, `[::]`) is reachable through loopback.
fn client_addr(local: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, local.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, local.port()).into(),
        _ => local,
    }
}
