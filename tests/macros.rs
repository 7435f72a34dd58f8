//! What `#[echostream::handler]` generates: the handler type and its
//! constants, the direct `invoke`, the registration, and calls over real QUIC
//! on loopback. The compile-time checks are the trybuild cases in `tests/ui`.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::registered_handlers;
use echostream::rpc::Handler;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Session {
    user: String,
    token: u64,
}

/// Starts playing a file.
#[echostream::handler("audio.play")]
async fn handle_play(_ctx: Context, _file: String) -> Result<()> {
    Ok(())
}

#[echostream::handler("user.login", idempotent)]
async fn login(_ctx: Context, username: String) -> Result<Session> {
    Ok(Session {
        user: username,
        token: 7,
    })
}

/// No context, several arguments, and patterns other than plain names.
#[handler("math.sum")]
async fn sum(mut first: i64, _: String, (a, b): (i64, i64)) -> Result<i64> {
    first += a + b;
    Ok(first)
}

/// No context and no argument.
#[handler("ping")]
async fn ping() -> Result<&'static str> {
    Ok("pong")
}

/// The context, spelled with its full path, and nothing else.
#[handler("ctx.method")]
async fn ctx_method(ctx: echostream::Context) -> Result<(String, bool)> {
    Ok((ctx.method().to_owned(), ctx.peer_addr().ip().is_loopback()))
}

/// Fails with a code of its choosing.
#[handler("always.fails")]
async fn always_fails(_ctx: Context, code: u32) -> Result<()> {
    Err(Error::with_code(Code(code), format!("failed with {code}")))
}

/// An error type of the handler's own, converted into a status.
#[handler("parse.number")]
async fn parse_number(text: String) -> std::result::Result<u32, ParseFailure> {
    text.parse().map_err(|_| ParseFailure(text))
}

#[derive(Debug)]
struct ParseFailure(String);

impl From<ParseFailure> for Status {
    fn from(e: ParseFailure) -> Self {
        Status::new(Code(1001), format!("not a number: {:?}", e.0))
    }
}

/// A `#[cfg]` after the attribute removes the whole handler, registration included.
#[handler("never.compiled")]
#[cfg(any())]
async fn never_compiled() -> Result<()> {
    Ok(())
}

mod audio {
    use echostream::prelude::*;

    /// Visible outside its module, like the function was.
    #[echostream::handler("audio.volume")]
    pub(crate) async fn volume(level: u8) -> Result<u8> {
        Ok(level.min(100))
    }
}

/// The methods this file defines handlers for (and compiles).
const METHODS: [&str; 8] = [
    "audio.play",
    "user.login",
    "math.sum",
    "ping",
    "ctx.method",
    "always.fails",
    "parse.number",
    "audio.volume",
];

#[test]
fn method_const_and_method_name_are_the_attribute_string() {
    assert_eq!(handle_play::METHOD, "audio.play");
    assert_eq!(login::METHOD, "user.login");
    assert_eq!(audio::volume::METHOD, "audio.volume");
    assert_eq!(Handler::method(&handle_play), "audio.play");
    assert_eq!(Handler::method(&sum), "math.sum");
}

#[test]
fn idempotent_option_sets_the_flag() {
    assert!(login.idempotent());
    assert!(!handle_play.idempotent());
    assert!(!ping.idempotent());
}

#[test]
fn handler_is_a_copyable_unit_value_named_like_the_function() {
    let copy = handle_play;
    let _still_usable = handle_play;
    assert_eq!(format!("{copy:?}"), "handle_play");
    let boxed: Box<dyn Handler> = Box::new(audio::volume);
    assert_eq!(boxed.method(), "audio.volume");
}

#[tokio::test]
async fn invoke_runs_the_original_function_directly() {
    assert_eq!(sum::invoke(1, "ignored".into(), (2, 3)).await.expect("sum"), 6);
    assert_eq!(ping::invoke().await.expect("ping"), "pong");
    assert_eq!(audio::volume::invoke(250).await.expect("volume"), 100);
    assert!(parse_number::invoke("x".into()).await.is_err());
}

#[test]
fn every_handler_is_registered_for_register_all_except_cfg_removed_ones() {
    let registered: BTreeSet<&str> = registered_handlers().map(|r| r.method).collect();
    for method in METHODS {
        assert!(
            registered.contains(method),
            "{method} missing from {registered:?}"
        );
    }
    assert!(!registered.contains("never.compiled"));
    for registration in registered_handlers() {
        assert_eq!((registration.make)().method(), registration.method);
    }
}

#[tokio::test]
async fn handlers_answer_over_quic_with_decoded_arguments_and_encoded_results() {
    init_tracing();
    let server = serve(
        echostream::RpcServer::builder()
            .handler(handle_play)
            .handler(login)
            .handler(sum)
            .handler(ping)
            .handler(ctx_method)
            .handler(audio::volume),
    );
    let client = connect(&server).await;

    let () = client
        .request("audio.play", "music.mp3")
        .await
        .expect("audio.play");
    let session: Session = client.request("user.login", "alice").await.expect("user.login");
    assert_eq!(
        session,
        Session {
            user: "alice".into(),
            token: 7
        }
    );
    let total: i64 = client
        .request("math.sum", (10, "x", (20, 30)))
        .await
        .expect("math.sum");
    assert_eq!(total, 60);
    let pong: String = client.request("ping", ()).await.expect("ping");
    assert_eq!(pong, "pong");
    let (method, loopback): (String, bool) = client.request("ctx.method", ()).await.expect("ctx.method");
    assert_eq!(method, "ctx.method");
    assert!(loopback);
    let level: u8 = client.request("audio.volume", 180u8).await.expect("audio.volume");
    assert_eq!(level, 100);
}

#[tokio::test]
async fn register_all_serves_the_annotated_handlers() {
    init_tracing();
    let server = serve(echostream::RpcServer::builder().register_all());
    let client = connect(&server).await;

    let total: i64 = client
        .request("math.sum", (1, "", (2, 3)))
        .await
        .expect("math.sum");
    assert_eq!(total, 6);
    let session: Session = client.request("user.login", "bob").await.expect("user.login");
    assert_eq!(session.user, "bob");
}

#[tokio::test]
async fn handler_errors_reach_the_caller_as_statuses() {
    init_tracing();
    let server = serve(
        echostream::RpcServer::builder()
            .handler(always_fails)
            .handler(parse_number),
    );
    let client = connect(&server).await;

    match client.request::<_, ()>("always.fails", 1234u32).await {
        Err(Error::Remote { method, status }) => {
            assert_eq!(method, "always.fails");
            assert_eq!(status.code(), Code(1234));
            assert_eq!(status.message(), "failed with 1234");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    match client.request::<_, u32>("parse.number", "twelve").await {
        Err(Error::Remote { status, .. }) => {
            assert_eq!(status.code(), Code(1001));
            assert_eq!(status.message(), "not a number: \"twelve\"");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    let n: u32 = client.request("parse.number", "12").await.expect("parse.number");
    assert_eq!(n, 12);
}

#[tokio::test]
async fn an_argument_of_the_wrong_shape_is_a_bad_payload_naming_the_method() {
    init_tracing();
    let server = serve(echostream::RpcServer::builder().handler(sum));
    let client = connect(&server).await;

    match client.request::<_, i64>("math.sum", "not a tuple").await {
        Err(Error::BadPayload { method, detail }) => {
            assert_eq!(method, "math.sum");
            assert!(detail.contains("math.sum"), "{detail}");
        }
        other => panic!("expected a bad payload error, got {other:?}"),
    }
}

#[test]
fn compile_time_checks() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
