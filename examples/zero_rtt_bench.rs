//! Connect + first call over loopback: a full handshake, a resumed session without early data,
//! and 0-RTT (the hello and an idempotent call in the first flight). The three cases alternate,
//! so drift on a busy machine hits them alike; each connection is closed before the next.
//!
//! `cargo run --release --example zero_rtt_bench [connections per case, default 200]`

use echostream::prelude::*;

use echostream::ServerIdentity;

use echostream::rpc::handler_fn;
use echostream::ZeroRtt;
use std::time::{Duration, Instant};

/// Connect + first call; returns the total time and the part spent in `connect`.
async fn connect_and_call(
    builder: &echostream::rpc::ClientBuilder,
    addr: &str,
) -> Result<((Duration, Duration), RpcClient)> {
    let payload = vec![7u8; 64];
    let t = Instant::now();
    let client = builder.clone().connect(addr).await?;
    let connected = t.elapsed();
    let _: Vec<u8> = client.request("echo", &payload).await?;
    Ok(((t.elapsed(), connected), client))
}

/// Leaves the connection once the server's tickets arrived (outside the measured time), so the
/// next connection of the same builder can resume.
async fn finish(client: RpcClient, resumable: bool) {
    if resumable {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !client.can_resume() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    // Draining takes a few PTOs: let it happen in the background.
    tokio::spawn(async move { client.close().await });
}

fn summary(name: &str, samples: &[(Duration, Duration)]) -> Duration {
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut conn: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    lat.sort();
    conn.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!(
        "{name:<28} p50 {:>7.1} µs   p90 {:>7.1} µs   p99 {:>7.1} µs   (connect() alone: p50 {:>7.1} µs)",
        pct(&lat, 0.50).as_secs_f64() * 1e6,
        pct(&lat, 0.90).as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6,
        pct(&conn, 0.50).as_secs_f64() * 1e6,
    );
    pct(&lat, 0.50)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .zero_rtt(true)
        .handler(
            handler_fn(
                "echo",
                |_ctx: Context, b: Vec<u8>| async move { Ok::<_, Error>(b) },
            )
            .mark_idempotent(),
        )
        .build()?;
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    tokio::spawn(server.run());

    let full = RpcClient::builder().pin(fingerprint).resumption(false);
    let resumed = RpcClient::builder().pin(fingerprint).zero_rtt(false);
    let early = RpcClient::builder().pin(fingerprint).idempotent("echo");
    // First connections: warm-up, and the first tickets.
    for b in [&full, &resumed, &early] {
        for _ in 0..20 {
            let (_, c) = connect_and_call(b, &addr).await?;
            finish(c, true).await;
        }
    }

    let (mut l_full, mut l_resumed, mut l_early) = (Vec::new(), Vec::new(), Vec::new());
    let mut accepted = 0;
    for _ in 0..n {
        let (t, c) = connect_and_call(&full, &addr).await?;
        l_full.push(t);
        finish(c, false).await;

        let (t, c) = connect_and_call(&resumed, &addr).await?;
        l_resumed.push(t);
        finish(c, true).await;

        let (t, c) = connect_and_call(&early, &addr).await?;
        l_early.push(t);
        let peer = c.peer();
        let deadline = Instant::now() + Duration::from_secs(5);
        while peer.zero_rtt() == ZeroRtt::Pending && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if peer.zero_rtt() == ZeroRtt::Accepted {
            accepted += 1;
        }
        finish(c, true).await;
    }
    println!("connect + first 64-byte call, {n} connections per case, 127.0.0.1, one 2-worker runtime");
    let f = summary("full handshake", &l_full);
    let r = summary("resumed, no early data", &l_resumed);
    let e = summary("0-RTT (hello + call early)", &l_early);
    println!(
        "ratio to full handshake (p50): resumed {:.2}, 0-RTT {:.2}; 0-RTT accepted on {accepted}/{n}",
        r.as_secs_f64() / f.as_secs_f64(),
        e.as_secs_f64() / f.as_secs_f64()
    );
    Ok(())
}
