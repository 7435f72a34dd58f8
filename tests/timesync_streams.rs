//! Time-synced streams over real QUIC: timestamps mapped to the receiver's
//! clock, jitter-buffer release order, late frames dropped and counted.
//! Bounds are generous (loaded CI machines): behaviour, never speed.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::stream::{stream_handler_fn, TimedReceiver};
use echostream::testing::{Impairment, Relay};
use echostream::timesync::{Clock, JitterStats, SkewedClock, SystemClock};
use echostream::timesync::{PlayoutDelay, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One released frame, as the receiver saw it.
#[derive(Debug, Clone, Copy)]
struct Got {
    seq: u64,
    sender_ts: Timestamp,
    aligned: Timestamp,
    released: Timestamp,
}

type Frame = (u64, u64);

/// A server (clock `server_clock`) whose handler for `name` collects frames
/// and, at the end, the jitter-buffer stats.
fn timed_server(
    server_clock: Arc<dyn Clock>,
) -> (
    TestServer,
    mpsc::UnboundedReceiver<Got>,
    mpsc::UnboundedReceiver<(JitterStats, Duration)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stx, srx) = mpsc::unbounded_channel();
    let handler = stream_handler_fn(
        "audio.sync_stream",
        move |_ctx: Context, s: TimedReceiver<Frame>| {
            let (tx, stx) = (tx.clone(), stx.clone());
            async move {
                let local = s.xstream().peer().local_clock();
                while let Some(((seq, ts), aligned)) = s.recv_aligned().await {
                    let released = local.now();
                    let _ = tx.send(Got {
                        seq,
                        sender_ts: Timestamp(ts),
                        aligned,
                        released,
                    });
                }
                let st = s.stats();
                let _ = stx.send((st, st.delay));
            }
        },
    );
    let s = serve(
        RpcServer::builder()
            .clock(server_clock)
            .time_sync_interval(Duration::from_millis(200))
            .stream_handler(handler),
    );
    (s, rx, srx)
}

async fn client(s: &TestServer, addr: &str, clock: Arc<dyn Clock>) -> RpcClient {
    tokio::time::timeout(
        WAIT,
        client_for(s)
            .clock(clock)
            .time_sync_interval(Duration::from_millis(200))
            .connect(addr),
    )
    .await
    .expect("connect in time")
    .expect("connect succeeds")
}

async fn collect(rx: &mut mpsc::UnboundedReceiver<Got>, n: usize) -> Vec<Got> {
    let mut v = vec![];
    while v.len() < n {
        match tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("frame in time")
        {
            Some(g) => v.push(g),
            None => break,
        }
    }
    v
}

