//! End-to-end RPC behaviour over real QUIC on loopback.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::rpc::RpcServer;
use echostream::{ClientTrust, Codec, ServerIdentity};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Session {
    user: String,
    token: u64,
}

fn builder() -> echostream::rpc::ServerBuilder {
    RpcServer::builder()
        .handler(handler_fn("echo", |_ctx: Context, s: String| async move {
            Ok::<_, Error>(s)
        }))
        .handler(handler_fn(
            "user.login",
            |_ctx: Context, user: String| async move { Ok::<_, Error>(Session { user, token: 42 }) },
        ))
        .handler(handler_fn(
            "math.add",
            |_ctx: Context, (a, b): (i64, i64)| async move { Ok::<_, Error>(a + b) },
        ))
        .handler(handler_fn("fail", |_ctx: Context, code: u32| async move {
            if code == 0 {
                Err::<(), _>(Error::handler("it went wrong"))
            } else {
                Err(Error::with_code(Code(code), "custom failure"))
            }
        }))
        .handler(handler_fn("panic", |_ctx: Context, _: ()| async move {
            if true {
                panic!("boom in handler");
            }
            Ok::<(), Error>(())
        }))
        .handler(handler_fn("sleep", |_ctx: Context, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Error>(ms)
        }))
        .handler(handler_fn("ctx.info", |ctx: Context, _: ()| async move {
            Ok::<_, Error>((
                ctx.method().to_owned(),
                ctx.metadata().get_str("trace").map(str::to_owned),
                ctx.remaining().is_some(),
                ctx.peer_addr().ip().is_loopback(),
                ctx.connection_id(),
            ))
        }))
}

#[tokio::test]
async fn typed_request_and_struct_result() {
    init_tracing();
    let s = serve(builder());
    let c = connect(&s).await;
    let echoed: String = c.request("echo", "hello").await.unwrap();
    assert_eq!(echoed, "hello");
    let session: Session = c.request("user.login", "alice").await.unwrap();
    assert_eq!(
        session,
        Session {
            user: "alice".into(),
            token: 42
        }
    );
    let sum: i64 = c.request("math.add", (2i64, 40i64)).await.unwrap();
    assert_eq!(sum, 42);
}

