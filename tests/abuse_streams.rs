//! Stream abuse: a raw quinn client with the right ALPN opens XStream halves
//! a well-behaved client never would (unknown names, garbage headers, error
//! halves without data halves, 10,000 abandoned data halves, more streams
//! than the per-connection limit). The offender gets the documented refusal
//! or stream code; its connection and other clients keep working; pairing
//! state and memory return to their baseline.

mod common;
mod streams_common;

use bytes::{BufMut, BytesMut};
use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::stream::{StreamError, StreamOptions};
use echostream::types::{Frame, Hello, Metadata};
use echostream::ClientTrust;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streams_common::*;

/// Refusal codes of the answer byte `0x01` (docs/PROTOCOL.md, "XStream pairing protocol").
const NO_ACCEPTOR: u8 = 1;
const BUSY: u8 = 2;
const BAD_HEADER: u8 = 4;
/// Stream reset/stop codes.
const REFUSED: u32 = 0x01;
const PAIRING_TIMEOUT: u32 = 0x12;
const STREAM_LIMIT: u32 = 0x18;

async fn raw_connect(addr: &str) -> quinn::Connection {
    let (crypto, _) =
        echostream::tls::client_crypto(&ClientTrust::dangerous_accept_any_certificate(), addr).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    tokio::time::timeout(WAIT, ep.connect(addr.parse().unwrap(), "localhost").unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// A raw connection whose control stream completed the hello.
async fn raw_session(addr: &str) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let conn = raw_connect(addr).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut b = BytesMut::new();
    Frame::Hello(Hello {
        version: 1,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    })
    .encode(&mut b)
    .unwrap();
    send.write_all(&b).await.unwrap();
    let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
        .await
        .unwrap()
        .unwrap();
    assert!(chunk.is_some(), "server answered the hello");
    (conn, send, recv)
}

/// A data-half header: `0x02`, `len: u16`, `id: u64`, `name: str`, no metadata.
fn data_header(id: u64, name: &str) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u64(id);
    body.put_u16(name.len() as u16);
    body.put_slice(name.as_bytes());
    body.put_u16(0);
    let mut out = vec![0x02];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The acceptor's answer: `Ok(())` accepted, `Err((code, reason))` refused.
async fn answer(recv: &mut quinn::RecvStream) -> Result<(), (u8, String)> {
    bounded("the answer", async {
        let mut b = [0u8; 1];
        recv.read_exact(&mut b).await.expect("an answer byte");
        if b[0] == 0 {
            return Ok(());
        }
        assert_eq!(b[0], 1, "refused answer byte");
        let mut head = [0u8; 3];
        recv.read_exact(&mut head).await.unwrap();
        let mut reason = vec![0u8; u16::from_be_bytes([head[1], head[2]]) as usize];
        recv.read_exact(&mut reason).await.unwrap();
        Err((head[0], String::from_utf8(reason).unwrap()))
    })
    .await
}

/// The reset code the server ended a stream's server-to-client direction with.
async fn reset_code(recv: &mut quinn::RecvStream) -> u32 {
    let mut b = [0u8; 64];
    match bounded("a reset", recv.read(&mut b)).await {
        Err(quinn::ReadError::Reset(c)) => c.into_inner() as u32,
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// An echo server accepting streams named "t" (echoing them).
fn server(opts: StreamOptions) -> StreamServer {
    init_tracing();
    let srv = serve_streams(
        RpcServer::builder()
            .stream_options(opts)
            .handler(handler_fn("echo", |_c: Context, s: String| async move {
                Ok::<_, Error>(s)
            })),
    );
    let mut incoming = srv.streams.accept("t").unwrap();
    tokio::spawn(async move {
        while let Some((_, s)) = incoming.next_stream().await {
            tokio::spawn(async move {
                if let Ok(data) = s.read_to_end().await {
                    let _ = s.write_all(&data).await;
                    let _ = s.close().await;
                }
            });
        }
    });
    srv
}

/// A well-behaved client: a request and a stream round trip.
async fn assert_serves(c: &RpcClient) {
    let r: String = bounded("echo", c.request("echo", "still serving")).await.unwrap();
    assert_eq!(r, "still serving");
    let s = bounded("open t", c.open_stream("t")).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    s.write_eof().await.unwrap();
    assert_eq!(bounded("stream echo", s.read_to_end()).await.unwrap(), b"ping");
}

#[tokio::test]
async fn unknown_names_are_refused_and_the_connection_stays_usable() {
    let srv = server(StreamOptions::new());
    let good = connect(&srv.server).await;
    let (conn, _c, _r) = raw_session(&srv.server.addr).await;
    for i in 0..50u64 {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&data_header(i + 1, "nobody.here")).await.unwrap();
        let (code, reason) = answer(&mut recv).await.unwrap_err();
        assert_eq!(code, NO_ACCEPTOR);
        assert!(reason.contains("no acceptor for `nobody.here`"), "{reason}");
    }
    // The same connection still opens a known stream.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data_header(1000, "t")).await.unwrap();
    answer(&mut recv).await.expect("a known name is accepted");
    assert!(
        conn.close_reason().is_none(),
        "the offender's connection stays open"
    );
    assert_serves(&good).await;
}

#[tokio::test]
async fn garbage_stream_headers_are_refused_with_bad_header() {
    let srv = server(StreamOptions::new());
    let good = connect(&srv.server).await;
    let (conn, _c, _r) = raw_session(&srv.server.addr).await;

    // A body too short for its id.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x02, 0, 3, 1, 2, 3]).await.unwrap();
    let (code, reason) = answer(&mut recv).await.unwrap_err();
    assert_eq!(code, BAD_HEADER);
    assert!(reason.contains("bad stream header"), "{reason}");

    // A name length of 65,535 bytes (the limit is 1024).
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&[0xFF, 0xFF]);
    body.extend_from_slice(b"short");
    let mut h = vec![0x02];
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    send.write_all(&h).await.unwrap();
    let (code, reason) = answer(&mut recv).await.unwrap_err();
    assert_eq!(code, BAD_HEADER);
    assert!(reason.contains("65535") && reason.contains("1024"), "{reason}");

    // Trailing bytes after a valid body; then invalid UTF-8 in the name.
    let mut h = data_header(5, "t");
    h[2] += 2;
    h.extend_from_slice(&[9, 9]);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&h).await.unwrap();
    assert_eq!(answer(&mut recv).await.unwrap_err().0, BAD_HEADER);
    let mut h = data_header(6, "ab");
    let at = h.len() - 4;
    h[at] = 0xFF;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&h).await.unwrap();
    assert_eq!(answer(&mut recv).await.unwrap_err().0, BAD_HEADER);

    // A bidirectional stream of an unknown type is reset with REFUSED.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x7F, 1, 2, 3]).await.unwrap();
    assert_eq!(reset_code(&mut recv).await, REFUSED);

    // None of it closed the connection.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data_header(7, "t")).await.unwrap();
    answer(&mut recv)
        .await
        .expect("the connection still opens streams");
    assert!(conn.close_reason().is_none());
    assert_serves(&good).await;
}

