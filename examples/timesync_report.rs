//! Measures clock-sync accuracy and prints the figures quoted in the README.
//!
//! A server whose clock runs 250 ms ahead and 50 ppm fast, a client on the
//! true clock, both in this process (so the true offset is known exactly).
//! The client samples |estimated − true| every 10 ms.
//!
//! ```sh
//! cargo run --release --example timesync_report            # 60 s per case
//! cargo run --release --example timesync_report -- --quick # 10 s per case
//! ```

use echostream::prelude::*;
use echostream::testing::{Impairment, Relay};
use echostream::timesync::{Clock, SkewedClock, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(label: &str, impairment: Option<Impairment>, run: Duration) -> Result<()> {
    let base = SystemClock::new();
    let skewed = Arc::new(SkewedClock::new(base, 250_000_000, 50.0));
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .clock(skewed.clone())
        .build()?;
    let (addr, fp) = (server.local_addr(), server.fingerprint());
    tokio::spawn(server.run());
    let relay = match impairment {
        Some(i) => Some(Relay::start(addr, i, 7).await?),
        None => None,
    };
    let target = relay.as_ref().map(|r| r.local_addr()).unwrap_or(addr).to_string();
    let client = RpcClient::builder()
        .pin(fp)
        .clock(Arc::new(base))
        .connect(&target)
        .await?;
    let clock = client.clock();
    clock.synced(8, Duration::from_secs(30)).await?;
    // Let the drift estimate form before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut errors = vec![];
    let start = Instant::now();
    while start.elapsed() < run {
        if let Some(est) = clock.offset_nanos() {
            let truth = skewed.true_offset_at(base.now());
            errors.push((est as f64 - truth).abs() / 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    errors.sort_by(f64::total_cmp);
    println!(
        "{label:<44} median {:>8.1} µs   p99 {:>8.1} µs   max {:>8.1} µs   (rtt {:?}, drift est {:.1} ppm, {} readings)",
        percentile(&errors, 0.5),
        percentile(&errors, 0.99),
        errors.last().copied().unwrap_or(0.0),
        clock.rtt().unwrap_or_default(),
        clock.drift_ppm().unwrap_or(0.0),
        errors.len()
    );
    client.close().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let run = Duration::from_secs(if quick { 10 } else { 60 });
    println!("clock sync: server clock +250 ms and +50 ppm, {run:?} per case");
    measure("loopback", None, run).await?;
    measure(
        "relay 5 ms ± 2 ms each way",
        Some(Impairment::delay(
            Duration::from_millis(5),
            Duration::from_millis(2),
        )),
        run,
    )
    .await?;
    Ok(())
}
