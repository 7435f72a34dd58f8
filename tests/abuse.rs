//! A raw QUIC peer with the right ALPN sends what a well-behaved client never
//! would; the server closes only that connection, with a documented code, and
//! keeps serving others.

mod common;

use bytes::{BufMut, BytesMut};
use common::*;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, listener_fn};
use echostream::types::{CloseCode, Frame, Hello, Metadata, RequestFrame};
use echostream::{ClientTrust, Codec, ServerIdentity};
use std::sync::Arc;
use std::time::Duration;

/// A raw quinn connection to the server, no EchoStream client code involved.
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

fn hello(version: u16) -> BytesMut {
    let mut b = BytesMut::new();
    Frame::Hello(Hello {
        version,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    })
    .encode(&mut b)
    .unwrap();
    b
}

/// Opens the control stream, completes the hello, returns the stream.
async fn raw_session(addr: &str) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let conn = raw_connect(addr).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&hello(1)).await.unwrap();
    // Read the welcome (whatever its size: just the first chunk is enough to know it came).
    let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
        .await
        .unwrap()
        .unwrap();
    assert!(chunk.is_some(), "server answered the hello");
    (conn, send, recv)
}

/// Waits for the server to close the connection and returns (code, reason).
async fn closed_with(conn: &quinn::Connection) -> (u32, String) {
    match tokio::time::timeout(WAIT, conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(a) => (
            a.error_code.into_inner() as u32,
            String::from_utf8_lossy(&a.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other:?}"),
    }
}

fn server() -> TestServer {
    serve(
        RpcServer::builder()
            .max_frame_size(64 * 1024)
            .handshake_timeout(Duration::from_millis(500))
            .handler(handler_fn("echo", |_c: Context, s: String| async move {
                Ok::<_, Error>(s)
            })),
    )
}

async fn assert_serves(c: &RpcClient) {
    let r: String = c.request("echo", "still serving").await.unwrap();
    assert_eq!(r, "still serving");
}

#[tokio::test]
async fn garbage_on_the_control_stream_closes_only_that_connection() {
    init_tracing();
    let s = server();
    let good = connect(&s).await;
    let (conn, mut send, _recv) = raw_session(&s.addr).await;
    // A frame of an unknown type.
    send.write_all(&[0, 0, 0, 3, 0x7F, 1, 2]).await.unwrap();
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::PROTOCOL_VIOLATION.0);
    assert!(reason.contains("unknown frame type"), "{reason}");
    assert_serves(&good).await;
}

#[tokio::test]
async fn oversized_length_prefix_closes_with_frame_too_large() {
    let s = server();
    let good = connect(&s).await;
    let (conn, mut send, _recv) = raw_session(&s.addr).await;
    // Declares 4 GiB; nothing that large is ever buffered.
    send.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::FRAME_TOO_LARGE.0);
    assert!(reason.contains("65536"), "the reason names the limit: {reason}");
    assert_serves(&good).await;
}

#[tokio::test]
async fn version_mismatch_closes_with_a_clear_reason() {
    let s = server();
    let conn = raw_connect(&s.addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&hello(2)).await.unwrap();
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::VERSION_MISMATCH.0);
    assert!(
        reason.contains("version 2") && reason.contains("version 1"),
        "{reason}"
    );
}

#[tokio::test]
async fn garbage_instead_of_hello_is_a_protocol_violation() {
    let s = server();
    let conn = raw_connect(&s.addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (code, _) = closed_with(&conn).await;
    // "GET " read as a length is 1.2 GB: over the limit.
    assert!(
        code == CloseCode::PROTOCOL_VIOLATION.0 || code == CloseCode::FRAME_TOO_LARGE.0,
        "{code}"
    );
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let s = server();
    let conn = raw_connect(&s.addr).await;
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::HELLO_TIMEOUT.0);
    assert!(reason.contains("hello"), "{reason}");
}

#[tokio::test]
async fn truncated_frame_then_silence_does_not_block_other_clients() {
    let s = server();
    let good = connect(&s).await;
    let (_conn, mut send, _recv) = raw_session(&s.addr).await;
    // Declares 1000 bytes, sends 3, then nothing.
    send.write_all(&[0, 0, 0x03, 0xE8, 3, 0, 0]).await.unwrap();
    assert_serves(&good).await;
}

#[tokio::test]
async fn request_id_in_the_wrong_space_is_a_protocol_violation() {
    let s = server();
    let (conn, mut send, _recv) = raw_session(&s.addr).await;
    let mut b = BytesMut::new();
    Frame::Request(RequestFrame {
        id: 1, // odd ids belong to the server
        method: "echo".into(),
        codec: Codec::Bincode,
        deadline: None,
        metadata: Metadata::new(),
        payload: Codec::Bincode.encode("x").unwrap(),
    })
    .encode(&mut b)
    .unwrap();
    send.write_all(&b).await.unwrap();
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::PROTOCOL_VIOLATION.0);
    assert!(reason.contains("id space"), "{reason}");
}

