//! A hostile (or broken) server attacks a client that serves calls: it floods the client's
//! handlers, listeners and stream handlers through `ctx.peer()`, or, as a raw QUIC peer, sends
//! oversized frames and floods of clock probes and pings. The client defends itself with the
//! same protections as a server (interceptors, rate limits, handler timeout, byte budget,
//! stream limits), refuses with errors that name the limit, and its own calls still complete.

mod common;

use bytes::BytesMut;
use common::*;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, interceptor_fn, listener_fn, CallKind, RateLimit};
use echostream::stream::{stream_handler_fn, StreamError, StreamOptions};
use echostream::types::{Frame, FrameDecoder, Hello, Metadata, ResponseFrame};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A server whose `attack` handler runs `attack` against the calling client's peer and answers
/// with what it reports. `echo` shows the server still answers the client.
fn hostile_server<F, Fut>(attack: F) -> TestServer
where
    F: Fn(Peer) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let attack = Arc::new(attack);
    serve(
        RpcServer::builder()
            .handler(handler_fn("echo", |_c: Context, s: String| async move {
                Ok::<_, Error>(s)
            }))
            .handler(handler_fn("attack", move |ctx: Context, ()| {
                let attack = attack.clone();
                async move { Ok::<_, Error>(attack(ctx.peer().clone()).await) }
            })),
    )
}

async fn attack(c: &RpcClient) -> Vec<String> {
    tokio::time::timeout(
        WAIT,
        c.request_with("attack", (), CallOptions::default().timeout(WAIT)),
    )
    .await
    .expect("attack answered in time")
    .expect("attack succeeds")
}

async fn assert_responsive(c: &RpcClient) {
    let r: String = tokio::time::timeout(WAIT, c.request("echo", "still here"))
        .await
        .expect("own call in time")
        .unwrap();
    assert_eq!(r, "still here");
}

fn count(report: &[String], prefix: &str) -> usize {
    report.iter().filter(|l| l.starts_with(prefix)).count()
}

