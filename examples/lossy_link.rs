//! What a lossy, jittery link costs: one stream through the fault relay (5 % loss each way,
//! 20 ms ± 10 ms each way, on loopback) with several transport settings, printing the rate,
//! the bytes put on the wire per byte delivered, and how many of the packets the sender
//! declared lost the relay had really dropped (the rest were resent needlessly).
//!
//! ```text
//! cargo run --release --example lossy_link              # 32 MiB per setting
//! cargo run --release --example lossy_link -- 64         # MiB per setting
//! ```
//!
//! Two kinds of jitter: queue-like (`Impairment::in_order`: delays vary, order is kept, as on a
//! real link whose jitter comes from queues) and per-datagram (the relay's default: datagrams
//! overtake each other, about 80 deep at these rates). With the defaults (CUBIC, RFC 9002
//! thresholds) the same stream moves about 0.16 MB/s, so they are left out.

use bytes::Bytes;
use echostream::connection::TransportOptions;
use echostream::prelude::*;
use echostream::testing::{Impairment, Relay};
use echostream::ServerIdentity;
use std::time::{Duration, Instant};

/// One run's figures.
struct Figures {
    mb_per_s: f64,
    wire_per_delivered: f64,
    declared_lost: u64,
    really_dropped: u64,
    relay_send_failures: u64,
}

async fn transfer(transport: fn() -> TransportOptions, total: u64, in_order: bool) -> Result<Figures> {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .transport(transport())
        .build()?;
    let handle = server.handle();
    let mut incoming = server.streams().accept("bulk")?;
    tokio::spawn(server.run());
    let relay = Relay::start(
        handle.local_addr(),
        {
            let link =
                Impairment::delay(Duration::from_millis(20), Duration::from_millis(10)).with_loss(0.05);
            if in_order {
                link.in_order()
            } else {
                link
            }
        },
        11,
    )
    .await
    .map_err(|e| Error::Config(format!("relay: {e}")))?;
    let client = RpcClient::builder()
        .pin(handle.fingerprint())
        .transport(transport())
        .connect(&relay.local_addr().to_string())
        .await?;
    let receiver = tokio::spawn(async move {
        let Some((_, s)) = incoming.next_stream().await else {
            return 0;
        };
        let mut len = 0u64;
        while let Ok(Some(c)) = s.read_chunk().await {
            len += c.len() as u64;
        }
        let _ = s.close().await;
        len
    });
    let before = client.info();
    let started = Instant::now();
    let s = client.open_stream("bulk").await?;
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    for _ in 0..total / chunk.len() as u64 {
        s.write_chunk(chunk.clone()).await?;
    }
    s.write_eof().await?;
    let delivered = receiver.await.unwrap_or(0);
    let took = started.elapsed();
    let after = client.info();
    let stats = relay.stats();
    client.close().await;
    Ok(Figures {
        mb_per_s: delivered as f64 / 1e6 / took.as_secs_f64(),
        wire_per_delivered: (after.bytes_sent - before.bytes_sent) as f64 / delivered.max(1) as f64,
        declared_lost: after.lost_packets - before.lost_packets,
        really_dropped: stats.to_server_dropped,
        relay_send_failures: stats.send_failures,
    })
}

/// A row of the table: its name, the transport settings of both sides, queue-like jitter.
type Run = (&'static str, fn() -> TransportOptions, bool);

/// The preset with a packet-reordering threshold of 256 instead of 64.
fn deeper_reordering_threshold() -> TransportOptions {
    TransportOptions {
        reordering_threshold: 256,
        ..TransportOptions::lossy_link()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mib: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let runs: [Run; 4] = [
        (
            "lossy_link(), jitter in order",
            TransportOptions::lossy_link,
            true,
        ),
        (
            "lossy_link(), jitter reordering",
            TransportOptions::lossy_link,
            false,
        ),
        (
            "reordering threshold 256, jitter in order",
            deeper_reordering_threshold,
            true,
        ),
        (
            "reordering threshold 256, jitter reordering",
            deeper_reordering_threshold,
            false,
        ),
    ];
    println!("{mib} MiB, one stream, 5 % loss and 20 ms ± 10 ms each way (fault relay on loopback)");
    println!("jitter in order: queue-like (no datagram overtakes another); reordering: each datagram");
    println!("delayed on its own, so they arrive up to ~80 deep out of order at these rates\n");
    println!(
        "| setting | MB/s | wire bytes / delivered | declared lost | really dropped | needless | relay send failures |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, transport, in_order) in runs {
        match transport_run(transport, mib << 20, in_order).await {
            Ok(f) => println!(
                "| {name} | {:.2} | {:.2} | {} | {} | {} | {} |",
                f.mb_per_s,
                f.wire_per_delivered,
                f.declared_lost,
                f.really_dropped,
                f.declared_lost.saturating_sub(f.really_dropped),
                f.relay_send_failures
            ),
            Err(e) => println!("| {name} | failed: {e} | | | | | |"),
        }
    }
    Ok(())
}

/// [`transfer`], bounded so one bad setting cannot hang the program.
async fn transport_run(transport: fn() -> TransportOptions, total: u64, in_order: bool) -> Result<Figures> {
    tokio::time::timeout(Duration::from_secs(600), transfer(transport, total, in_order))
        .await
        .map_err(|_| Error::Config("the transfer took over 10 minutes".into()))?
}