#[tokio::test]
async fn error_halves_without_a_data_half_are_dropped_after_the_pairing_timeout() {
    let pairing = Duration::from_millis(300);
    let srv = server(StreamOptions::new().pairing_timeout(pairing));
    let good = connect(&srv.server).await;
    let (conn, _c, _r) = raw_session(&srv.server.addr).await;
    let rss_before = rss_kib();
    let mut halves = Vec::new();
    let mut peak = 0;
    // 2,000 orphan error halves. The server grants 100 at a time; like any
    // QUIC stack, the offender answers STOP_SENDING with a reset, which
    // gives the credit back.
    for i in 0..2_000u64 {
        let mut send = bounded("uni credit", conn.open_uni()).await.unwrap();
        let mut h = vec![0x03];
        h.extend_from_slice(&(1_000_000 + i).to_be_bytes());
        send.write_all(&h).await.unwrap();
        halves.push(tokio::spawn(async move {
            let code = send.stopped().await.ok().flatten();
            let _ = send.reset(0u32.into());
            code.map(|c| c.into_inner() as u32)
        }));
        peak = peak.max(srv.streams.pending_pairings());
    }
    // (`peak` is only reported: sampling a transient counter would race. That
    // every half was held until the pairing timeout is asserted below.)
    println!("pending pairings peaked at {peak} while sending");
    assert_serves(&good).await;
    eventually("orphan error halves dropped", || {
        srv.streams.pending_pairings() == 0
    })
    .await;
    // Each offender's half was stopped with PAIRING_TIMEOUT.
    for h in halves {
        assert_eq!(bounded("stopped", h).await.unwrap(), Some(PAIRING_TIMEOUT));
    }
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 128 * 1024, "RSS grew by {grown} KiB");
    assert!(conn.close_reason().is_none());
    assert_serves(&good).await;
}