#[tokio::test]
async fn client_rate_limit_refuses_a_server_flooding_calls_and_events_naming_the_method() {
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    let s = hostile_server(|peer: Peer| async move {
        let mut report = Vec::new();
        for _ in 0..100 {
            match peer.request::<_, ()>("client.work", ()).await {
                Ok(()) => report.push("ok".to_owned()),
                Err(e @ Error::RateLimited { .. }) => report.push(format!("limited {e}")),
                Err(e) => report.push(format!("other {e}")),
            }
        }
        for i in 0..100u32 {
            let _ = peer.emit("client.note", i).await;
        }
        report
    });
    let c = client_for(&s)
        .rate_limit(RateLimit::per_minute(1).burst(10))
        .handler(handler_fn("client.work", |_c: Context, ()| async move {
            Ok::<_, Error>(())
        }))
        .listener(listener_fn("client.note", move |_c: Context, _n: u32| {
            let d = d.clone();
            async move {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }))
        .connect(&s.addr)
        .await
        .unwrap();
    let report = attack(&c).await;
    assert_eq!(count(&report, "other"), 0, "{report:?}");
    let ok = count(&report, "ok");
    assert!(
        (10..=11).contains(&ok),
        "the burst of 10 passes, then the limit: {ok}"
    );
    let limited = report.iter().find(|l| l.starts_with("limited")).unwrap();
    assert!(
        limited.contains("`client.work`") && limited.contains("rate limit"),
        "{limited}"
    );
    // The bucket is empty: the events are dropped and counted, never delivered.
    wait_until("100 events refused", || c.failed_events() >= 99).await;
    assert!(delivered.load(Ordering::Relaxed) <= 1);
    assert_responsive(&c).await;
}

#[tokio::test]
async fn client_interceptors_deny_server_calls_events_and_stream_opens_by_name() {
    let ran = Arc::new(AtomicUsize::new(0));
    let (r1, r2, r3) = (ran.clone(), ran.clone(), ran.clone());
    let s = hostile_server(|peer: Peer| async move {
        let mut report = Vec::new();
        match peer.request::<_, ()>("device.reboot", ()).await {
            Err(e @ Error::PermissionDenied { .. }) => report.push(format!("denied {e}")),
            other => report.push(format!("other {other:?}")),
        }
        let _ = peer.emit("device.note", 1u32).await;
        match peer.open_stream("device.feed").await {
            Err(e @ StreamError::Rejected { .. }) => report.push(format!("rejected {e}")),
            other => report.push(format!("other {:?}", other.map(|_| ()))),
        }
        match peer.request::<_, String>("open.echo", "fine".to_owned()).await {
            Ok(s) => report.push(format!("ok {s}")),
            Err(e) => report.push(format!("other {e}")),
        }
        report
    });
    let c = client_for(&s)
        .protect(
            "device.*",
            interceptor_fn(|ctx: &Context, kind: CallKind| {
                Err(Status::new(
                    Code::PERMISSION_DENIED,
                    format!("`{}` ({kind:?}) needs the controller role", ctx.method()),
                ))
            }),
        )
        .handler(handler_fn("device.reboot", move |_c: Context, ()| {
            r1.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Error>(()) }
        }))
        .handler(handler_fn("open.echo", |_c: Context, s: String| async move {
            Ok::<_, Error>(s)
        }))
        .listener(listener_fn("device.note", move |_c: Context, _n: u32| {
            r2.fetch_add(1, Ordering::Relaxed);
            async move {}
        }))
        .stream_handler(stream_handler_fn(
            "device.feed",
            move |_c: Context, _s: echostream::stream::XStream| {
                r3.fetch_add(1, Ordering::Relaxed);
                async move {}
            },
        ))
        .connect(&s.addr)
        .await
        .unwrap();
    let report = attack(&c).await;
    assert_eq!(report.len(), 3, "{report:?}");
    assert!(
        report[0].starts_with("denied")
            && report[0].contains("`device.reboot` (Request) needs the controller role"),
        "{report:?}"
    );
    assert!(
        report[1].starts_with("rejected")
            && report[1].contains("`device.feed` (StreamOpen) needs the controller role"),
        "{report:?}"
    );
    assert_eq!(report[2], "ok fine");
    wait_until("the denied event is counted", || c.failed_events() == 1).await;
    assert_eq!(ran.load(Ordering::Relaxed), 0, "no denied handler ran");
    assert_responsive(&c).await;
}

#[tokio::test]
async fn client_default_handler_timeout_cancels_a_handler_the_server_waits_on_forever() {
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let s = hostile_server(|peer: Peer| async move {
        let r = peer
            .request_with::<_, ()>("client.stuck", (), CallOptions::default().no_timeout())
            .await;
        vec![format!("{r:?}")]
    });
    let c = client_for(&s)
        .default_handler_timeout(Some(Duration::from_millis(300)))
        .handler(handler_fn("client.stuck", move |_c: Context, ()| {
            let guard = Dropped(d.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            }
        }))
        .connect(&s.addr)
        .await
        .unwrap();
    let report = attack(&c).await;
    assert!(
        report[0].contains("Timeout") && report[0].contains("client.stuck"),
        "{report:?}"
    );
    wait_until("the stuck handler is dropped", || dropped.load(Ordering::Acquire)).await;
    assert_responsive(&c).await;
}

