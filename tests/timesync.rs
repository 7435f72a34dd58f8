//! Clock synchronisation over real QUIC with injected offsets, drift and steps.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::timesync::{Clock, SkewedClock, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts a server whose clock is `skewed`, and a client on `base`.
async fn pair(base: SystemClock, skewed: Arc<SkewedClock>) -> (TestServer, RpcClient) {
    let s = serve(
        RpcServer::builder()
            .clock(skewed)
            .time_sync_interval(Duration::from_millis(100)),
    );
    let c = client_for(&s)
        .clock(Arc::new(base))
        .time_sync_interval(Duration::from_millis(100))
        .connect(&s.addr)
        .await
        .unwrap();
    (s, c)
}

/// |estimated − true| in nanoseconds, now.
fn error_ns(c: &RpcClient, base: &SystemClock, skewed: &SkewedClock) -> f64 {
    let truth = skewed.true_offset_at(base.now());
    let est = c.clock().offset_nanos().expect("synced") as f64;
    (est - truth).abs()
}

async fn settle(c: &RpcClient, samples: u64) {
    c.clock().synced(samples, WAIT).await.unwrap();
}

// Bounds are generous so a loaded CI machine passes; the figures program
// measures the real accuracy.
const BOUND_NS: f64 = 2_000_000.0;

#[tokio::test]
async fn peer_ahead_by_250_ms_with_50_ppm_drift_is_recovered() {
    let base = SystemClock::new();
    let skewed = Arc::new(SkewedClock::new(base, 250_000_000, 50.0));
    let (_s, c) = pair(base, skewed.clone()).await;
    settle(&c, 12).await;
    let e = error_ns(&c, &base, &skewed);
    assert!(e < BOUND_NS, "offset error {e} ns");
    let clock = c.clock();
    assert!(clock.rtt().unwrap() < Duration::from_millis(100));
    assert!(clock.error_bound().is_some());
    // Conversions agree with the offset.
    let local = clock.local_now();
    let peer = clock.to_peer(local).unwrap();
    assert!((peer.0 as f64 - local.0 as f64 - 250e6).abs() < 5e6);
    let back = clock.to_local(peer).unwrap();
    assert!((back.0 as i64 - local.0 as i64).abs() < 1_000);
}

#[tokio::test]
async fn peer_behind_is_recovered() {
    let base = SystemClock::new();
    let skewed = Arc::new(SkewedClock::new(base, -3_600_000_000_000, -20.0));
    let (_s, c) = pair(base, skewed.clone()).await;
    settle(&c, 12).await;
    let e = error_ns(&c, &base, &skewed);
    assert!(e < BOUND_NS, "offset error {e} ns");
}

#[tokio::test]
async fn a_fast_drifting_peer_is_followed_between_refreshes() {
    // 2000 ppm (exaggerated so it shows within seconds): 2 ms per second.
    let base = SystemClock::new();
    let skewed = Arc::new(SkewedClock::new(base, 0, 2000.0));
    let (_s, c) = pair(base, skewed.clone()).await;
    settle(&c, 160).await; // about 2 s of samples (8 per burst, a burst every 100 ms)
    let drift = c.clock().drift_ppm().unwrap();
    assert!((drift - 2000.0).abs() < 300.0, "estimated drift {drift} ppm");
    // Between refreshes the drift is extrapolated: the estimate is still right.
    let e = error_ns(&c, &base, &skewed);
    assert!(e < BOUND_NS, "offset error {e} ns");
}

#[tokio::test]
async fn a_clock_step_on_the_peer_reconverges() {
    let base = SystemClock::new();
    let skewed = Arc::new(SkewedClock::new(base, 10_000_000, 0.0));
    let (_s, c) = pair(base, skewed.clone()).await;
    settle(&c, 12).await;
    assert!(error_ns(&c, &base, &skewed) < BOUND_NS);
    skewed.step(5_000_000_000);
    let deadline = Instant::now() + WAIT;
    loop {
        if error_ns(&c, &base, &skewed) < BOUND_NS {
            break;
        }
        assert!(Instant::now() < deadline, "did not re-converge after a 5 s step");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_server_can_read_the_clients_clock_too() {
    let base = SystemClock::new();
    let skewed = Arc::new(SkewedClock::new(base, 42_000_000, 0.0));
    let s = serve(RpcServer::builder().clock(Arc::new(base)).handler(handler_fn(
        "clock_offset",
        |ctx: Context, _: ()| async move {
            let clock = ctx.peer().clock();
            clock.synced(8, Duration::from_secs(10)).await?;
            Ok::<_, Error>(clock.offset_nanos().unwrap_or(0))
        },
    )));
    let c = client_for(&s).clock(skewed).connect(&s.addr).await.unwrap();
    let off: i64 = c.request("clock_offset", ()).await.unwrap();
    assert!(
        (off as f64 - 42e6).abs() < BOUND_NS,
        "server sees the client at {off} ns"
    );
}
