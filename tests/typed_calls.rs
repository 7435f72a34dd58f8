//! Typed descriptors without a service: `Method`, `Event` and `StreamKind`
//! constants written by hand or emitted by `#[handler]`, `#[listener]` and
//! `#[stream_handler]`, called through `Caller` over real QUIC on loopback.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::{Caller, Event, Method, StreamKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[handler("math.add", idempotent)]
async fn add(a: i64, b: i64) -> Result<i64> {
    Ok(a + b)
}

#[handler("text.upper")]
async fn upper(text: String) -> echostream::Result<String> {
    Ok(text.to_uppercase())
}

static TOTAL: AtomicU64 = AtomicU64::new(0);

#[listener("counter.bump")]
async fn bump(n: u64) {
    TOTAL.fetch_add(n, Ordering::SeqCst);
}

#[stream_handler("numbers.sum")]
async fn sum_numbers(ctx: Context, rx: StreamReceiver<u32>) -> Result<()> {
    let mut total = 0u64;
    while let Some(n) = rx.recv().await {
        total += u64::from(n);
    }
    ctx.peer().emit("numbers.total", total).await
}

/// Written by hand, as an API crate would: the same names, no macro.
const ADD: Method<(i64, i64), i64> = Method::new("math.add");
const MISSING: Method<u8, u8> = Method::new("math.missing");
/// The right name with the wrong argument type: version skew.
const UPPER_AS_NUMBER: Method<u64, String> = Method::new("text.upper");
const BUMP: Event<u64> = Event::new("counter.bump");
const SUM: StreamKind<u32> = StreamKind::new("numbers.sum");

fn server() -> TestServer {
    serve(
        RpcServer::builder()
            .handler(add)
            .handler(upper)
            .listener(bump)
            .stream_handler(sum_numbers),
    )
}

#[test]
fn emitted_descriptors_carry_the_name_and_the_types() {
    assert_eq!(add::METHOD, "math.add");
    assert!(add::METHOD.is_idempotent());
    assert!(!upper::METHOD.is_idempotent());
    let info = add::METHOD.info();
    assert_eq!(info.request.as_deref(), Some("(i64, i64)"));
    assert_eq!(info.response.as_deref(), Some("i64"));
    assert_eq!(
        upper::METHOD.info().response.as_deref(),
        Some("alloc::string::String")
    );
    assert_eq!(bump::EVENT.info().payload.as_deref(), Some("u64"));
    assert_eq!(sum_numbers::STREAM.info().message.as_deref(), Some("u32"));
}

#[tokio::test]
async fn typed_call_event_and_stream_round_trip_through_the_emitted_descriptors() {
    init_tracing();
    let s = server();
    let client = connect(&s).await;
    assert_eq!(client.call(&add::METHOD, (2, 3)).await.expect("add"), 5);
    assert_eq!(client.call(&ADD, (40, 2)).await.expect("hand-written add"), 42);
    assert_eq!(
        client
            .call(&upper::METHOD, "abc".to_owned())
            .await
            .expect("upper"),
        "ABC"
    );

    let before = TOTAL.load(Ordering::SeqCst);
    client.emit_event(&bump::EVENT, 4).await.expect("emit");
    client.emit_event(&BUMP, 3).await.expect("emit hand-written");
    wait_until("both bumps arrive", || TOTAL.load(Ordering::SeqCst) >= before + 7).await;

    let mut totals = client.subscribe::<u64>("numbers.total");
    let tx = client.open_typed(&SUM).await.expect("open");
    for n in 1..=4u32 {
        tx.send(n).await.expect("send");
    }
    tx.finish().await.expect("finish");
    let total = tokio::time::timeout(WAIT, totals.recv())
        .await
        .expect("total in time");
    assert_eq!(total, Some(10));
    let again = client
        .open_typed(&sum_numbers::STREAM)
        .await
        .expect("open emitted");
    again.finish().await.expect("finish");
}

#[tokio::test]
async fn typed_call_to_a_method_the_server_lacks_is_unknown_method_naming_it() {
    let s = server();
    let client = connect(&s).await;
    match client.call(&MISSING, 1).await {
        Err(Error::UnknownMethod { method }) => assert_eq!(method, "math.missing"),
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
}

#[tokio::test]
async fn payload_of_the_wrong_type_is_bad_payload_naming_the_method_and_expected_type() {
    let s = server();
    let client = connect(&s).await;
    match client.call(&UPPER_AS_NUMBER, 7).await {
        Err(e @ Error::BadPayload { .. }) => {
            let text = e.to_string();
            assert!(text.contains("text.upper"), "{text}");
            assert!(text.contains("String"), "names the expected type: {text}");
        }
        other => panic!("expected BadPayload, got {other:?}"),
    }
}

#[tokio::test]
async fn peer_is_a_caller_too() {
    let s = server();
    let client = connect(&s).await;
    let peer: Arc<Peer> = Arc::new(client.peer());
    assert_eq!(peer.call(&ADD, (1, 1)).await.expect("add via peer"), 2);
}

#[tokio::test]
async fn stream_handler_fn_reports_its_message_type_and_raw_streams_as_raw() {
    init_tracing();
    use echostream::stream::stream_handler_fn;
    let s = serve(
        RpcServer::builder()
            .stream_handler(stream_handler_fn(
                "fn.typed",
                |_ctx: Context, rx: StreamReceiver<u32>| async move { while rx.recv().await.is_some() {} },
            ))
            .stream_handler(stream_handler_fn("fn.raw", |_ctx: Context, _s: XStream| async {}))
            .stream_handler(raw_echo),
    );
    let d = connect(&s).await.describe().await.expect("describe");
    let typed = d.stream("fn.typed").unwrap();
    assert_eq!((typed.message.as_deref(), typed.raw), (Some("u32"), false));
    for raw in ["fn.raw", "macro.raw"] {
        let raw = d.stream(raw).unwrap();
        assert_eq!((raw.message.as_deref(), raw.raw), (None, true), "{}", raw.name);
    }
    // The macro's descriptor of an `XStream` handler is a `RawStream`.
    let _: echostream::RawStream = raw_echo::STREAM;
}

#[stream_handler("macro.raw")]
async fn raw_echo(s: XStream) {
    let _ = s.read_to_end().await;
}