#[tokio::test]
async fn garbage_payload_gets_bad_payload_and_the_connection_stays_up() {
    let s = server();
    let (conn, mut send, mut recv) = raw_session(&s.addr).await;
    let mut b = BytesMut::new();
    for (id, codec) in [(0u64, Codec::Bincode), (2, Codec::Json), (4, Codec::Unknown(77))] {
        Frame::Request(RequestFrame {
            id,
            method: "echo".into(),
            codec,
            deadline: None,
            metadata: Metadata::new(),
            payload: bytes::Bytes::from_static(&[0xFF, 0xFE, 0x00, 0x01]),
        })
        .encode(&mut b)
        .unwrap();
    }
    send.write_all(&b).await.unwrap();
    let dec = echostream::types::FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut codes = vec![];
    while codes.len() < 3 {
        if let Some(Frame::Response(r)) = dec.decode(&mut buf).unwrap() {
            codes.push((r.id, r.result.unwrap_err().code()));
            continue;
        }
        let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.put_slice(&chunk.bytes);
    }
    codes.sort();
    assert_eq!(
        codes,
        vec![
            (0, Code::BAD_PAYLOAD),
            (2, Code::BAD_PAYLOAD),
            (4, Code::BAD_PAYLOAD)
        ]
    );
    assert!(conn.close_reason().is_none());
}