/// Sends `n` frames 10 ms apart stamped with the client clock.
async fn send_frames(c: &RpcClient, delay: PlayoutDelay, n: u64) {
    let stream = c
        .create_stream("audio.sync_stream")
        .with_playout_delay(delay)
        .build()
        .await
        .unwrap();
    for seq in 0..n {
        stream.send_now((seq, 0u64)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.finish().await.unwrap();
}

const FIXED: Duration = Duration::from_millis(60);
/// Bound on |aligned − true mapping| (clock-sync error on loopback is µs).
const ALIGN_NS: i64 = 5_000_000;

async fn offset_case(server_offset: i64, client_offset: i64) {
    init_tracing();
    let base = SystemClock::new();
    let server_clock = Arc::new(SkewedClock::new(base, server_offset, 0.0));
    let client_clock = Arc::new(SkewedClock::new(base, client_offset, 0.0));
    let (s, mut rx, mut srx) = timed_server(server_clock.clone());
    let c = client(&s, &s.addr, client_clock.clone()).await;
    // The sender stamps its frames itself: carry the stamp in the payload too.
    let stream = c
        .create_stream("audio.sync_stream")
        .with_playout_delay(PlayoutDelay::Fixed(FIXED))
        .build()
        .await
        .unwrap();
    let n = 40u64;
    for seq in 0..n {
        let ts = client_clock.now();
        stream.send_with_timestamp((seq, ts.0), ts).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stream.finish().await.unwrap();
    let got = collect(&mut rx, n as usize).await;
    assert_eq!(got.len(), n as usize);
    let diff = server_offset - client_offset;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.seq, i as u64, "in order");
        // The sender timestamp mapped to the server clock.
        let expected = g.sender_ts.offset_by(diff);
        let err = g.aligned.0 as i64 - expected.0 as i64;
        assert!(err.abs() < ALIGN_NS, "frame {i}: aligned off by {err} ns");
        // Never early.
        assert!(g.released >= g.aligned + FIXED, "frame {i} released early");
    }
    let (stats, delay) = tokio::time::timeout(WAIT, srx.recv()).await.unwrap().unwrap();
    assert_eq!(delay, FIXED);
    assert_eq!(stats.received, n);
    assert_eq!(stats.released, n);
    assert_eq!(stats.late, 0);
}

#[tokio::test]
async fn receiver_ahead_of_sender() {
    offset_case(250_000_000, 0).await;
}

#[tokio::test]
async fn receiver_behind_sender() {
    offset_case(0, 400_000_000).await;
}

#[tokio::test]
async fn receiver_far_behind_both_skewed() {
    offset_case(-3_600_000_000_000, 120_000_000).await;
}

#[tokio::test]
async fn old_timestamps_are_dropped_and_counted() {
    init_tracing();
    let base = SystemClock::new();
    let (s, mut rx, mut srx) = timed_server(Arc::new(SkewedClock::new(base, 80_000_000, 0.0)));
    let c = client(&s, &s.addr, Arc::new(base)).await;
    let stream = c
        .create_stream("audio.sync_stream")
        .with_playout_delay(PlayoutDelay::Fixed(Duration::from_millis(40)))
        .build()
        .await
        .unwrap();
    let mut good = 0u64;
    for seq in 0..30u64 {
        let now = base.now();
        // Every third frame claims to be 1 s old: past its playout time on arrival.
        let ts = if seq % 3 == 2 {
            Timestamp(now.0 - 1_000_000_000)
        } else {
            now
        };
        if seq % 3 != 2 {
            good += 1;
        }
        stream.send_with_timestamp((seq, ts.0), ts).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stream.finish().await.unwrap();
    let got = collect(&mut rx, good as usize).await;
    assert_eq!(got.len(), good as usize);
    assert!(got.iter().all(|g| g.seq % 3 != 2));
    assert!(got
        .windows(2)
        .all(|w| w[0].aligned <= w[1].aligned && w[0].seq < w[1].seq));
    let (stats, _) = tokio::time::timeout(WAIT, srx.recv()).await.unwrap().unwrap();
    assert_eq!(stats.received, 30);
    assert_eq!(stats.late, 30 - good);
    assert_eq!(stats.released, good);
}

#[tokio::test]
async fn jitter_through_the_relay_releases_in_order_and_never_early() {
    init_tracing();
    let base = SystemClock::new();
    let (s, mut rx, mut srx) = timed_server(Arc::new(SkewedClock::new(base, -50_000_000, 0.0)));
    let relay = Relay::start(
        s.addr.parse().unwrap(),
        Impairment::delay(Duration::from_millis(15), Duration::from_millis(10)),
        11,
    )
    .await
    .unwrap();
    let addr = relay.local_addr().to_string();
    let c = client(&s, &addr, Arc::new(base)).await;
    // A short fixed delay below the relay's worst case: some frames are late.
    let delay = Duration::from_millis(18);
    send_frames(&c, PlayoutDelay::Fixed(delay), 100).await;
    let (stats, _) = tokio::time::timeout(WAIT, srx.recv()).await.unwrap().unwrap();
    let mut got = vec![];
    while let Ok(g) = rx.try_recv() {
        got.push(g);
    }
    assert_eq!(stats.received, 100);
    assert_eq!(stats.released + stats.late + stats.overflow, 100, "{stats:?}");
    assert_eq!(got.len() as u64, stats.released);
    assert!(got
        .windows(2)
        .all(|w| w[0].aligned <= w[1].aligned && w[0].seq < w[1].seq));
    assert!(got.iter().all(|g| g.released >= g.aligned + delay));
    assert!(stats.jitter > Duration::ZERO);
}

#[tokio::test]
async fn plain_stream_receiver_ignores_timestamps() {
    init_tracing();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = stream_handler_fn("plain", move |_ctx: Context, s: StreamReceiver<Frame>| {
        let tx = tx.clone();
        async move {
            while let Some(f) = s.recv().await {
                let _ = tx.send(f);
            }
        }
    });
    let s = serve(RpcServer::builder().stream_handler(handler));
    let c = connect(&s).await;
    let stream = c.create_stream("plain").with_time_sync().build().await.unwrap();
    stream
        .send_with_timestamp((1u64, 2u64), Timestamp(3))
        .await
        .unwrap();
    stream.send((4u64, 5u64)).await.unwrap();
    stream.finish().await.unwrap();
    assert_eq!(rx.recv().await, Some((1, 2)));
    assert_eq!(rx.recv().await, Some((4, 5)));
}

#[tokio::test]
async fn server_to_client_timed_stream_maps_to_the_client_clock() {
    init_tracing();
    let base = SystemClock::new();
    let server_clock = Arc::new(SkewedClock::new(base, 250_000_000, 0.0));
    let client_clock = Arc::new(SkewedClock::new(base, -40_000_000, 0.0));
    let n = 30u64;
    // The server streams to whoever calls "speaker.start", stamped with its own clock.
    let sc = server_clock.clone();
    let start = handler_fn("speaker.start", move |ctx: Context, n: u64| {
        let sc = sc.clone();
        async move {
            let stream = ctx
                .peer()
                .create_stream("speaker.sync")
                .with_playout_delay(PlayoutDelay::Fixed(FIXED))
                .build()
                .await?;
            for seq in 0..n {
                let ts = sc.now();
                stream.send_with_timestamp((seq, ts.0), ts).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stream.finish().await?;
            Ok::<(), Status>(())
        }
    });
    let s = serve(
        RpcServer::builder()
            .clock(server_clock.clone())
            .time_sync_interval(Duration::from_millis(200))
            .handler(start),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stx, mut srx) = mpsc::unbounded_channel();
    let receiver = stream_handler_fn("speaker.sync", move |_ctx: Context, s: TimedReceiver<Frame>| {
        let (tx, stx) = (tx.clone(), stx.clone());
        async move {
            let local = s.xstream().peer().local_clock();
            while let Some(((seq, ts), aligned)) = s.recv_aligned().await {
                let _ = tx.send(Got {
                    seq,
                    sender_ts: Timestamp(ts),
                    aligned,
                    released: local.now(),
                });
            }
            let _ = stx.send(s.stats());
        }
    });
    let c = tokio::time::timeout(
        WAIT,
        client_for(&s)
            .clock(client_clock.clone())
            .time_sync_interval(Duration::from_millis(200))
            .stream_handler(receiver)
            .connect(&s.addr),
    )
    .await
    .expect("connect in time")
    .expect("connect succeeds");
    c.clock().synced(4, WAIT).await.expect("client clock syncs");
    let () = c.request("speaker.start", n).await.unwrap();
    let got = collect(&mut rx, n as usize).await;
    assert_eq!(got.len(), n as usize);
    // Server clock is 290 ms ahead of the client's.
    let diff = -40_000_000i64 - 250_000_000;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.seq, i as u64, "in order");
        let expected = g.sender_ts.offset_by(diff);
        let err = g.aligned.0 as i64 - expected.0 as i64;
        assert!(err.abs() < ALIGN_NS, "frame {i}: aligned off by {err} ns");
        assert!(g.released >= g.aligned + FIXED, "frame {i} released early");
    }
    let stats = tokio::time::timeout(WAIT, srx.recv()).await.unwrap().unwrap();
    assert_eq!((stats.received, stats.released, stats.late), (n, n, 0));
}