#[tokio::test]
async fn json_codec_works_for_the_same_handlers() {
    let s = serve(builder());
    let c = connect(&s).await;
    let opts = || CallOptions::new().codec(Codec::Json);
    let session: Session = c.request_with("user.login", "bob", opts()).await.unwrap();
    assert_eq!(session.user, "bob");
    // A tool without Rust types: hand-written JSON in, JSON value out.
    let raw = echostream::rpc::Payload {
        codec: Codec::Json,
        bytes: bytes::Bytes::from_static(b"[1, 2]"),
    };
    let (codec, out) = c
        .peer()
        .request_raw("math.add", raw, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(codec, Codec::Json);
    assert_eq!(&out[..], b"3");
    let v: serde_json::Value = c.request_with("user.login", "carol", opts()).await.unwrap();
    assert_eq!(v["user"], "carol");
}

#[tokio::test]
async fn handler_error_arrives_as_remote_error_with_code() {
    let s = serve(builder());
    let c = connect(&s).await;
    match c.request::<_, ()>("fail", 0u32).await {
        Err(Error::Remote { method, status }) => {
            assert_eq!(method, "fail");
            assert_eq!(status.code(), Code::APPLICATION);
            assert_eq!(status.message(), "it went wrong");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    match c.request::<_, ()>("fail", 4040u32).await {
        Err(Error::Remote { status, .. }) => {
            assert_eq!(status.code(), Code(4040));
            assert_eq!(status.message(), "custom failure");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn panicking_handler_gives_an_error_and_the_connection_survives() {
    let s = serve(builder());
    let c = connect(&s).await;
    match c.request::<_, ()>("panic", ()).await {
        Err(Error::Remote { status, .. }) => {
            assert_eq!(status.code(), Code::HANDLER_PANICKED);
            assert!(status.message().contains("boom in handler"), "{status}");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    let ok: String = c.request("echo", "still here").await.unwrap();
    assert_eq!(ok, "still here");
}

#[tokio::test]
async fn unknown_method_is_named() {
    let s = serve(builder());
    let c = connect(&s).await;
    let err = c.request::<_, ()>("no.such.method", ()).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownMethod { method } if method == "no.such.method"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no.such.method"));
}

#[tokio::test]
async fn bad_payload_names_method_and_type() {
    let s = serve(builder());
    let c = connect(&s).await;
    // math.add wants (i64, i64); send a string.
    let err = c
        .request_with::<_, i64>("math.add", "text", CallOptions::new().codec(Codec::Json))
        .await
        .unwrap_err();
    match &err {
        Error::BadPayload { method, detail } => {
            assert_eq!(method, "math.add");
            assert!(detail.contains("i64"), "{detail}");
        }
        other => panic!("expected bad payload, got {other:?}"),
    }
    // A result that does not decode as the caller's type fails locally, naming it.
    let err = c.request::<_, Session>("echo", "x").await.unwrap_err();
    assert!(
        matches!(&err, Error::BadPayload { method, detail } if method == "echo" && detail.contains("Session")),
        "{err:?}"
    );
}

#[tokio::test]
async fn timeout_fails_the_call_and_cancels_the_handler() {
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (st, fi, dr) = (started.clone(), finished.clone(), dropped.clone());
    let s = serve(
        RpcServer::builder().handler(handler_fn("slow", move |_ctx: Context, _: ()| {
            let (st, fi, dr) = (st.clone(), fi.clone(), dr.clone());
            async move {
                let _guard = DropFlag(dr);
                st.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(30)).await;
                fi.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            }
        })),
    );
    let c = connect(&s).await;
    let err = c
        .request_with::<_, ()>("slow", (), CallOptions::new().timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { method, after } if method == "slow" && *after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(started.load(Ordering::SeqCst));
    wait_until(|| dropped.load(Ordering::SeqCst)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the handler was cancelled, not run to completion"
    );
}

#[tokio::test]
async fn dropped_caller_future_cancels_the_server_handler() {
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (st, dr) = (started.clone(), dropped.clone());
    let s = serve(
        RpcServer::builder().handler(handler_fn("wait", move |_ctx: Context, _: ()| {
            let (st, dr) = (st.clone(), dr.clone());
            async move {
                let _guard = DropFlag(dr);
                st.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            }
        })),
    );
    let c = connect(&s).await;
    let call = tokio::spawn({
        let c = c.clone();
        async move {
            c.request_with::<_, ()>("wait", (), CallOptions::new().no_timeout())
                .await
        }
    });
    wait_until(|| started.load(Ordering::SeqCst)).await;
    assert!(!dropped.load(Ordering::SeqCst));
    call.abort();
    wait_until(|| dropped.load(Ordering::SeqCst)).await;
    // The connection is still fine.
    let () = c
        .request("wait_missing_is_unknown", ())
        .await
        .map(|_: ()| ())
        .or_else(|e| match e {
            Error::UnknownMethod { .. } => Ok(()),
            e => Err(e),
        })
        .unwrap();
}

#[tokio::test]
async fn context_carries_method_metadata_deadline_and_peer() {
    let s = serve(builder());
    let c = connect(&s).await;
    let (method, trace, has_deadline, loopback, conn_id): (String, Option<String>, bool, bool, u64) = c
        .request_with(
            "ctx.info",
            (),
            CallOptions::new()
                .metadata("trace", "abc123")
                .timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(method, "ctx.info");
    assert_eq!(trace.as_deref(), Some("abc123"));
    assert!(has_deadline && loopback && conn_id > 0);
}

#[tokio::test]
async fn thousand_concurrent_requests_from_16_tasks_are_matched() {
    let s = serve(builder());
    let c = connect(&s).await;
    let mut tasks = vec![];
    for t in 0..16i64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let calls = (0..63i64).map(|i| {
                let c = c.clone();
                async move {
                    let sum: i64 = c.request("math.add", (t * 1000, i)).await.unwrap();
                    assert_eq!(sum, t * 1000 + i);
                }
            });
            futures::future::join_all(calls).await.len()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
    }
    assert_eq!(total, 16 * 63);
    // Plus the remaining 8 to make it 1,000 (1008 here), concurrently with echo.
    let echoes = (0..8).map(|i| {
        let c = c.clone();
        async move { c.request::<_, String>("echo", format!("m{i}")).await.unwrap() }
    });
    assert_eq!(futures::future::join_all(echoes).await.len(), 8);
}

/// Handlers that answer on their first poll have their answers batched by the connection's
/// reader; answers with a payload too big to copy, too big for the control stream, and
/// handlers that wait go other ways. All of them, mixed and concurrent, reach their callers.
#[tokio::test]
async fn answers_of_every_size_and_waiting_handlers_mixed_are_all_matched() {
    let s = serve(
        builder().handler(handler_fn("bytes", |_ctx: Context, n: usize| async move {
            Ok::<_, Error>(vec![(n % 251) as u8; n])
        })),
    );
    let c = connect(&s).await;
    // 0 and 100 bytes are copied into the batch, 5,000 is handed over uncopied, 200,000 is
    // above the 64 KiB inline threshold (its own stream); `sleep` answers from its own task.
    let sizes = [0usize, 100, 5_000, 200_000];
    let calls = (0..400usize).map(|i| {
        let c = c.clone();
        async move {
            if i % 5 == 4 {
                let ms: u64 = c.request("sleep", (i % 3) as u64).await.unwrap();
                assert_eq!(ms, (i % 3) as u64);
            } else {
                let n = sizes[i % 5] + i;
                let back: Vec<u8> = c.request("bytes", n).await.unwrap();
                assert_eq!(back.len(), n, "call {i}");
                assert!(back.iter().all(|&b| b == (n % 251) as u8), "call {i}");
            }
        }
    });
    let done = tokio::time::timeout(WAIT, futures::future::join_all(calls))
        .await
        .unwrap();
    assert_eq!(done.len(), 400);
    // The connection is still healthy afterwards.
    assert_eq!(c.request::<_, String>("echo", "after").await.unwrap(), "after");
}

#[tokio::test]
async fn request_larger_than_peer_limit_fails_locally_with_frame_too_large() {
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let s = serve(RpcServer::builder().max_frame_size(64 * 1024).handler(handler_fn(
        "upload",
        move |_ctx: Context, data: Vec<u8>| {
            n.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Error>(data.len()) }
        },
    )));
    let c = connect(&s).await;
    let err = c
        .request::<_, usize>("upload", vec![0u8; 100_000])
        .await
        .unwrap_err();
    match &err {
        Error::FrameTooLarge { what, limit, size } => {
            assert!(what.contains("upload"), "{what}");
            assert_eq!(*limit, 64 * 1024);
            assert!(*size > 100_000);
        }
        other => panic!("expected frame too large, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let n: usize = c.request("upload", vec![0u8; 1000]).await.unwrap();
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn response_larger_than_client_limit_is_an_error_not_a_hang() {
    let s = serve(
        RpcServer::builder().handler(handler_fn("big", |_ctx: Context, n: usize| async move {
            Ok::<_, Error>(vec![7u8; n])
        })),
    );
    let c = tokio::time::timeout(WAIT, client_for(&s).max_frame_size(32 * 1024).connect(&s.addr))
        .await
        .unwrap()
        .unwrap();
    match c.request::<_, Vec<u8>>("big", 100_000usize).await {
        Err(Error::Remote { status, .. }) => assert_eq!(status.code(), Code::RESPONSE_TOO_LARGE),
        other => panic!("expected response-too-large, got {other:?}"),
    }
    let small: Vec<u8> = c.request("big", 10usize).await.unwrap();
    assert_eq!(small.len(), 10);
}

#[tokio::test]
async fn small_calls_are_not_held_up_by_a_16_mib_response() {
    let big_returned = Arc::new(AtomicBool::new(false));
    let flag = big_returned.clone();
    let s = serve(
        builder().handler(handler_fn("big16", move |_ctx: Context, _: ()| {
            let flag = flag.clone();
            async move {
                let data = vec![0x5Au8; 16 * 1024 * 1024];
                flag.store(true, Ordering::SeqCst);
                Ok::<_, Error>(bytes::Bytes::from(data).to_vec())
            }
        })),
    );
    let c = connect(&s).await;
    let big = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, Vec<u8>>("big16", ()).await }
    });
    // Calls that start after the big response was handed to the connection
    // and finish while it is still in flight prove there is no head-of-line
    // blocking behind it.
    let mut overtook = 0;
    let mut worst = Duration::ZERO;
    while !big.is_finished() {
        let after_big = big_returned.load(Ordering::SeqCst);
        let t = Instant::now();
        let r: String = tokio::time::timeout(WAIT, c.request("echo", "small"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r, "small");
        if after_big && !big.is_finished() {
            overtook += 1;
            worst = worst.max(t.elapsed());
        }
    }
    let data = big.await.unwrap().unwrap();
    assert_eq!(data.len(), 16 * 1024 * 1024);
    assert!(data.iter().all(|b| *b == 0x5A));
    assert!(
        overtook > 0,
        "no small call completed while the 16 MiB response was in flight"
    );
    // Generous: a small call on loopback takes well under a millisecond.
    assert!(
        worst < Duration::from_secs(2),
        "small call took {worst:?} during the transfer"
    );
}

#[tokio::test]
async fn server_can_call_the_client_through_ctx_peer() {
    let s = serve(RpcServer::builder().handler(handler_fn(
        "ask_back",
        |ctx: Context, q: String| async move {
            let a: String = ctx.peer().request("client.answer", q).await?;
            Ok::<_, Error>(format!("client said: {a}"))
        },
    )));
    let c = tokio::time::timeout(
        WAIT,
        client_for(&s)
            .handler(handler_fn(
                "client.answer",
                |_ctx: Context, q: String| async move { Ok::<_, Error>(q.to_uppercase()) },
            ))
            .connect(&s.addr),
    )
    .await
    .unwrap()
    .unwrap();
    let r: String = c.request("ask_back", "hi").await.unwrap();
    assert_eq!(r, "client said: HI");
}

#[tokio::test]
async fn graceful_shutdown_finishes_inflight_calls_then_closes() {
    let s = serve(builder().shutdown_grace(Duration::from_secs(10)));
    let c = connect(&s).await;
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, u64>("sleep", 300u64).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.shutdown.shutdown();
    // The call that was running completes.
    assert_eq!(slow.await.unwrap().unwrap(), 300);
    let (addr, fp) = (s.addr.clone(), s.fingerprint);
    tokio::time::timeout(WAIT, s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Then the connection is closed, with the server's reason.
    let err = c.request::<_, String>("echo", "late").await.unwrap_err();
    match err {
        Error::ConnectionClosed { reason, .. } => assert!(reason.contains("shut"), "{reason}"),
        other => panic!("expected connection closed, got {other:?}"),
    }
    // New connections are refused.
    assert!(RpcClient::builder()
        .pin(fp)
        .connect_timeout(Duration::from_secs(2))
        .connect(&addr)
        .await
        .is_err());
}

#[tokio::test]
async fn connect_to_nothing_fails_with_connect_error_naming_the_address() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    drop(sock);
    let err = RpcClient::builder()
        .trust(ClientTrust::dangerous_accept_any_certificate())
        .connect_timeout(Duration::from_millis(500))
        .connect(&addr)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Connect { addr: a, .. } if *a == addr),
        "{err:?}"
    );
}

#[tokio::test]
async fn register_twice_is_a_build_error() {
    let err = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(handler_fn("x", |_c: Context, _: ()| async { Ok::<_, Error>(()) }))
        .handler(handler_fn("x", |_c: Context, _: ()| async { Ok::<_, Error>(()) }))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`x`"), "{err}");
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn calls_still_running_when_the_grace_period_ends_are_cancelled() {
    let s = serve(builder().shutdown_grace(Duration::from_millis(200)));
    let c = connect(&s).await;
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, u64>("sleep", 60_000u64).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.shutdown.shutdown();
    let err = tokio::time::timeout(WAIT, slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Cancelled { method } if method == "sleep"),
        "{err:?}"
    );
}

#[tokio::test]
async fn peer_closed_resolves_with_the_reason_and_methods_are_listed() {
    let server = builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()
        .unwrap();
    assert!(server.methods().contains(&"math.add".to_string()));
    let (addr, fp, stop) = (
        server.local_addr().to_string(),
        server.fingerprint(),
        server.shutdown_handle(),
    );
    tokio::spawn(server.run());
    let c = RpcClient::builder().pin(fp).connect(&addr).await.unwrap();
    let waiter = tokio::spawn({
        let p = c.peer().clone();
        async move { p.closed().await }
    });
    stop.shutdown();
    let err = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert!(
        matches!(&err, Error::ConnectionClosed { reason, .. } if reason.contains("shut down")),
        "{err:?}"
    );
}
