//! What `#[echostream::listener]` generates: the listener type and its
//! constant, the direct `invoke`, the registration, and events over real QUIC
//! on loopback, in both directions. The compile-time checks are the trybuild
//! cases in `tests/ui/listener_pass` and `tests/ui/listener_fail`.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::Listener;
use echostream::rpc::{registered_listeners, ServerHandle};
use echostream::ServerIdentity;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// What the listeners of this file received: who received it and what.
/// Listeners are unit structs with no state of their own, so they report
/// here; each test uses its own event names and reads its own entries.
static SEEN: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

fn record(by: &'static str, what: impl Into<String>) {
    SEEN.lock().expect("SEEN lock").push((by, what.into()));
}

/// What the listeners named in `by` received, in the order they ran.
fn seen(by: &[&str]) -> Vec<(&'static str, String)> {
    SEEN.lock()
        .expect("SEEN lock")
        .iter()
        .filter(|(who, _)| by.contains(who))
        .cloned()
        .collect()
}

/// Waits (up to [`WAIT`]) until what the listeners named in `by` received
/// satisfies `done`, and returns it.
async fn wait_until(
    by: &[&str],
    done: impl Fn(&[(&'static str, String)]) -> bool,
) -> Vec<(&'static str, String)> {
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            let got = seen(by);
            if done(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{by:?} did not receive the events in time: {:?}", seen(by)))
}

/// Waits until the listeners named in `by` received `count` events between them.
async fn wait_for(by: &[&str], count: usize) -> Vec<(&'static str, String)> {
    wait_until(by, |got| got.len() >= count).await
}

/// Like `common::serve`, keeping a handle to the server to read its counters.
fn serve_with_handle(builder: echostream::rpc::ServerBuilder) -> (TestServer, ServerHandle) {
    let server = builder
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()
        .expect("server builds");
    let handle = server.handle();
    let test_server = TestServer {
        addr: server.local_addr().to_string(),
        fingerprint: server.fingerprint(),
        shutdown: server.shutdown_handle(),
        task: tokio::spawn(server.run()),
    };
    (test_server, handle)
}

/// The sketch's listener: context and one argument, no return type.
#[echostream::listener("user.logged_out")]
async fn on_logout(ctx: Context, user_id: u64) {
    record(
        "on_logout",
        format!("{user_id} {} {:?}", ctx.method(), ctx.request_id()),
    );
}

/// Three listeners of one event, with and without context and result.
#[echostream::listener("chat.message")]
async fn first_reader(text: String) {
    record("first_reader", text);
}

#[echostream::listener("chat.message")]
async fn second_reader(_ctx: Context, text: String) {
    record("second_reader", text);
}

#[echostream::listener("chat.message")]
async fn third_reader(text: String) -> Result<()> {
    record("third_reader", text);
    Ok(())
}

/// Registered through `register_all()` only.
#[echostream::listener("registry.ping")]
async fn registry_ping(n: u32) {
    record("registry_ping", n.to_string());
}

/// Several arguments, decoded from a tuple, with patterns.
#[echostream::listener("pair.seen")]
async fn pair_seen(name: String, (a, b): (u32, u32)) {
    record("pair_seen", format!("{name} {}", a + b));
}

/// No argument at all.
#[echostream::listener("bare.tick")]
async fn bare_tick() {
    record("bare_tick", "tick");
}

/// Counts units; a payload that is not a `u64` does not reach it.
#[echostream::listener("units.count")]
async fn count_units(n: u64) {
    record("count_units", n.to_string());
}

/// Rejects odd numbers with an error of its own.
#[echostream::listener("units.reject")]
async fn reject_odd(n: u64) -> std::result::Result<(), Odd> {
    record("reject_odd", n.to_string());
    if n % 2 == 1 {
        return Err(Odd(n));
    }
    Ok(())
}

#[derive(Debug)]
struct Odd(u64);

impl From<Odd> for Status {
    fn from(odd: Odd) -> Self {
        Status::new(Code(1002), format!("{} is odd", odd.0))
    }
}

/// Client side: receives what the server's handlers emit to their caller.
#[echostream::listener("client.notified")]
async fn on_notified(ctx: Context, n: u64) {
    record(
        "on_notified",
        format!("{n} {}", ctx.peer_addr().ip().is_loopback()),
    );
}

/// Server side: emits `n` back to the caller as `client.notified`.
#[echostream::handler("notify.me")]
async fn notify_me(ctx: Context, n: u64) -> Result<()> {
    ctx.peer().emit("client.notified", n).await
}

/// Server side: emits a payload the caller's listener cannot decode, then a good one.
#[echostream::handler("notify.badly")]
async fn notify_badly(ctx: Context, n: u64) -> Result<()> {
    ctx.peer().emit("client.notified", "not a number").await?;
    ctx.peer().emit("client.notified", n).await
}

/// Fails on text that is not a level; used through `invoke` only.
#[echostream::listener("audio.level")]
async fn parse_level(text: String) -> Result<()> {
    let level: u8 = text
        .parse()
        .map_err(|_| Error::with_code(Code(1003), format!("not a level: {text:?}")))?;
    let _ = level;
    Ok(())
}

/// A `#[cfg]` after the attribute removes the whole listener, registration included.
#[echostream::listener("never.compiled")]
#[cfg(any())]
async fn never_compiled() {}

mod audio {
    /// Visible outside its module, like the function was.
    #[echostream::listener("audio.stopped")]
    pub(crate) async fn on_stopped(_ctx: echostream::Context) {}
}

/// The events this file defines listeners for (and compiles).
const EVENTS: [&str; 10] = [
    "user.logged_out",
    "chat.message",
    "registry.ping",
    "pair.seen",
    "bare.tick",
    "units.count",
    "units.reject",
    "client.notified",
    "audio.stopped",
    "audio.level",
];

#[test]
fn event_const_and_event_name_are_the_attribute_string() {
    assert_eq!(on_logout::EVENT, "user.logged_out");
    assert_eq!(audio::on_stopped::EVENT, "audio.stopped");
    assert_eq!(Listener::event(&first_reader), "chat.message");
    assert_eq!(Listener::event(&third_reader), "chat.message");
}

#[test]
fn listener_is_a_copyable_unit_value_named_like_the_function() {
    let copy = on_logout;
    let _still_usable = on_logout;
    assert_eq!(format!("{copy:?}"), "on_logout");
    let boxed: Box<dyn Listener> = Box::new(audio::on_stopped);
    assert_eq!(boxed.event(), "audio.stopped");
}

#[tokio::test]
async fn invoke_runs_the_original_function_directly() {
    parse_level::invoke("42".into()).await.expect("42 is a level");
    match parse_level::invoke("loud".into()).await {
        Err(Error::Status(status)) => assert_eq!(status.code(), Code(1003)),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[test]
fn every_listener_is_registered_for_register_all_except_cfg_removed_ones() {
    let registered: Vec<&str> = registered_listeners().map(|r| r.event).collect();
    let names: BTreeSet<&str> = registered.iter().copied().collect();
    for event in EVENTS {
        assert!(names.contains(event), "{event} missing from {registered:?}");
    }
    assert!(!names.contains("never.compiled"));
    assert_eq!(
        registered.iter().filter(|e| **e == "chat.message").count(),
        3,
        "one registration per listener: {registered:?}"
    );
    for registration in registered_listeners() {
        assert_eq!((registration.make)().event(), registration.event);
    }
}

#[tokio::test]
async fn server_listener_receives_a_client_event_with_its_context() {
    init_tracing();
    let server = serve(RpcServer::builder().listener(on_logout));
    let client = connect(&server).await;

    client
        .emit("user.logged_out", 5u64)
        .await
        .expect("emit user.logged_out");
    let got = wait_for(&["on_logout"], 1).await;
    assert_eq!(got, [("on_logout", "5 user.logged_out None".to_owned())]);
}

#[tokio::test]
async fn every_listener_of_one_event_runs_in_registration_order() {
    init_tracing();
    let server = serve(
        RpcServer::builder()
            .listener(first_reader)
            .listener(second_reader)
            .listener(third_reader),
    );
    let client = connect(&server).await;
    let readers = ["first_reader", "second_reader", "third_reader"];

    client.emit("chat.message", "hello").await.expect("emit");
    client.emit("chat.message", "again").await.expect("emit");
    let got = wait_for(&readers, 6).await;
    let expected: Vec<(&str, String)> = ["hello", "again"]
        .iter()
        .flat_map(|text| readers.iter().map(|r| (*r, (*text).to_owned())))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn arguments_decode_as_a_tuple_or_as_nothing() {
    init_tracing();
    let server = serve(RpcServer::builder().listener(pair_seen).listener(bare_tick));
    let client = connect(&server).await;

    client
        .emit("pair.seen", ("answer", (40u32, 2u32)))
        .await
        .expect("emit pair.seen");
    client.emit("bare.tick", ()).await.expect("emit bare.tick");
    assert_eq!(
        wait_for(&["pair_seen"], 1).await,
        [("pair_seen", "answer 42".to_owned())]
    );
    assert_eq!(
        wait_for(&["bare_tick"], 1).await,
        [("bare_tick", "tick".to_owned())]
    );
}

#[tokio::test]
async fn register_all_picks_up_annotated_listeners() {
    init_tracing();
    let server = serve(RpcServer::builder().register_all());
    let client = connect(&server).await;

    client.emit("registry.ping", 77u32).await.expect("emit");
    assert_eq!(
        wait_for(&["registry_ping"], 1).await,
        [("registry_ping", "77".to_owned())]
    );
}

#[tokio::test]
async fn client_listener_receives_what_a_server_handler_emits_to_its_peer() {
    init_tracing();
    let server = serve(RpcServer::builder().handler(notify_me));
    let client = tokio::time::timeout(
        WAIT,
        client_for(&server).listener(on_notified).connect(&server.addr),
    )
    .await
    .expect("connect in time")
    .expect("connect");

    let () = client.request("notify.me", 11u64).await.expect("notify.me");
    wait_until(&["on_notified"], |got| {
        got.contains(&("on_notified", "11 true".to_owned()))
    })
    .await;
    assert_eq!(client.failed_events(), 0);
}

#[tokio::test]
async fn an_event_that_does_not_decode_is_counted_and_the_next_still_arrives() {
    init_tracing();
    let (server, handle) = serve_with_handle(RpcServer::builder().listener(count_units));
    let client = connect(&server).await;

    client
        .emit("units.count", "not a number")
        .await
        .expect("emit bad");
    client.emit("units.count", 9u64).await.expect("emit good");
    assert_eq!(
        wait_for(&["count_units"], 1).await,
        [("count_units", "9".to_owned())]
    );
    // Events run in arrival order, so the bad one was handled first.
    assert_eq!(handle.failed_events(), 1);
}

#[tokio::test]
async fn a_listener_error_is_counted_and_later_events_still_run() {
    init_tracing();
    let (server, handle) = serve_with_handle(RpcServer::builder().listener(reject_odd));
    let client = connect(&server).await;

    for n in [101u64, 102, 104] {
        client.emit("units.reject", n).await.expect("emit");
    }
    let got = wait_for(&["reject_odd"], 3).await;
    let values: Vec<&str> = got.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(values, ["101", "102", "104"]);
    assert_eq!(handle.failed_events(), 1);
}

#[tokio::test]
async fn a_client_listener_counts_an_event_it_cannot_decode() {
    init_tracing();
    let server = serve(RpcServer::builder().handler(notify_badly));
    let client = tokio::time::timeout(
        WAIT,
        client_for(&server).listener(on_notified).connect(&server.addr),
    )
    .await
    .expect("connect in time")
    .expect("connect");

    let () = client.request("notify.badly", 12u64).await.expect("notify.badly");
    wait_until(&["on_notified"], |got| {
        got.contains(&("on_notified", "12 true".to_owned()))
    })
    .await;
    // The events run in arrival order, so the bad one was handled first.
    assert_eq!(client.failed_events(), 1);
}

#[test]
fn compile_time_checks() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/listener_pass/*.rs");
    cases.compile_fail("tests/ui/listener_fail/*.rs");
}
