//! Measures clock-sync accuracy and prints the figures quoted in the README.
//!
//! A server whose clock runs 250 ms ahead and 50 ppm fast, a client on the
//! true clock, both in this process (so the true offset is known exactly).
//! The client samples |estimated − true| every 10 ms.
//!
//! Then the jitter-buffer case: the client sends 50 timestamped frames/s
//! through a relay adding 20 ms ± 10 ms each way; the server plays them out
//! with an adaptive playout delay and measures |release − ideal|, where
//! ideal = the sender's timestamp mapped exactly (true offset) to the
//! server clock, plus the delay in force. The first second (while the
//! adaptive delay settles from its start value) is left out of the spread.
//!
//! ```sh
//! cargo run --release --example timesync_report            # 60 s per case
//! cargo run --release --example timesync_report -- --quick # 10 s per case
//! ```

use echostream::prelude::*;

use echostream::ServerIdentity;

use echostream::stream::{stream_handler_fn, TimedReceiver};

use echostream::testing::{Impairment, Relay};
use echostream::timesync::{Clock, JitterStats, SkewedClock, SystemClock};
use echostream::timesync::{PlayoutDelay, Timestamp};
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

async fn jitter_case(run: Duration) -> Result<()> {
    let base = SystemClock::new();
    let skewed = Arc::new(SkewedClock::new(base, 250_000_000, 50.0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, f64, f64, Duration)>();
    let (stx, mut srx) = tokio::sync::mpsc::unbounded_channel::<JitterStats>();
    let sk = skewed.clone();
    let handler = stream_handler_fn(
        "audio.sync_stream",
        move |_ctx: Context, s: TimedReceiver<(u64, u64)>| {
            let (tx, stx, sk) = (tx.clone(), stx.clone(), sk.clone());
            async move {
                let local = s.xstream().peer().local_clock();
                while let Some(((seq, sender_ts), aligned)) = s.recv_aligned().await {
                    let released = local.now().0 as f64;
                    let delay = s.stats().delay;
                    // The sender is on the base clock: its stamp on the server clock, exactly.
                    let truth = sender_ts as f64 + sk.true_offset_at(Timestamp(sender_ts));
                    let ideal = truth + delay.as_nanos() as f64;
                    // Against the receiver's own schedule (its clock-sync estimate): timer precision only.
                    let own = (aligned + delay).0 as f64;
                    let _ = tx.send((
                        seq,
                        (released - ideal).abs() / 1000.0,
                        (released - own).abs() / 1000.0,
                        delay,
                    ));
                }
                let _ = stx.send(s.stats());
            }
        },
    );
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .clock(skewed.clone())
        .stream_handler(handler)
        .build()?;
    let (addr, fp) = (server.local_addr(), server.fingerprint());
    tokio::spawn(server.run());
    let relay = Relay::start(
        addr,
        Impairment::delay(Duration::from_millis(20), Duration::from_millis(10)),
        9,
    )
    .await?;
    let client = RpcClient::builder()
        .pin(fp)
        .clock(Arc::new(base))
        .connect(&relay.local_addr().to_string())
        .await?;
    let stream = client
        .create_stream("audio.sync_stream")
        .with_playout_delay(PlayoutDelay::Adaptive {
            min: Duration::from_millis(5),
            max: Duration::from_millis(200),
            margin: Duration::from_millis(3),
        })
        .build()
        .await?;
    // Let the receiver's clock sync settle before the frames start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frames = run.as_millis() as u64 / 20;
    let start = tokio::time::Instant::now();
    for seq in 0..frames {
        tokio::time::sleep_until(start + Duration::from_millis(20 * seq)).await;
        let ts = base.now();
        stream.send_with_timestamp((seq, ts.0), ts).await?;
    }
    stream.finish().await?;
    let stats = srx.recv().await.unwrap_or_default();
    let mut spread = vec![];
    let mut own = vec![];
    let mut delays = vec![];
    while let Ok((seq, us, own_us, delay)) = rx.try_recv() {
        if seq >= 50 {
            spread.push(us);
            own.push(own_us);
            delays.push(delay);
        }
    }
    spread.sort_by(f64::total_cmp);
    own.sort_by(f64::total_cmp);
    delays.sort();
    let p99_in = stats.transit_p99.unwrap_or_default();
    println!(
        "jitter buffer, 50 frames/s for {run:?}, relay 20 ms ± 10 ms, adaptive delay [5, 200] ms + 3 ms margin"
    );
    if spread.is_empty() {
        println!("  no frames released after the first second");
        return Ok(());
    }
    println!(
        "  |release − ideal|: median {:.1} µs   p99 {:.1} µs   max {:.1} µs   ({} frames)",
        percentile(&spread, 0.5),
        percentile(&spread, 0.99),
        spread.last().copied().unwrap_or(0.0),
        spread.len()
    );
    println!(
        "  |release − (aligned + delay)| on the receiver's own estimate: median {:.1} µs   p99 {:.1} µs",
        percentile(&own, 0.5),
        percentile(&own, 0.99)
    );
    println!(
        "  late drops {} of {} ({:.2} %), overflow {}   delay used: median {:?} (min {:?}, max {:?}, final {:?})",
        stats.late,
        stats.received,
        100.0 * stats.late as f64 / stats.received.max(1) as f64,
        stats.overflow,
        delays[delays.len() / 2],
        delays[0],
        delays[delays.len() - 1],
        stats.delay
    );
    println!(
        "  input transit p99 (last 500 frames) {p99_in:?}; delay − p99 = {:.2} ms; RFC 3550 jitter {:?}",
        (stats.delay.as_secs_f64() - p99_in.as_secs_f64()) * 1000.0,
        stats.jitter
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
    measure(
        "relay 20 ms ± 10 ms each way",
        Some(Impairment::delay(
            Duration::from_millis(20),
            Duration::from_millis(10),
        )),
        run,
    )
    .await?;
    jitter_case(run).await?;
    Ok(())
}