#[tokio::test]
async fn ten_thousand_abandoned_data_halves_are_released() {
    let pairing = Duration::from_millis(500);
    let srv = server(StreamOptions::new().pairing_timeout(pairing));
    let good = connect(&srv.server).await;
    let (conn, _c, _r) = raw_session(&srv.server.addr).await;
    let rss_before = rss_kib();
    let start = Instant::now();

    // A well-behaved client keeps calling throughout.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let good = good.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_serves(&good).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };

    // Even: a header cut short then silence. Odd: a full header for an
    // unknown name whose answer is never read. All handles kept (abandoned,
    // not closed).
    let mut held = Vec::with_capacity(10_000);
    for i in 0..10_000u64 {
        let (mut send, recv) = bounded("bidi credit", conn.open_bi()).await.unwrap();
        if i % 2 == 0 {
            send.write_all(&[0x02, 0x00]).await.unwrap();
        } else {
            send.write_all(&data_header(i + 1, "nobody.here")).await.unwrap();
        }
        held.push((send, recv));
    }
    let opened_in = start.elapsed();
    // Every one of them reached the server and got the documented code:
    // cut-short headers a reset with PAIRING_TIMEOUT after the pairing
    // timeout, unknown names a NO_ACCEPTOR refusal.
    for (i, (_, recv)) in held.iter_mut().enumerate() {
        if i % 2 == 0 {
            assert_eq!(reset_code(recv).await, PAIRING_TIMEOUT, "stream {i}");
        } else {
            assert_eq!(answer(recv).await.unwrap_err().0, NO_ACCEPTOR, "stream {i}");
        }
    }
    eventually("pairings released", || srv.streams.pending_pairings() == 0).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls = bounded("worker", worker).await.unwrap();
    assert!(calls > 0);
    println!(
        "10,000 abandoned data halves: opened in {opened_in:?}, all answered and released after {:?}, {calls} good round trips meanwhile",
        start.elapsed()
    );
    drop(held);

    assert_serves(&good).await;
    eventually("no stream left open", || srv.streams.open_count() == 0).await;
    assert_eq!(srv.streams.pending_pairings(), 0);
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 256 * 1024, "RSS grew by {grown} KiB");
    assert!(
        conn.close_reason().is_none(),
        "the offender is refused, not disconnected"
    );
}

#[tokio::test]
async fn streams_beyond_the_per_connection_limit_are_refused_as_busy() {
    let srv = server(
        StreamOptions::new()
            .max_streams_per_connection(4)
            .pairing_timeout(Duration::from_secs(5)),
    );
    let good = connect(&srv.server).await;
    let (conn, _c, _r) = raw_session(&srv.server.addr).await;
    // Four data halves whose headers never complete hold the four places.
    let mut held = Vec::new();
    for _ in 0..4 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x02]).await.unwrap();
        held.push((send, recv));
    }
    eventually("four pending", || srv.streams.pending_pairings() == 4).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data_header(9, "t")).await.unwrap();
    let (code, reason) = answer(&mut recv).await.unwrap_err();
    assert_eq!(code, BUSY);
    assert!(
        reason.contains("limit of 4") && reason.contains("max_streams_per_connection"),
        "{reason}"
    );
    // An orphan error half beyond the limit is stopped at once.
    let t = Instant::now();
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(&[0x03, 0, 0, 0, 0, 0, 0, 0, 42]).await.unwrap();
    let c = bounded("stopped", uni.stopped()).await.unwrap();
    assert_eq!(c.map(|c| c.into_inner() as u32), Some(STREAM_LIMIT));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "not after the pairing timeout"
    );
    // Other connections are not affected.
    assert_serves(&good).await;
    // Places free again once the held halves go away.
    for (mut s, mut r) in held.drain(..) {
        let _ = s.reset(0u32.into());
        let _ = r.stop(0u32.into());
    }
    eventually("places released", || srv.streams.pending_pairings() == 0).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data_header(10, "t")).await.unwrap();
    answer(&mut recv).await.expect("accepted again below the limit");

    // Through the API: the opener sees Busy naming the stream and the limit,
    // and its own limit refuses locally.
    let srv2 = server(StreamOptions::new().max_streams_per_connection(2));
    let c2 = connect(&srv2.server).await;
    let a = bounded("open 1", c2.open_stream("t")).await.unwrap();
    let b = bounded("open 2", c2.open_stream("t")).await.unwrap();
    match bounded("open 3", c2.open_stream("t")).await {
        Err(StreamError::Busy { stream, reason }) => {
            assert_eq!(stream, "t");
            assert!(reason.contains("the per-connection limit of 2"), "{reason}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    drop((a, b));
    let local = tokio::time::timeout(
        WAIT,
        client_for(&srv.server)
            .stream_options(StreamOptions::new().max_streams_per_connection(1))
            .connect(&srv.server.addr),
    )
    .await
    .unwrap()
    .unwrap();
    let _one = bounded("open local 1", local.open_stream("t")).await.unwrap();
    match bounded("open local 2", local.open_stream("t")).await {
        Err(e @ StreamError::Busy { .. }) => {
            let text = e.to_string();
            assert!(text.contains("`t`"), "{text}");
            assert!(text.contains("this side's per-connection limit of 1"), "{text}");
        }
        other => panic!("expected a local Busy, got {other:?}"),
    }
}
