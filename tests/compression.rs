//! Opt-in payload compression over real QUIC on 127.0.0.1: negotiated in the hello, flagged
//! per frame, skipped where it does not pay, and bounded on the receiving side.
//!
//! Whether a payload travelled compressed is read from the connection's UDP byte counters
//! (`ConnectionInfo::bytes_sent` / `bytes_received`): a compressible payload that crossed in
//! far fewer bytes than its size was compressed; one that took at least its size was not.

mod common;

use bytes::BytesMut;
use common::*;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, listener_fn};
use echostream::types::compress::{self, Accepted, HELLO_KEY};
use echostream::types::{CloseCode, Frame, FrameDecoder, Hello, Metadata, RequestFrame};
use echostream::{ClientTrust, Codec, Compression};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ZSTD: Compression = Compression::Zstd { level: 3 };

/// JSON-like text: compresses several times over.
fn json_like(n: usize) -> String {
    let mut s = String::with_capacity(n + 80);
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"sensor\":\"hall-{}\",\"reading\":{}.{},\"ok\":true}},",
            i % 13,
            (i * 7919) % 1000,
            i % 10
        ));
        i += 1;
    }
    s.truncate(n);
    s
}

/// Deterministic noise: does not compress.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn echo_server(compression: Compression) -> TestServer {
    serve(
        RpcServer::builder()
            .compression(compression)
            .handler(handler_fn("echo", |_c: Context, s: String| async move {
                Ok::<_, Error>(s)
            }))
            .handler(handler_fn("echo.bytes", |_c: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b)
            }))
            .handler(handler_fn("len", |_c: Context, s: String| async move {
                Ok::<_, Error>(s.len() as u64)
            }))
            // Handlers that choose for their own answer, whatever the server's setting.
            .handler(handler_fn("echo.zstd", |c: Context, s: String| async move {
                c.compress_reply(ZSTD);
                Ok::<_, Error>(s)
            }))
            .handler(handler_fn("echo.plain", |c: Context, s: String| async move {
                c.compress_reply(Compression::None);
                Ok::<_, Error>(s)
            })),
    )
}

async fn client_with(s: &TestServer, compression: Compression) -> RpcClient {
    tokio::time::timeout(WAIT, client_for(s).compression(compression).connect(&s.addr))
        .await
        .expect("connect in time")
        .expect("connect succeeds")
}

/// UDP bytes (sent, received) by this client's connection so far.
fn traffic(c: &RpcClient) -> (u64, u64) {
    let i = c.info();
    (i.bytes_sent, i.bytes_received)
}

#[tokio::test]
async fn compressed_request_and_response_cross_in_a_fraction_of_their_size() {
    init_tracing();
    let s = echo_server(ZSTD);
    let c = client_with(&s, ZSTD).await;
    let text = json_like(48 * 1024);
    let (sent0, recv0) = traffic(&c);
    let back: String = c.request("echo", &text).await.unwrap();
    assert_eq!(back, text);
    let (sent1, recv1) = traffic(&c);
    let n = text.len() as u64;
    assert!(
        sent1 - sent0 < n / 3,
        "request took {} bytes for {n}",
        sent1 - sent0
    );
    assert!(
        recv1 - recv0 < n / 3,
        "response took {} bytes for {n}",
        recv1 - recv0
    );
}

#[tokio::test]
async fn large_compressed_payloads_travel_on_side_streams_both_ways() {
    init_tracing();
    let s = echo_server(Compression::Lz4);
    let c = client_with(&s, Compression::Lz4).await;
    // 4 MiB that LZ4 shrinks to well over the 64 KiB inline threshold: side streams both ways.
    let text = json_like(4 << 20);
    let (sent0, recv0) = traffic(&c);
    let back: String = c.request("echo", &text).await.unwrap();
    assert_eq!(back, text);
    let (sent1, recv1) = traffic(&c);
    let n = text.len() as u64;
    assert!(
        sent1 - sent0 < n / 2,
        "request took {} bytes for {n}",
        sent1 - sent0
    );
    assert!(
        sent1 - sent0 > 64 * 1024,
        "the compressed request was still larger than inline"
    );
    assert!(
        recv1 - recv0 < n / 2,
        "response took {} bytes for {n}",
        recv1 - recv0
    );
}

