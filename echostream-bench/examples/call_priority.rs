//! Calls alone are not held back by the call priority (`TransportOptions::call_priority`):
//! 64 concurrent callers echo `SIZE` bytes (default 32 KiB, inline on the control stream) for
//! 2 s, alternately with the priority on and off, on one 2-worker runtime over loopback.
//! Before the limit required stream data too, "on" moved about half of "off".
//!
//! `cargo run --release -p echostream-bench --example call_priority [SIZE]`

use bytes::Bytes;
use echostream::connection::TransportOptions;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::ServerIdentity;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let size: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("SIZE is a number of bytes"))
        .unwrap_or(32 * 1024);
    for round in 0..4 {
        let on = round % 2 == 0;
        let mut t = TransportOptions::default();
        if !on {
            t.call_priority = None;
        }
        let server = RpcServer::builder()
            .bind("127.0.0.1:0")
            .identity(ServerIdentity::Ephemeral)
            .transport(t.clone())
            .handler(handler_fn("echo", |_ctx: Context, b: Bytes| async move {
                Ok::<_, Error>(b)
            }))
            .build()?;
        let addr = server.local_addr().to_string();
        let fp = server.fingerprint();
        let h = server.shutdown_handle();
        tokio::spawn(server.run());
        let client = RpcClient::builder().pin(fp).transport(t).connect(&addr).await?;
        let payload = Bytes::from(vec![7u8; size]);
        let start = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (c, p) = (client.clone(), payload.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while start.elapsed() < Duration::from_secs(2) {
                        let _: Bytes = c.request("echo", &p).await.expect("echo answered");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("caller task ended normally");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "priority {on}: {size} B echo, 64 callers: {:.0} calls/s, {:.0} MB/s each way",
            n as f64 / secs,
            n as f64 * size as f64 / secs / 1e6
        );
        client.close().await;
        h.shutdown();
    }
    Ok(())
}
