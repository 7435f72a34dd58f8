//! Many large calls at once, in both directions, beside small ones; large calls cancelled
//! mid-transfer; a peer that starves or stalls large transfers. Over real QUIC on loopback.
//!
//! A request or response larger than the inline threshold (64 KiB) travels on a side stream
//! of its own; these tests check that no mix of them can exhaust the connection's credit, that
//! a call's timeout covers the time its request spends being sent, and that cancelling one
//! large call cancels only that call.

mod common;

use bytes::{BufMut, BytesMut};
use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::types::{Codec, Frame, Hello, Metadata, RequestFrame};
use echostream::ClientTrust;
use futures::future::join_all;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Bound for each large call: the tests look for calls that never end (a wedged connection),
/// not for speed; a debug build on a loaded 2-core machine moves only about 10 MB/s here, and
/// a call's timeout covers its wait for a side-stream slot.
const LARGE: Duration = Duration::from_secs(90);

fn blob_server() -> TestServer {
    serve(
        RpcServer::builder()
            .max_frame_size(64 * MIB as u32)
            .max_request_bytes_in_flight(512 * MIB)
            .handler(handler_fn("blob.len", |_c: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b.len() as u64)
            }))
            .handler(handler_fn("blob.make", |_c: Context, n: u64| async move {
                Ok::<_, Error>(vec![7u8; n as usize])
            }))
            .handler(handler_fn("echo", |_c: Context, s: String| async move {
                Ok::<_, Error>(s)
            })),
    )
}

async fn blob_client(s: &TestServer) -> RpcClient {
    tokio::time::timeout(
        WAIT,
        client_for(s).max_frame_size(64 * MIB as u32).connect(&s.addr),
    )
    .await
    .expect("connect in time")
    .expect("connect succeeds")
}

/// A client that serves `client.len` (the length of a byte argument) for the server's calls.
async fn client_serving_len(s: &TestServer) -> RpcClient {
    tokio::time::timeout(
        WAIT,
        client_for(s)
            .max_frame_size(64 * MIB as u32)
            .handler(handler_fn("client.len", |_c: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b.len() as u64)
            }))
            .connect(&s.addr),
    )
    .await
    .expect("connect in time")
    .expect("connect succeeds")
}

fn opts(t: Duration) -> CallOptions {
    CallOptions::new().timeout(t)
}

/// A small call answers within `bound` (generous: a loaded CI machine passes).
async fn small_call_answers(c: &RpcClient, bound: Duration) {
    let r: String = tokio::time::timeout(bound, c.request_with("echo", "ping", opts(bound)))
        .await
        .expect("small call answers in time")
        .expect("small call succeeds");
    assert_eq!(r, "ping");
}

