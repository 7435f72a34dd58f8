//! A quick loopback measurement of unary calls (not the full side-by-side
//! benchmark of the performance issue): sequential latency and throughput
//! with 64 concurrent callers on one connection.
//!
//! `cargo run --release --example loopback_bench`

use echostream::prelude::*;

use echostream::ServerIdentity;

use echostream::rpc::handler_fn;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(handler_fn("echo", |_ctx: Context, b: Vec<u8>| async move {
            Ok::<_, Error>(b)
        }))
        .build()?;
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    tokio::spawn(server.run());
    let client = RpcClient::builder().pin(fingerprint).connect(&addr).await?;
    let payload = vec![7u8; 64];

    // Warm up.
    for _ in 0..2_000 {
        let _: Vec<u8> = client.request("echo", &payload).await?;
    }

    let n = 20_000;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let _: Vec<u8> = client.request("echo", &payload).await?;
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "sequential 64 B echo: p50 {:?}  p99 {:?}  p999 {:?}  {:.0} calls/s",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        n as f64 / total.as_secs_f64()
    );

    for callers in [64usize, 256] {
        let run_for = Duration::from_secs(3);
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let c = client.clone();
                let p = payload.clone();
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while start.elapsed() < run_for {
                        let _: Vec<u8> = c.request("echo", &p).await?;
                        done += 1;
                    }
                    Ok::<_, Error>(done)
                })
            })
            .collect();
        let mut calls = 0;
        for t in tasks {
            calls += t.await.map_err(|e| Error::Config(e.to_string()))??;
        }
        println!(
            "{callers} concurrent callers, one connection: {:.0} calls/s",
            calls as f64 / start.elapsed().as_secs_f64()
        );
    }
    client.close().await;
    Ok(())
}