#[tokio::test]
async fn compressed_events_arrive_intact() {
    init_tracing();
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = got.clone();
    let s = serve(
        RpcServer::builder().listener(listener_fn("log.batch", move |_c: Context, s: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(s);
            }
        })),
    );
    let c = client_with(&s, ZSTD).await;
    let text = json_like(32 * 1024);
    let (sent0, _) = traffic(&c);
    for _ in 0..4 {
        c.emit("log.batch", &text).await.unwrap();
    }
    wait_until("four events", || got.lock().unwrap().len() == 4).await;
    assert!(got.lock().unwrap().iter().all(|s| *s == text));
    let (sent1, _) = traffic(&c);
    let n = 4 * text.len() as u64;
    assert!(
        sent1 - sent0 < n / 3,
        "events took {} bytes for {n}",
        sent1 - sent0
    );
}

#[tokio::test]
async fn per_call_option_compresses_one_call_and_the_peer_answers_by_its_own_setting() {
    init_tracing();
    // Neither side compresses by default; the call asks for it for its argument.
    let s = echo_server(Compression::None);
    let c = client_with(&s, Compression::None).await;
    let text = json_like(48 * 1024);
    let n = text.len() as u64;
    let (sent0, recv0) = traffic(&c);
    let opts = CallOptions::new().compression(Compression::Lz4);
    let back: String = c.request_with("echo", &text, opts).await.unwrap();
    assert_eq!(back, text);
    let (sent1, recv1) = traffic(&c);
    assert!(
        sent1 - sent0 < n / 2,
        "request took {} bytes for {n}",
        sent1 - sent0
    );
    assert!(
        recv1 - recv0 >= n,
        "the server does not compress: {} bytes for {n}",
        recv1 - recv0
    );
    // And a call may turn the client's setting off.
    let c2 = client_with(&s, ZSTD).await;
    let (sent0, _) = traffic(&c2);
    let opts = CallOptions::new().compression(Compression::None);
    let len: u64 = c2.request_with("len", &text, opts).await.unwrap();
    assert_eq!(len, n);
    let (sent1, _) = traffic(&c2);
    assert!(sent1 - sent0 >= n, "sent {} bytes for {n}", sent1 - sent0);
}

#[tokio::test]
async fn a_handler_chooses_the_compression_of_its_own_answer() {
    init_tracing();
    let text = json_like(48 * 1024);
    let n = text.len() as u64;
    // The server does not compress; this handler does.
    let s = echo_server(Compression::None);
    let c = client_with(&s, Compression::None).await;
    let (_, recv0) = traffic(&c);
    let back: String = c.request("echo.zstd", &text).await.unwrap();
    assert_eq!(back, text);
    let (_, recv1) = traffic(&c);
    assert!(
        recv1 - recv0 < n / 3,
        "answer took {} bytes for {n}",
        recv1 - recv0
    );
    // The server compresses; this handler answers plain.
    let s = echo_server(ZSTD);
    let c = client_with(&s, Compression::None).await;
    let (_, recv0) = traffic(&c);
    let back: String = c.request("echo.plain", &text).await.unwrap();
    assert_eq!(back, text);
    let (_, recv1) = traffic(&c);
    assert!(recv1 - recv0 >= n, "answer took {} bytes for {n}", recv1 - recv0);
}

#[tokio::test]
async fn a_side_with_compression_off_still_reads_a_compressing_peer() {
    init_tracing();
    // Server compresses its answers; the client sends plain.
    let s = echo_server(ZSTD);
    let c = client_with(&s, Compression::None).await;
    let text = json_like(48 * 1024);
    let n = text.len() as u64;
    let (sent0, recv0) = traffic(&c);
    let back: String = c.request("echo", &text).await.unwrap();
    assert_eq!(back, text);
    let (sent1, recv1) = traffic(&c);
    assert!(sent1 - sent0 >= n, "client sent {} bytes for {n}", sent1 - sent0);
    assert!(
        recv1 - recv0 < n / 3,
        "server answered in {} bytes for {n}",
        recv1 - recv0
    );
}

