//! The Rust side of the Python bindings' interop tests (`echostream-py/tests/test_interop.py`).
//!
//! ```text
//! cargo run --example py_interop -- server          # prints `ADDRESS FINGERPRINT`, serves until stdin closes
//! cargo run --example py_interop -- client ADDR PIN # calls a Python server, one JSON line per check
//! cargo run --release --example py_interop -- stream ADDR PIN MIB  # MIB MiB into stream `sink`: MB/s
//! ```
//!
//! `stream` is the Rust client of `echostream-py/bench/bench.py` (`--rust-client`): the same
//! stream a Python client sends, from Rust, to the same Python server, and to this example's
//! own server (stream `sink`), for what Rust gets at both ends on the same machine.
//!
//! The server is an ordinary Rust server whose handlers know nothing about Python: a Python
//! client calls them with the JSON codec. The client calls Python handlers with
//! `CallOptions::codec(Codec::Json)` (and once without it, to show the answer a Python handler
//! gives to a bincode call).

use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::stream::stream_handler_fn;
use echostream::{Codec, Fingerprint, ServerIdentity, StreamDuplex};
use std::io::Read;
use std::time::Duration;

fn json() -> CallOptions {
    CallOptions::new().codec(Codec::Json)
}

async fn serve() -> Result<()> {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(handler_fn(
            "interop.add",
            |_ctx: Context, (a, b): (i64, i64)| async move {
                a.checked_add(b)
                    .ok_or_else(|| Error::with_code(Code(1002), format!("{a} + {b} does not fit in an i64")))
            },
        ))
        .handler(handler_fn(
            "interop.echo",
            |_ctx: Context, v: serde_json::Value| async move { Ok::<_, Error>(v) },
        ))
        .handler(handler_fn(
            "interop.bytes",
            |_ctx: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b.iter().map(|&x| u64::from(x)).sum::<u64>())
            },
        ))
        .handler(handler_fn("interop.fail", |_ctx: Context, (): ()| async move {
            Err::<(), _>(Error::with_code(Code(1042), "refused on purpose"))
        }))
        .handler(handler_fn("interop.sleep", |_ctx: Context, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Error>(ms)
        }))
        .handler(handler_fn(
            "interop.notify",
            |ctx: Context, text: String| async move {
                ctx.peer().emit_with("interop.note", &text, json()).await?;
                Ok::<_, Error>(())
            },
        ))
        .stream_handler(stream_handler_fn(
            "interop.upper",
            |_ctx: Context, s: XStream| async move {
                let data = s.read_to_end().await?;
                s.write_all(&data.to_ascii_uppercase()).await?;
                s.write_eof().await?;
                Ok::<_, echostream::StreamError>(())
            },
        ))
        // The bench's stream case with a Rust server (`bench.py --rust-client`): counts what
        // arrives, in 1 MiB reads as the Python server does, and answers with the total.
        .stream_handler(stream_handler_fn(
            "sink",
            |_ctx: Context, s: XStream| async move {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await? {
                        0 => break,
                        n => total += n as u64,
                    }
                }
                s.write_all(total.to_string().as_bytes()).await?;
                s.write_eof().await?;
                Ok::<_, echostream::StreamError>(())
            },
        ))
        // JSON messages both ways: the Python `MessageStream` is the other end.
        .stream_handler(stream_handler_fn(
            "interop.sum",
            |_ctx: Context, s: XStream| async move {
                let d = StreamDuplex::<i64>::new(s, Codec::Json);
                let mut total = 0i64;
                while let Some(v) = d.try_recv().await? {
                    total = total.saturating_add(v);
                    d.send(total).await?;
                }
                d.finish_sending().await?;
                Ok::<_, Error>(())
            },
        ))
        .build()?;
    println!("{} {}", server.local_addr(), server.fingerprint());
    let stop = server.shutdown_handle();
    // The test closes stdin to stop the server.
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop.shutdown();
    });
    server.run().await
}

fn line(check: &str, value: serde_json::Value) {
    println!("{}", serde_json::json!({ "check": check, "value": value }));
}

async fn call_python(addr: &str, pin: &str) -> Result<()> {
    let pin: Fingerprint = pin
        .parse()
        .map_err(|e| Error::Config(format!("pin `{pin}`: {e}")))?;
    let client = RpcClient::builder().pin(pin).connect(addr).await?;
    let sum: i64 = client.request_with("py.add", (2i64, 40i64), json()).await?;
    line("add", sum.into());
    let greeting: String = client.request_with("py.greet", "rust", json()).await?;
    line("greet", greeting.into());
    // The default codec is bincode: a Python handler answers that it takes JSON.
    match client.request::<_, i64>("py.add", (1i64, 2i64)).await {
        Ok(v) => line("bincode", format!("unexpected success {v}").into()),
        Err(e) => line("bincode", e.to_string().into()),
    }
    match client.request_with::<_, ()>("py.fail", (), json()).await {
        Err(Error::Remote { status, .. }) => {
            line("fail", serde_json::json!([status.code().0, status.message()]))
        }
        other => line("fail", format!("unexpected {other:?}").into()),
    }
    client.peer().emit_with("py.event", "from rust", json()).await?;
    let s = client.open_stream("py.echo").await?;
    s.write_all(b"ping from rust").await?;
    s.write_eof().await?;
    let back = s.read_to_end().await?;
    line("stream", String::from_utf8_lossy(&back).into_owned().into());
    // The event was sent before the stream: by now the listener has it.
    let seen: Vec<String> = client.request_with("py.events", (), json()).await?;
    line("events", serde_json::json!(seen));
    client.close().await;
    Ok(())
}

/// Writes `mib` MiB into stream `sink` and prints the rate; the server answers the byte count.
async fn stream_to_python(addr: &str, pin: &str, mib: &str) -> Result<()> {
    let mib: usize = mib
        .parse()
        .map_err(|e| Error::Config(format!("MIB `{mib}`: {e}")))?;
    let pin: Fingerprint = pin
        .parse()
        .map_err(|e| Error::Config(format!("pin `{pin}`: {e}")))?;
    let client = RpcClient::builder().pin(pin).connect(addr).await?;
    let block = bytes::Bytes::from(vec![0x5au8; 1 << 20]);
    let started = std::time::Instant::now();
    let s = client.open_stream("sink").await?;
    for _ in 0..mib {
        s.write_chunk(block.clone()).await?;
    }
    s.write_eof().await?;
    let answer = s.read_to_end().await?;
    let secs = started.elapsed().as_secs_f64();
    let got: u64 = String::from_utf8_lossy(&answer).trim().parse().unwrap_or(0);
    line("stream_mbps", serde_json::json!(got as f64 / secs / 1e6));
    client.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["server"] => serve().await,
        ["client", addr, pin] => call_python(addr, pin).await,
        ["stream", addr, pin, mib] => stream_to_python(addr, pin, mib).await,
        _ => {
            eprintln!(
                "usage: py_interop server | py_interop client ADDR PIN | py_interop stream ADDR PIN MIB"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("py_interop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