#[tokio::test]
async fn client_caps_concurrent_server_calls_and_their_bytes_with_resource_exhausted() {
    let s = hostile_server(|peer: Peer| async move {
        let mut report = Vec::new();
        // 40 small calls at once against a cap of 8 running.
        let small = (0..40).map(|_| peer.request::<_, ()>("client.hold", Vec::<u8>::new()));
        for r in futures::future::join_all(small).await {
            report.push(match r {
                Ok(()) => "small ok".to_owned(),
                Err(e) => format!("small refused {e}"),
            });
        }
        // 8 calls of 20 KiB at once against a budget of 64 KiB of arguments.
        let big = (0..8).map(|_| peer.request::<_, ()>("client.hold", vec![7u8; 20 * 1024]));
        for r in futures::future::join_all(big).await {
            report.push(match r {
                Ok(()) => "big ok".to_owned(),
                Err(e) => format!("big refused {e}"),
            });
        }
        report
    });
    let c = client_for(&s)
        .max_concurrent_requests(8)
        .max_frame_size(64 * 1024)
        .max_request_bytes_in_flight(64 * 1024)
        .handler(handler_fn("client.hold", |_c: Context, _b: Vec<u8>| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, Error>(())
        }))
        .connect(&s.addr)
        .await
        .unwrap();
    let report = attack(&c).await;
    assert_eq!(count(&report, "small ok"), 8, "{report:?}");
    let refused = report.iter().find(|l| l.starts_with("small refused")).unwrap();
    assert!(
        refused.contains("limit 8") && refused.contains("client.hold"),
        "{refused}"
    );
    assert_eq!(count(&report, "big ok"), 3, "{report:?}");
    let refused = report.iter().find(|l| l.starts_with("big refused")).unwrap();
    assert!(
        refused.contains("`client.hold`") && refused.contains("limit of 65536 bytes"),
        "{refused}"
    );
    assert_responsive(&c).await;
}

#[tokio::test]
async fn server_flooding_events_and_streams_is_held_to_the_limits_and_the_client_stays_responsive() {
    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    let s = hostile_server(|peer: Peer| async move {
        let mut report = Vec::new();
        let events = async {
            for i in 0..5000u32 {
                if peer.emit("client.note", i).await.is_err() {
                    return;
                }
            }
        };
        let streams = async {
            let opens = (0..100).map(|_| peer.open_stream("client.feed"));
            futures::future::join_all(opens).await
        };
        let (_, opened) = tokio::join!(events, streams);
        let mut held = Vec::new();
        for o in opened {
            match o {
                Ok(x) => held.push(x),
                Err(e @ StreamError::Busy { .. }) => report.push(format!("busy {e}")),
                Err(e) => report.push(format!("other {e}")),
            }
        }
        report.push(format!("opened {}", held.len()));
        report
    });
    let c = client_for(&s)
        .event_queue(16)
        .stream_options(StreamOptions::new().max_streams_per_connection(16))
        .listener(listener_fn("client.note", move |_c: Context, _n: u32| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::Relaxed);
            }
        }))
        .stream_handler(stream_handler_fn(
            "client.feed",
            |_c: Context, s: echostream::stream::XStream| async move {
                // Holds its place until the opener goes away.
                let _ = s.read_to_end().await;
            },
        ))
        .connect(&s.addr)
        .await
        .unwrap();
    let flood = tokio::spawn({
        let c = c.clone();
        async move { attack(&c).await }
    });
    // The client's own calls complete while the flood goes on.
    for _ in 0..5 {
        assert_responsive(&c).await;
    }
    let report = flood.await.unwrap();
    assert_eq!(count(&report, "other"), 0, "{report:?}");
    assert_eq!(report.last().unwrap(), "opened 16", "{report:?}");
    assert_eq!(count(&report, "busy"), 84, "{report:?}");
    let busy = report.iter().find(|l| l.starts_with("busy")).unwrap();
    assert!(
        busy.contains("`client.feed`") && busy.contains("max_streams_per_connection"),
        "{busy}"
    );
    wait_until("every event heard", || heard.load(Ordering::Relaxed) == 5000).await;
    assert_responsive(&c).await;
}