#[tokio::test]
async fn incompressible_payloads_are_sent_as_they_are() {
    init_tracing();
    let s = echo_server(ZSTD);
    let c = client_with(&s, ZSTD).await;
    let data = noise(48 * 1024);
    let n = data.len() as u64;
    let (sent0, recv0) = traffic(&c);
    let back: Vec<u8> = c.request("echo.bytes", &data).await.unwrap();
    assert_eq!(back, data);
    let (sent1, recv1) = traffic(&c);
    assert!(sent1 - sent0 >= n, "sent {} bytes for {n}", sent1 - sent0);
    assert!(recv1 - recv0 >= n, "received {} bytes for {n}", recv1 - recv0);
}

#[tokio::test]
async fn payloads_under_the_threshold_are_sent_as_they_are() {
    init_tracing();
    let s = echo_server(Compression::None);
    let c = tokio::time::timeout(
        WAIT,
        client_for(&s)
            .compression(ZSTD)
            .compression_min_size(64 * 1024)
            .connect(&s.addr),
    )
    .await
    .unwrap()
    .unwrap();
    let text = json_like(48 * 1024);
    let n = text.len() as u64;
    let (sent0, _) = traffic(&c);
    let len: u64 = c.request("len", &text).await.unwrap();
    assert_eq!(len, n);
    let (sent1, _) = traffic(&c);
    assert!(sent1 - sent0 >= n, "sent {} bytes for {n}", sent1 - sent0);
}

#[tokio::test]
async fn a_payload_over_the_peers_frame_limit_is_refused_locally_even_if_it_would_compress_under_it() {
    init_tracing();
    let s = serve(
        RpcServer::builder()
            .max_frame_size(64 * 1024)
            .handler(handler_fn("len", |_c: Context, s: String| async move {
                Ok::<_, Error>(s.len() as u64)
            })),
    );
    let c = client_with(&s, ZSTD).await;
    let err = c
        .request::<_, u64>("len", json_like(256 * 1024))
        .await
        .expect_err("over the server's frame limit");
    assert!(matches!(err, Error::FrameTooLarge { .. }), "{err}");
    // The connection is still up: a compressible payload under the limit goes compressed.
    let text = json_like(48 * 1024);
    let len: u64 = c.request("len", &text).await.unwrap();
    assert_eq!(len, text.len() as u64);
}

#[tokio::test]
async fn the_compression_announcement_is_hidden_from_the_application() {
    let s = echo_server(ZSTD);
    let c = client_with(&s, ZSTD).await;
    assert!(c.info().hello_metadata.get(HELLO_KEY).is_none());
}

// ---- raw peers: no EchoStream client code ----

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

/// Completes the hello with `metadata` (no compression announced unless it says so); returns
/// the control stream, the welcome and the bytes read after it.
async fn raw_session(
    addr: &str,
    metadata: Metadata,
) -> (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    Hello,
    BytesMut,
) {
    let conn = raw_connect(addr).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut b = BytesMut::new();
    Frame::Hello(Hello {
        version: 1,
        max_frame_size: 1 << 20,
        metadata,
    })
    .encode(&mut b)
    .unwrap();
    send.write_all(&b).await.unwrap();
    let mut buf = BytesMut::new();
    let welcome = match read_frame(&mut recv, &mut buf).await {
        Frame::Welcome(w) => w,
        other => panic!("expected a welcome, got {other:?}"),
    };
    (conn, send, recv, welcome, buf)
}

async fn read_frame(recv: &mut quinn::RecvStream, buf: &mut BytesMut) -> Frame {
    let decoder = FrameDecoder::new(1 << 20);
    loop {
        if let Some(f) = decoder.decode(buf).unwrap() {
            return f;
        }
        let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
            .await
            .unwrap()
            .unwrap()
            .expect("stream open");
        buf.extend_from_slice(&chunk.bytes);
    }
}

async fn send_frame(send: &mut quinn::SendStream, frame: &Frame) {
    let mut b = BytesMut::new();
    frame.encode(&mut b).unwrap();
    send.write_all(&b).await.unwrap();
}

fn request(id: u64, method: &str, codec: Codec, payload: bytes::Bytes) -> Frame {
    Frame::Request(RequestFrame {
        id,
        method: method.into(),
        codec,
        deadline: None,
        metadata: Metadata::new(),
        payload,
    })
}

