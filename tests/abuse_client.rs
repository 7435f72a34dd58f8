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

/// A metrics recorder that counts counters by name and labels, installed once for this binary.
mod counts {
    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    type Table = Arc<Mutex<HashMap<String, u64>>>;

    struct Counts(Table);
    struct One(Table, String);

    impl CounterFn for One {
        fn increment(&self, value: u64) {
            *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
        }
        fn absolute(&self, value: u64) {
            self.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    impl Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(Arc::new(One(self.0.clone(), name)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    static TABLE: OnceLock<Table> = OnceLock::new();

    /// The value of counter `name{labels}` (labels as `k=v` joined by commas), recorded since
    /// the first call of this function in the process.
    pub(super) fn get(name: &str) -> u64 {
        let table = TABLE.get_or_init(|| {
            let table = Table::default();
            metrics::set_global_recorder(Counts(table.clone())).expect("no other recorder");
            table
        });
        table.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn client_rate_limit_refuses_a_server_flooding_calls_and_events_naming_the_method() {
    let rate_limited = "echostream.rate_limited{rpc.method=client.work}";
    assert_eq!(counts::get(rate_limited), 0);
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
    assert_eq!(
        counts::get(rate_limited),
        100 - ok as u64,
        "each refusal is counted"
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

/// Plays a server that behaves on the control stream: answers every request with its own
/// argument (the first answer preceded by `before`) and every ping, until the stream ends.
/// Returns the requests answered.
async fn raw_answer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
    mut before: BytesMut,
) -> u32 {
    let dec = FrameDecoder::new(1 << 20);
    let mut answered = 0u32;
    loop {
        let mut out = before.split();
        match dec.decode(&mut buf) {
            Ok(Some(Frame::Request(req))) => {
                Frame::Response(ResponseFrame {
                    id: req.id,
                    result: Ok((req.codec, req.payload)),
                })
                .encode(&mut out)
                .unwrap();
                answered += 1;
            }
            Ok(Some(Frame::Ping(n))) => Frame::Pong(n).encode(&mut out).unwrap(),
            Ok(Some(_)) => {
                before = out;
                continue;
            }
            Ok(None) => {
                before = out;
                match recv.read_chunk(1 << 16, true).await {
                    Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
                    _ => return answered,
                }
                continue;
            }
            Err(e) => panic!("the client sent a bad frame: {e}"),
        }
        if send.write_all(&out).await.is_err() {
            return answered;
        }
    }
}

/// A raw server announces a frame of 1 GiB to a client whose limit is 64 KiB, on the control
/// stream or on a side stream of its own; returns the client's error and how the server's
/// connection was closed.
async fn announce_a_huge_frame(on_side_stream: bool) -> (String, quinn::ConnectionError) {
    let (ep, addr, fp) = raw_server();
    let server = tokio::spawn(async move {
        let (conn, mut send, _recv, _buf) = raw_welcome(&ep).await;
        // Length 1 GiB, type REQUEST, id 1 (the server's id space): refused from the length
        // alone, before anything is buffered.
        let head = [0x40, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 1];
        if on_side_stream {
            let mut side = conn.open_uni().await.unwrap();
            side.write_all(&[0x01]).await.unwrap();
            side.write_all(&head).await.unwrap();
            let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
            drop((side, send, ep));
            closed
        } else {
            send.write_all(&head).await.unwrap();
            let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
            drop(ep);
            closed
        }
    });
    let c = RpcClient::builder()
        .pin(fp)
        .max_frame_size(64 * 1024)
        .connect(&addr)
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, c.peer().closed()).await.unwrap();
    (err.to_string(), server.await.unwrap())
}

#[tokio::test]
async fn oversized_frame_from_a_server_closes_the_connection_with_frame_too_large_naming_the_limit() {
    for on_side_stream in [false, true] {
        let (err, closed) = announce_a_huge_frame(on_side_stream).await;
        assert!(err.contains("1073741824") && err.contains("65536"), "{err}");
        match closed {
            quinn::ConnectionError::ApplicationClosed(a) => {
                assert_eq!(a.error_code.into_inner(), 2, "FRAME_TOO_LARGE");
                let reason = String::from_utf8_lossy(&a.reason).into_owned();
                assert!(reason.contains("65536"), "{reason}");
            }
            other => panic!("expected an application close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn clock_probe_and_ping_flood_from_a_server_is_answered_within_bounds_and_calls_complete() {
    let (ep, addr, fp) = raw_server();
    let server = tokio::spawn(async move {
        let (conn, mut send, recv, buf) = raw_welcome(&ep).await;
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
        let answered = raw_answer(send, recv, buf, absurd).await;
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

/// Refusal codes of the answer byte `0x01` and stream codes (docs/PROTOCOL.md, "XStream pairing
/// protocol").
const NO_ACCEPTOR: u8 = 1;
const BUSY: u8 = 2;
const BAD_HEADER: u8 = 4;
const STREAM_LIMIT: u32 = 0x18;

/// A data-half header: `0x02`, `len: u16`, `id: u64`, `name: str`, no metadata.
fn data_header(id: u64, name: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    let mut out = vec![0x02];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The acceptor's answer: `Ok(())` accepted, `Err((code, reason))` refused.
async fn answer(recv: &mut quinn::RecvStream) -> Result<(), (u8, String)> {
    tokio::time::timeout(WAIT, async {
        let mut b = [0u8; 1];
        recv.read_exact(&mut b).await.expect("an answer byte");
        if b[0] == 0 {
            return Ok(());
        }
        let mut head = [0u8; 3];
        recv.read_exact(&mut head).await.unwrap();
        let mut reason = vec![0u8; u16::from_be_bytes([head[1], head[2]]) as usize];
        recv.read_exact(&mut reason).await.unwrap();
        Err((head[0], String::from_utf8(reason).unwrap()))
    })
    .await
    .expect("an answer in time")
}

#[tokio::test]
async fn server_opening_garbage_and_excess_streams_is_refused_by_the_client_which_stays_usable() {
    let (ep, addr, fp) = raw_server();
    let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (conn, send, recv, buf) = raw_welcome(&ep).await;
        let _ = conn_tx.send(conn);
        let answered = raw_answer(send, recv, buf, BytesMut::new()).await;
        drop(ep);
        answered
    });
    let c = RpcClient::builder()
        .pin(fp)
        .stream_options(StreamOptions::new().max_streams_per_connection(4))
        .stream_handler(stream_handler_fn(
            "t",
            |_c: Context, s: echostream::stream::XStream| async move {
                let _ = s.read_to_end().await;
            },
        ))
        .connect(&addr)
        .await
        .unwrap();
    let conn = conn_rx.await.unwrap();

    // A header too short for its id; a name nobody accepts here.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x02, 0, 3, 1, 2, 3]).await.unwrap();
    let (code, reason) = answer(&mut recv).await.unwrap_err();
    assert_eq!(code, BAD_HEADER, "{reason}");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data_header(1, "nobody")).await.unwrap();
    let (code, reason) = answer(&mut recv).await.unwrap_err();
    assert_eq!(code, NO_ACCEPTOR);
    assert!(reason.contains("`nobody`"), "{reason}");

    // Four data halves whose headers never complete hold the client's four places.
    let mut held = Vec::new();
    for _ in 0..4 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x02]).await.unwrap();
        held.push((send, recv));
    }
    let streams = c.streams();
    wait_until("four pending", || streams.pending_pairings() == 4).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data_header(9, "t")).await.unwrap();
    let (code, reason) = answer(&mut recv).await.unwrap_err();
    assert_eq!(code, BUSY);
    assert!(
        reason.contains("limit of 4") && reason.contains("max_streams_per_connection"),
        "{reason}"
    );
    // An orphan error half beyond the limit is stopped at once.
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(&[0x03, 0, 0, 0, 0, 0, 0, 0, 42]).await.unwrap();
    let stopped = tokio::time::timeout(WAIT, uni.stopped()).await.unwrap().unwrap();
    assert_eq!(stopped.map(|c| c.into_inner() as u32), Some(STREAM_LIMIT));

    // The client's own calls go on, and its places come back once the halves go away.
    let r: String = tokio::time::timeout(WAIT, c.request("echo", "own call"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r, "own call");
    for (mut s, mut r) in held.drain(..) {
        let _ = s.reset(0u32.into());
        let _ = r.stop(0u32.into());
    }
    wait_until("places released", || streams.pending_pairings() == 0).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data_header(10, "t")).await.unwrap();
    answer(&mut recv).await.expect("accepted again below the limit");
    assert!(conn.close_reason().is_none());
    c.close().await;
    assert_eq!(server.await.unwrap(), 1);
}