/// A raw QUIC server: accepts one connection and its control stream, answers the hello with a
/// welcome, and hands over the streams and the decoder's buffer.
async fn raw_welcome(
    ep: &quinn::Endpoint,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream, BytesMut) {
    let conn = ep.accept().await.unwrap().await.unwrap();
    let (mut send, mut recv) = conn.accept_bi().await.unwrap();
    let dec = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    loop {
        if let Some(Frame::Hello(_)) = dec.decode(&mut buf).unwrap() {
            break;
        }
        let c = recv.read_chunk(1 << 16, true).await.unwrap().unwrap();
        buf.extend_from_slice(&c.bytes);
    }
    let mut out = BytesMut::new();
    Frame::Welcome(Hello {
        version: 1,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    })
    .encode(&mut out)
    .unwrap();
    send.write_all(&out).await.unwrap();
    (conn, send, recv, buf)
}

#[tokio::test]
async fn oversized_frame_from_a_server_closes_the_connection_with_frame_too_large_naming_the_limit() {
    let (ep, addr, fp) = raw_server();
    let server = tokio::spawn(async move {
        let (conn, mut send, _recv, _buf) = raw_welcome(&ep).await;
        // A frame that claims 1 GiB: the client must refuse it from the length alone.
        send.write_all(&[0x40, 0, 0, 0, 0x03]).await.unwrap();
        let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
        drop(ep);
        closed
    });
    let c = RpcClient::builder()
        .pin(fp)
        .max_frame_size(64 * 1024)
        .connect(&addr)
        .await
        .unwrap();
    let err = c.peer().closed().await.to_string();
    assert!(err.contains("1073741824") && err.contains("65536"), "{err}");
    match server.await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code.into_inner(), 2, "FRAME_TOO_LARGE");
            let reason = String::from_utf8_lossy(&a.reason).into_owned();
            assert!(reason.contains("65536"), "{reason}");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
}

#[tokio::test]
async fn clock_probe_and_ping_flood_from_a_server_is_answered_within_bounds_and_calls_complete() {
    let (ep, addr, fp) = raw_server();
    let server = tokio::spawn(async move {
        let (conn, mut send, mut recv, mut buf) = raw_welcome(&ep).await;
        // 20,000 probes and pings, written while not reading what the client sends back.
        let mut flood = BytesMut::new();
        for i in 0..10_000u64 {
            Frame::TimeRequest { t1: i }.encode(&mut flood).unwrap();
            Frame::Ping(i).encode(&mut flood).unwrap();
        }
        send.write_all(&flood).await.unwrap();
        // Clock answers nobody asked for, with absurd timestamps, sent before the first answer
        // (the client's clock is in use by then, so they reach its filter).
        let mut absurd = BytesMut::new();
        for (t1, t2, t3) in [
            (u64::MAX, 0, u64::MAX),
            (0, u64::MAX, 0),
            (1, 1, 1),
            (0, 0, u64::MAX),
        ] {
            Frame::TimeResponse { t1, t2, t3 }.encode(&mut absurd).unwrap();
        }
        // Then behave: answer every request with its own argument.
        let dec = FrameDecoder::new(1 << 20);
        let mut answered = 0u32;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Frame::Request(req))) => {
                    let mut out = absurd.split();
                    Frame::Response(ResponseFrame {
                        id: req.id,
                        result: Ok((req.codec, req.payload)),
                    })
                    .encode(&mut out)
                    .unwrap();
                    send.write_all(&out).await.unwrap();
                    answered += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => match recv.read_chunk(1 << 16, true).await {
                    Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
                    _ => break,
                },
                Err(e) => panic!("the client sent a bad frame: {e}"),
            }
        }
        drop(conn);
        drop(ep);
        answered
    });
    let c = RpcClient::builder().pin(fp).connect(&addr).await.unwrap();
    // The clock is in use, so the unsolicited answers reach its filter.
    let clock = c.clock();
    for i in 0..3 {
        let r: String = tokio::time::timeout(WAIT, c.request("echo", format!("call {i}")))
            .await
            .expect("own call in time")
            .unwrap();
        assert_eq!(r, format!("call {i}"));
    }
    let _ = clock.now();
    assert!(c.is_connected());
    c.close().await;
    assert_eq!(server.await.unwrap(), 3);
}