async fn closed_with(conn: &quinn::Connection) -> (u32, String) {
    match tokio::time::timeout(WAIT, conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(a) => (
            a.error_code.into_inner() as u32,
            String::from_utf8_lossy(&a.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_peer_that_announces_nothing_gets_plain_answers_from_a_compressing_server() {
    init_tracing();
    let s = echo_server(ZSTD);
    let (_conn, mut send, mut recv, welcome, mut buf) = raw_session(&s.addr, Metadata::new()).await;
    // The server announces what it decompresses.
    let announced = welcome.metadata.get_str(HELLO_KEY).expect("announced");
    assert_eq!(Accepted::parse(announced), Accepted::ALL);
    let text = json_like(32 * 1024);
    let payload = Codec::Json.encode(&text).unwrap();
    send_frame(&mut send, &request(0, "echo", Codec::Json, payload.clone())).await;
    match read_frame(&mut recv, &mut buf).await {
        Frame::Response(r) => {
            let (codec, body) = r.result.expect("ok");
            assert_eq!(
                codec,
                Codec::Json,
                "no compression toward a peer that did not announce it"
            );
            assert_eq!(body, payload);
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

#[tokio::test]
async fn a_raw_peer_that_announces_only_lz4_may_send_lz4_and_gets_no_zstd() {
    init_tracing();
    let s = echo_server(ZSTD);
    let mut hello = Metadata::new();
    hello.insert(HELLO_KEY, "lz4");
    let (_conn, mut send, mut recv, _welcome, mut buf) = raw_session(&s.addr, hello).await;
    let text = json_like(32 * 1024);
    let plain = Codec::Json.encode(&text).unwrap();
    let (codec, packed) =
        compress::deflate(Codec::Json, &plain, Compression::Lz4, Accepted::ALL, 0).expect("compresses");
    send_frame(&mut send, &request(0, "echo", codec, packed)).await;
    match read_frame(&mut recv, &mut buf).await {
        Frame::Response(r) => {
            let (codec, body) = r.result.expect("ok");
            // The server prefers zstd but the peer takes only LZ4: it answers plain.
            assert_eq!(codec, Codec::Json);
            assert_eq!(body, plain);
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

/// A zip bomb: a few hundred bytes of zstd that claim 1 KiB and expand to 16 MiB.
#[tokio::test]
async fn a_zip_bomb_closes_the_connection_with_frame_too_large() {
    init_tracing();
    let s = serve(
        RpcServer::builder()
            .max_frame_size(64 * 1024)
            .handler(handler_fn("echo", |_c: Context, s: String| async move {
                Ok::<_, Error>(s)
            })),
    );
    let zeros = vec![0u8; 16 << 20];
    let (codec, packed) =
        compress::deflate(Codec::Bincode, &zeros, ZSTD, Accepted::ALL, 0).expect("compresses");
    assert!(packed.len() < 8 * 1024, "a bomb: {} bytes", packed.len());

    // Claims 16 MiB: over the 64 KiB limit, refused before decompressing.
    let (conn, mut send, _recv, _, _) = raw_session(&s.addr, Metadata::new()).await;
    send_frame(&mut send, &request(0, "echo", codec, packed.clone())).await;
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::FRAME_TOO_LARGE.0, "{reason}");
    assert!(reason.contains("zstd") && reason.contains("65536"), "{reason}");

    // Claims 1 KiB and expands far beyond it: refused without following it.
    let mut lying = packed.to_vec();
    lying[..4].copy_from_slice(&1024u32.to_be_bytes());
    let (conn, mut send, _recv, _, _) = raw_session(&s.addr, Metadata::new()).await;
    send_frame(&mut send, &request(0, "echo", codec, lying.into())).await;
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::FRAME_TOO_LARGE.0, "{reason}");
    assert!(
        reason.contains("request `echo`"),
        "the reason names the call: {reason}"
    );

    // Garbage marked LZ4: a protocol violation, not a panic.
    let (conn, mut send, _recv, _, _) = raw_session(&s.addr, Metadata::new()).await;
    let mut junk = 4096u32.to_be_bytes().to_vec();
    junk.extend_from_slice(&[0xF0; 64]);
    send_frame(&mut send, &request(0, "echo", Codec::from_tag(0x21), junk.into())).await;
    let (code, reason) = closed_with(&conn).await;
    assert_eq!(code, CloseCode::PROTOCOL_VIOLATION.0, "{reason}");

    // The server keeps serving.
    let c = connect(&s).await;
    let r: String = tokio::time::timeout(Duration::from_secs(20), c.request("echo", "still here"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r, "still here");
}