/// `n` concurrent requests of `size` bytes each: every one completes, and a small call made
/// while they run answers.
async fn concurrent_uploads(n: usize, size: usize) {
    let s = blob_server();
    let c = blob_client(&s).await;
    let calls = (0..n).map(|_| {
        let c = c.clone();
        async move {
            c.request_with::<_, u64>("blob.len", vec![3u8; size], opts(LARGE))
                .await
        }
    });
    let all = tokio::spawn(join_all(calls));
    small_call_answers(&c, WAIT).await;
    let results = tokio::time::timeout(LARGE * 2, all)
        .await
        .expect("every large request completes in time")
        .unwrap();
    for r in &results {
        assert_eq!(*r.as_ref().expect("large request succeeds"), size as u64);
    }
    small_call_answers(&c, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_one_mib_requests_complete() {
    concurrent_uploads(64, MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_one_mib_requests_complete() {
    concurrent_uploads(100, MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_concurrent_quarter_mib_requests_complete() {
    concurrent_uploads(256, 256 * KIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_responses_complete() {
    let s = blob_server();
    let c = blob_client(&s).await;
    for (n, size) in [(64, MIB), (100, MIB), (256, 256 * KIB)] {
        let calls = (0..n).map(|_| {
            let c = c.clone();
            async move {
                c.request_with::<_, Vec<u8>>("blob.make", size as u64, opts(LARGE))
                    .await
            }
        });
        let results = tokio::time::timeout(LARGE * 2, join_all(calls))
            .await
            .expect("every large response arrives in time");
        for r in results {
            assert_eq!(r.expect("large response arrives").len(), size);
        }
        small_call_answers(&c, WAIT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_large_and_small_calls_all_complete() {
    let s = blob_server();
    let c = blob_client(&s).await;
    let mut calls = Vec::new();
    for i in 0..200u64 {
        let c = c.clone();
        calls.push(tokio::spawn(async move {
            match i % 4 {
                0 => {
                    let n: u64 = c.request_with("blob.len", vec![1u8; MIB], opts(LARGE)).await?;
                    assert_eq!(n, MIB as u64);
                }
                1 => {
                    let b: Vec<u8> = c
                        .request_with("blob.make", (512 * KIB) as u64, opts(LARGE))
                        .await?;
                    assert_eq!(b.len(), 512 * KIB);
                }
                _ => {
                    let r: String = c.request_with("echo", format!("s{i}"), opts(LARGE)).await?;
                    assert_eq!(r, format!("s{i}"));
                }
            }
            Ok::<_, Error>(())
        }));
    }
    let results = tokio::time::timeout(LARGE * 2, join_all(calls))
        .await
        .expect("the mixed calls complete in time");
    for r in results {
        r.unwrap().expect("call succeeds");
    }
    small_call_answers(&c, WAIT).await;
}

/// The server calls its client with many large requests at once (the other direction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_requests_from_server_to_client_complete() {
    let s = serve(
        RpcServer::builder()
            .max_frame_size(64 * MIB as u32)
            .handler(handler_fn("push.many", |ctx: Context, n: u64| async move {
                let peer = ctx.peer();
                let calls = (0..n).map(|_| {
                    let peer = peer.clone();
                    async move {
                        peer.request_with::<_, u64>("client.len", vec![5u8; MIB], opts(LARGE))
                            .await
                    }
                });
                let mut ok = 0u64;
                for r in join_all(calls).await {
                    if r? == MIB as u64 {
                        ok += 1;
                    }
                }
                Ok::<_, Error>(ok)
            })),
    );
    let c = client_serving_len(&s).await;
    let ok: u64 = c
        .request_with("push.many", 100u64, opts(LARGE * 2))
        .await
        .expect("the server's large calls to its client complete");
    assert_eq!(ok, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_cancelled_by_timeout_leaves_the_connection_up() {
    let s = blob_server();
    let c = blob_client(&s).await;
    for _ in 0..3 {
        let r = c
            .request_with::<_, u64>("blob.len", vec![7u8; 16 * MIB], opts(Duration::from_millis(5)))
            .await;
        match r {
            Err(Error::Timeout { method, .. }) => assert_eq!(method, "blob.len"),
            other => panic!("expected a timeout naming the method, got {other:?}"),
        }
        small_call_answers(&c, WAIT).await;
    }
    // A large call still goes through afterwards.
    let n: u64 = c
        .request_with("blob.len", vec![1u8; 4 * MIB], opts(WAIT))
        .await
        .unwrap();
    assert_eq!(n, 4 * MIB as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_cancelled_by_dropping_its_future_leaves_the_connection_up() {
    let s = blob_server();
    let c = blob_client(&s).await;
    for delay_ms in [0u64, 1, 3, 10] {
        let c2 = c.clone();
        let call = tokio::spawn(async move {
            c2.request_with::<_, u64>("blob.len", vec![7u8; 16 * MIB], opts(WAIT))
                .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        call.abort();
        let _ = call.await;
        small_call_answers(&c, WAIT).await;
    }
    assert!(c.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_cancelled_by_timeout_or_drop_leaves_the_connection_up() {
    let s = blob_server();
    let c = blob_client(&s).await;
    for _ in 0..3 {
        let r = c
            .request_with::<_, Vec<u8>>("blob.make", (32 * MIB) as u64, opts(Duration::from_millis(20)))
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "got {r:?}");
        small_call_answers(&c, WAIT).await;
    }
    for delay_ms in [1u64, 5, 20] {
        let c2 = c.clone();
        let call = tokio::spawn(async move {
            c2.request_with::<_, Vec<u8>>("blob.make", (32 * MIB) as u64, opts(WAIT))
                .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        call.abort();
        let _ = call.await;
        small_call_answers(&c, WAIT).await;
    }
    let b: Vec<u8> = c
        .request_with("blob.make", (2 * MIB) as u64, opts(WAIT))
        .await
        .unwrap();
    assert_eq!(b.len(), 2 * MIB);
}

/// The server cancels large calls it makes to its client (timeout), in the other direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_from_server_cancelled_leaves_the_connection_up() {
    let s = serve(
        RpcServer::builder()
            .max_frame_size(64 * MIB as u32)
            .handler(handler_fn("push.cancelled", |ctx: Context, _: ()| async move {
                let r = ctx
                    .peer()
                    .request_with::<_, u64>("client.len", vec![5u8; 16 * MIB], opts(Duration::from_millis(5)))
                    .await;
                let timed_out = matches!(r, Err(Error::Timeout { .. }));
                // The same connection still carries a call to the client.
                let small: u64 = ctx.peer().request("client.len", vec![1u8; 10]).await?;
                Ok::<_, Error>((timed_out, small))
            }))
            .handler(handler_fn("echo", |_c: Context, s: String| async move {
                Ok::<_, Error>(s)
            })),
    );
    let c = client_serving_len(&s).await;
    for _ in 0..3 {
        let (timed_out, small): (bool, u64) = c.request_with("push.cancelled", (), opts(WAIT)).await.unwrap();
        assert!(timed_out, "the server's 5 ms call timed out");
        assert_eq!(small, 10);
    }
    small_call_answers(&c, WAIT).await;
}

/// A raw QUIC server that completes the EchoStream handshake, then never reads anything
/// else: a large request to it gets no flow-control credit beyond the first window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_starved_of_credit_fails_at_its_timeout() {
    let (ep, addr, fingerprint) = raw_server();
    let server = tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        // Read the hello (its first chunk is enough), answer with a welcome.
        let _ = recv.read_chunk(64 * KIB, true).await.unwrap();
        let mut welcome = BytesMut::new();
        Frame::Welcome(Hello {
            version: 1,
            max_frame_size: 64 * MIB as u32,
            metadata: Metadata::new(),
        })
        .encode(&mut welcome)
        .unwrap();
        send.write_all(&welcome).await.unwrap();
        // Hold the connection open without reading any stream.
        tokio::time::sleep(WAIT * 2).await;
        drop((conn, send, recv));
    });
    let c = tokio::time::timeout(
        WAIT,
        RpcClient::builder()
            .pin(fingerprint)
            .max_frame_size(64 * MIB as u32)
            .connect(&addr),
    )
    .await
    .unwrap()
    .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(
        WAIT,
        c.request_with::<_, u64>("blob.len", vec![1u8; 32 * MIB], opts(Duration::from_millis(500))),
    )
    .await
    .expect("the call ends by itself (its timeout covers sending)");
    match r {
        Err(Error::Timeout { method, after }) => {
            assert_eq!(method, "blob.len");
            assert_eq!(after, Duration::from_millis(500));
        }
        other => panic!("expected a timeout naming the method, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(500));
    server.abort();
}

/// A raw QUIC client opens many side streams that announce a large request frame and stall.
/// Other calls on its connection keep working, and the stalled streams are dropped after the
/// assembly deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_side_streams_do_not_block_other_calls_and_are_dropped() {
    init_tracing();
    let s = serve(
        RpcServer::builder()
            .max_frame_size(32 * MIB as u32)
            .assembly_timeout(Duration::from_millis(700))
            .handler(handler_fn("blob.len", |_c: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b.len() as u64)
            })),
    );
    let (crypto, _) =
        echostream::tls::client_crypto(&ClientTrust::dangerous_accept_any_certificate(), &s.addr).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = tokio::time::timeout(WAIT, ep.connect(s.addr.parse().unwrap(), "localhost").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (mut ctl_send, mut ctl_recv) = conn.open_bi().await.unwrap();
    let mut hello = BytesMut::new();
    Frame::Hello(Hello {
        version: 1,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    })
    .encode(&mut hello)
    .unwrap();
    ctl_send.write_all(&hello).await.unwrap();
    let welcome = tokio::time::timeout(WAIT, ctl_recv.read_chunk(64 * KIB, true))
        .await
        .unwrap()
        .unwrap();
    assert!(welcome.is_some());

    // Many side streams, each announcing a 16 MiB request and sending its first 200 KiB.
    let mut stalled = Vec::new();
    for i in 0..90u64 {
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), conn.open_uni()).await else {
            break;
        };
        let mut b = BytesMut::new();
        b.put_u8(0x01);
        Frame::Request(RequestFrame {
            id: 1000 + 2 * i,
            method: "blob.len".into(),
            codec: Codec::Bincode,
            deadline: None,
            metadata: Metadata::new(),
            payload: vec![0u8; 16 * MIB].into(),
        })
        .encode(&mut b)
        .unwrap();
        b.truncate(200 * KIB);
        // Whatever credit the server gives; a write that cannot go on stays pending.
        let _ = tokio::time::timeout(Duration::from_millis(50), s.write_all(&b)).await;
        stalled.push(s);
    }
    assert!(
        stalled.len() >= 32,
        "opened {} stalled side streams",
        stalled.len()
    );

    // Small requests on the control stream still answer promptly.
    for i in 0..5u64 {
        let mut req = BytesMut::new();
        Frame::Request(RequestFrame {
            id: 2 * i,
            method: "blob.len".into(),
            codec: Codec::Bincode,
            deadline: None,
            metadata: Metadata::new(),
            payload: Codec::Bincode.encode(&vec![1u8; 100]).unwrap(),
        })
        .encode(&mut req)
        .unwrap();
        tokio::time::timeout(WAIT, ctl_send.write_all(&req))
            .await
            .expect("the control stream has credit while side streams stall")
            .unwrap();
        let answer = tokio::time::timeout(WAIT, ctl_recv.read_chunk(64 * KIB, true))
            .await
            .expect("a small call answers while side streams stall")
            .unwrap();
        assert!(answer.is_some());
    }

    // The stalled streams are dropped (STOP_SENDING) after the assembly deadline.
    let deadline = Instant::now() + WAIT;
    let mut stopped = 0;
    for s in &mut stalled {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(Some(_code))) = tokio::time::timeout(left, s.stopped()).await {
            stopped += 1;
        }
    }
    assert_eq!(stopped, stalled.len(), "every stalled side stream was dropped");
    assert!(conn.close_reason().is_none(), "the connection stays open");
}