#[tokio::test]
async fn client_closes_a_server_that_sends_garbage_and_fails_pending_calls_with_protocol_error() {
    use echostream::types::{FrameDecoder, Hello};
    let (ep, addr, fp) = raw_server();
    tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut buf = BytesMut::new();
        let dec = FrameDecoder::new(1 << 20);
        let mut frames = 0;
        let mut out = BytesMut::new();
        Frame::Welcome(Hello {
            version: 1,
            max_frame_size: 1 << 20,
            metadata: Metadata::new(),
        })
        .encode(&mut out)
        .unwrap();
        // Answer the hello, then answer the first request with garbage.
        while frames < 2 {
            match dec.decode(&mut buf).unwrap() {
                Some(_) if frames == 0 => {
                    frames += 1;
                    send.write_all(&out).await.unwrap();
                }
                Some(_) => {
                    frames += 1;
                    send.write_all(&[0, 0, 0, 2, 0x66, 0x66]).await.unwrap();
                }
                None => {
                    let c = recv.read_chunk(1 << 16, true).await.unwrap().unwrap();
                    buf.extend_from_slice(&c.bytes);
                }
            }
        }
        let _ = conn.closed().await;
        drop(ep);
    });
    let c = RpcClient::builder().pin(fp).connect(&addr).await.unwrap();
    let err = tokio::time::timeout(WAIT, c.request::<_, String>("anything", ()))
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        Error::Protocol(reason) => assert!(reason.contains("unknown frame type"), "{reason}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn ten_thousand_abandoned_bidirectional_streams_are_refused_without_growing_memory() {
    let s = server();
    let good = connect(&s).await;
    let (conn, _send, _recv) = raw_session(&s.addr).await;
    let before = rss_kib();
    let started = std::time::Instant::now();
    let mut refused = 0;
    for i in 0..10_000u32 {
        let (mut send, _recv) = tokio::time::timeout(WAIT, conn.open_bi()).await.unwrap().unwrap();
        // Send one byte so the stream exists on the wire, then abandon it.
        if send.write_all(&[0]).await.is_err() {
            refused += 1;
        }
        if i % 2500 == 0 {
            assert_serves(&good).await;
        }
    }
    assert_serves(&good).await;
    let after = rss_kib();
    eprintln!(
        "10,000 abandoned streams in {:?}; RSS {before} KiB -> {after} KiB; {refused} writes saw the refusal",
        started.elapsed()
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // The offender is not closed: its streams are refused (reset code 1) and its control
    // stream still works.
    assert!(conn.close_reason().is_none());
}

#[tokio::test]
async fn garbage_event_payloads_are_counted_and_the_connection_stays_up() {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .listener(listener_fn("tick", |_c: Context, _n: u64| async {}))
        .handler(handler_fn("echo", |_c: Context, s: String| async move {
            Ok::<_, Error>(s)
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    let addr = handle.local_addr().to_string();
    tokio::spawn(server.run());
    let (conn, mut send, _recv) = raw_session(&addr).await;
    let mut b = BytesMut::new();
    for codec in [Codec::Bincode, Codec::Json, Codec::Unknown(9)] {
        Frame::Event(echostream::types::EventFrame {
            name: "tick".into(),
            codec,
            metadata: Metadata::new(),
            payload: bytes::Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        })
        .encode(&mut b)
        .unwrap();
    }
    send.write_all(&b).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while handle.failed_events() < 3 {
        assert!(std::time::Instant::now() < deadline, "events not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conn.close_reason().is_none());
    let good = RpcClient::builder()
        .pin(handle.fingerprint())
        .connect(&addr)
        .await
        .unwrap();
    assert_serves(&good).await;
}

#[tokio::test]
async fn a_peer_that_sends_requests_but_never_reads_answers_is_held_back_not_buffered() {
    let s = server();
    let good = connect(&s).await;
    let (conn, mut send, _recv_never_read) = raw_session(&s.addr).await;
    let before = rss_kib();
    // Requests for an unknown method: each is answered with an error the peer never reads.
    let mut batch = BytesMut::new();
    for i in 0..1000u64 {
        Frame::Request(RequestFrame {
            id: i * 2,
            method: "no.such.method".into(),
            codec: Codec::Bincode,
            deadline: None,
            metadata: Metadata::new(),
            payload: bytes::Bytes::new(),
        })
        .encode(&mut batch)
        .unwrap();
    }
    // Ids repeat across batches, which is fine for refused calls (they never run).
    let batch = batch.freeze();
    let mut sent = 0u64;
    let writing = async {
        loop {
            send.write_all(&batch).await.unwrap();
            sent += 1000;
        }
    };
    // The server stops reading once its answers back up: the writes stall.
    let _ = tokio::time::timeout(Duration::from_secs(3), writing).await;
    assert_serves(&good).await;
    let after = rss_kib();
    eprintln!("requests sent before back-pressure: {sent}; RSS {before} KiB -> {after} KiB");
    assert!(sent < 5_000_000, "the server kept reading: {sent} requests");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert!(conn.close_reason().is_none());
}

/// A peer that ignores event credit and floods events at a listener that is blocked: the
/// server's reader never waits for the listener queue, so the events beyond it are dropped and
/// counted (none silently), and a request sent after the flood, on the same control stream, is
/// still answered.
#[tokio::test]
async fn events_beyond_the_queue_from_a_peer_ignoring_credit_are_dropped_and_counted_while_calls_go_on() {
    const N: usize = 2_000;
    const QUEUE: usize = 8;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g2, d2) = (gate.clone(), done.clone());
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .event_queue(QUEUE)
        .listener(listener_fn("tick", move |_c: Context, _n: u64| {
            let (g, d) = (g2.clone(), d2.clone());
            async move {
                g.acquire().await.unwrap().forget();
                d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }))
        .handler(handler_fn("echo", |_c: Context, s: String| async move {
            Ok::<_, Error>(s)
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    let addr = handle.local_addr().to_string();
    tokio::spawn(server.run());
    let (conn, mut send, mut recv) = raw_session(&addr).await;
    let mut b = BytesMut::new();
    for n in 0..N as u64 {
        Frame::Event(echostream::types::EventFrame {
            name: "tick".into(),
            codec: Codec::Bincode,
            metadata: Metadata::new(),
            payload: Codec::Bincode.encode(&n).unwrap(),
        })
        .encode(&mut b)
        .unwrap();
    }
    Frame::Request(RequestFrame {
        id: 0,
        method: "echo".into(),
        codec: Codec::Bincode,
        deadline: None,
        metadata: Metadata::new(),
        payload: Codec::Bincode.encode("after the flood").unwrap(),
    })
    .encode(&mut b)
    .unwrap();
    send.write_all(&b).await.unwrap();
    // The answer comes (credit events may come first: skipped).
    let dec = echostream::types::FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let answer = loop {
        match dec.decode(&mut buf).unwrap() {
            Some(Frame::Response(r)) => break r,
            Some(_) => continue,
            None => {}
        }
        let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
            .await
            .expect("the request after the flood is answered")
            .unwrap()
            .unwrap();
        buf.put_slice(&chunk.bytes);
    };
    assert_eq!(answer.id, 0);
    let (codec, payload) = answer.result.unwrap();
    assert_eq!(codec.decode::<String>(&payload).unwrap(), "after the flood");
    let peer = handle.peers().pop().unwrap();
    // All but the queued ones (and the one the listener holds) were dropped and counted.
    let deadline = std::time::Instant::now() + WAIT;
    while (peer.events_dropped() as usize) < N - QUEUE - 1 {
        assert!(std::time::Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(N);
    let deadline = std::time::Instant::now() + WAIT;
    while done.load(std::sync::atomic::Ordering::SeqCst) + peer.events_dropped() as usize != N {
        assert!(
            std::time::Instant::now() < deadline,
            "events neither delivered nor counted as dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conn.close_reason().is_none());
}
