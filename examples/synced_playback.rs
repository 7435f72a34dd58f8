//! Synchronised playback: one "speaker" server, two listener clients with
//! badly set clocks, all in one process.
//!
//! The speaker stamps each frame with its own clock and sends it to both
//! listeners on a time-synced stream with a fixed 60 ms playout delay. Each
//! listener releases a frame at the speaker's timestamp mapped to its own
//! clock plus the delay, and prints that instant on its own clock. Because
//! the skews are known here, the program converts both schedules to the
//! speaker's (true) clock and prints how far apart they are.
//!
//! ```sh
//! cargo run --release --example synced_playback
//! ```

use echostream::prelude::*;

use echostream::ServerIdentity;

use echostream::stream::TimedReceiver;

use echostream::timesync::PlayoutDelay;
use echostream::timesync::{Clock, SkewedClock, SystemClock};
use std::sync::Arc;
use std::time::Duration;

const FRAMES: u64 = 100;
const DELAY: Duration = Duration::from_millis(60);

/// Listens for the speaker's stream; returns (frame, play instant on the
/// common clock in ns).
async fn listener(
    name: &'static str,
    client: RpcClient,
    clock: Arc<SkewedClock>,
    base: SystemClock,
) -> Result<Vec<(u64, f64)>> {
    let mut incoming = client.streams().accept("speaker.frames")?;
    let (_peer, x) = incoming
        .next_stream()
        .await
        .ok_or_else(|| Error::Protocol("no stream".into()))?;
    let rx: TimedReceiver<(u64, Vec<u8>)> = TimedReceiver::new(x);
    let mut plays = vec![];
    while let Some(((seq, _pcm), aligned)) = rx.recv_aligned().await {
        let now = clock.now();
        // Back to the common (speaker's true) clock, for the comparison only.
        let common = now.0 as f64 - clock.true_offset_at(base.now());
        if seq % 20 == 0 {
            println!(
                "{name}: frame {seq:>3} stamped for {} (own clock), played at {} (own clock), {:.0} µs after its slot",
                aligned.0,
                now.0,
                (now.0 as f64 - (aligned + DELAY).0 as f64) / 1000.0
            );
        }
        plays.push((seq, common));
    }
    println!("{name}: {:?}", rx.stats());
    Ok(plays)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let base = SystemClock::new();
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .clock(Arc::new(base))
        .build()?;
    let (addr, fp) = (server.local_addr().to_string(), server.fingerprint());
    let handle = server.handle();
    tokio::spawn(server.run());

    let clocks = [
        (
            "listener A (+300 ms, +40 ppm)",
            Arc::new(SkewedClock::new(base, 300_000_000, 40.0)),
        ),
        (
            "listener B (−700 ms, −30 ppm)",
            Arc::new(SkewedClock::new(base, -700_000_000, -30.0)),
        ),
    ];
    let mut tasks = vec![];
    for (name, clock) in clocks {
        let client = RpcClient::builder()
            .pin(fp)
            .clock(clock.clone())
            .connect(&addr)
            .await?;
        tasks.push(tokio::spawn(listener(name, client, clock, base)));
    }
    while handle.peers().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut senders = vec![];
    for peer in handle.peers() {
        senders.push(
            peer.create_stream("speaker.frames")
                .with_playout_delay(PlayoutDelay::Fixed(DELAY))
                .build()
                .await?,
        );
    }
    // Give the listeners' clock sync a moment before the first frame.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = tokio::time::Instant::now();
    for seq in 0..FRAMES {
        tokio::time::sleep_until(start + Duration::from_millis(20 * seq)).await;
        let ts = base.now();
        for s in &senders {
            s.send_with_timestamp((seq, vec![0u8; 160]), ts).await?;
        }
    }
    for s in senders {
        // A listener closes its connection once its stream ended: the
        // speaker's finish may then see the close, which is fine here.
        let _ = s.finish().await;
    }
    let mut schedules = vec![];
    for t in tasks {
        schedules.push(t.await.map_err(|e| Error::Protocol(e.to_string()))??);
    }
    let (a, b) = (&schedules[0], &schedules[1]);
    let mut gaps: Vec<f64> = a
        .iter()
        .filter_map(|(seq, ta)| {
            b.iter()
                .find(|(s, _)| s == seq)
                .map(|(_, tb)| (ta - tb).abs() / 1000.0)
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    if gaps.is_empty() {
        println!("no frame played by both listeners");
    } else {
        println!(
            "A and B on the common clock: {} frames played by both; |A − B| median {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            gaps.len(),
            gaps[gaps.len() / 2],
            gaps[((gaps.len() as f64 - 1.0) * 0.99).round() as usize],
            gaps[gaps.len() - 1]
        );
    }
    Ok(())
}
