//! What compression buys on a slow link: case 3's shape (1 MiB echo, 8 callers) with
//! compressible JSON-like payloads, through the fault relay limited to 100 Mbit/s each way
//! (1 ms each way, 50 ms drop-tail queue), without compression, with LZ4 and with zstd, in one
//! run. Prints the echo rate (payload MB/s in each direction, as case 3 counts it), the
//! ratio to the uncompressed run, and the bytes the client put on the wire per payload byte.
//!
//! ```text
//! cargo run --release --example compressed_link            # 10 s per setting, 100 Mbit/s
//! cargo run --release --example compressed_link -- 5 50    # 5 s per setting, 50 Mbit/s
//! ```

use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::testing::{Impairment, Relay};
use echostream::{Codec, Compression, ServerIdentity};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLERS: usize = 8;
const SIZE: usize = 1 << 20;

/// JSON-like records: sensor readings with repeating keys, as telemetry or logs look.
fn json_like(n: usize) -> String {
    let mut s = String::with_capacity(n + 128);
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"sensor\":\"hall-{}\",\"reading\":{}.{},\"unit\":\"celsius\",\"ok\":{}}},",
            i % 13,
            (i * 7919) % 1000,
            i % 10,
            !i.is_multiple_of(7)
        ));
        i += 1;
    }
    s.truncate(n);
    s
}

struct Figures {
    mb_per_s: f64,
    wire_per_byte: f64,
    calls: u64,
}

async fn run(compression: Compression, secs: u64, mbit: u64, payload: Arc<String>) -> Result<Figures> {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .compression(compression)
        .handler(handler_fn("echo", |_c: Context, s: String| async move {
            Ok::<_, Error>(s)
        }))
        .build()?;
    let handle = server.handle();
    tokio::spawn(server.run());
    let link = Impairment::delay(Duration::from_millis(1), Duration::ZERO)
        .in_order()
        .with_rate(mbit * 1_000_000);
    let relay = Relay::start(handle.local_addr(), link, 7)
        .await
        .map_err(|e| Error::Config(format!("relay: {e}")))?;
    let client = RpcClient::builder()
        .pin(handle.fingerprint())
        .compression(compression)
        .codec(Codec::Bincode)
        .timeout(Duration::from_secs(120))
        .connect(&relay.local_addr().to_string())
        .await?;
    // Warm-up: the congestion window opens.
    let _: String = client.request("echo", payload.as_str()).await?;
    let sent0 = client.info().bytes_sent;
    let calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (client, payload, calls) = (client.clone(), payload.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let back: String = client.request("echo", payload.as_str()).await?;
                if back.len() != payload.len() {
                    return Err(Error::Config("echo came back wrong".into()));
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Config(format!("caller: {e}")))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = calls.load(Ordering::Relaxed);
    let wire = client.info().bytes_sent - sent0;
    client.close().await;
    handle.shutdown();
    Ok(Figures {
        mb_per_s: calls as f64 * SIZE as f64 / 1e6 / elapsed,
        wire_per_byte: wire as f64 / (calls.max(1) as f64 * SIZE as f64),
        calls,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mbit: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let payload = Arc::new(json_like(SIZE));
    println!(
        "1 MiB JSON-like echo, {CALLERS} callers, relay at {mbit} Mbit/s each way, {secs} s per setting"
    );
    let mut base = None;
    for (name, c) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd level 3", Compression::Zstd { level: 3 }),
    ] {
        let f = run(c, secs, mbit, payload.clone()).await?;
        let b = *base.get_or_insert(f.mb_per_s);
        println!(
            "{name:>13}: {:8.2} MB/s  {:5.2} x uncompressed  {:.3} wire bytes per payload byte  ({} calls)",
            f.mb_per_s,
            f.mb_per_s / b,
            f.wire_per_byte,
            f.calls
        );
    }
    Ok(())
}
