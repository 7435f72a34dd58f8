//! `#[echostream::service]`: generated descriptors, client and server over
//! real QUIC on loopback, several services with free handlers on one
//! server, server-to-client calls through `Peer`, reflection, and duplicate
//! names at build time.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::{interceptor_fn, CallKind};
use echostream::Caller;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Arithmetic, the example.
#[echostream::service("math")]
pub trait Math {
    /// Adds two numbers.
    async fn add(&self, ctx: Context, a: i64, b: i64) -> Result<i64>;
    /// Reads a value.
    #[idempotent]
    async fn read(&self, ctx: Context, id: u32) -> Result<f32>;
    /// Sums, under an older name.
    #[method(name = "legacy.sum")]
    async fn sum(&self, xs: Vec<i64>) -> Result<i64>;
    /// Reports an overflow.
    #[event]
    async fn overflow(&self, ctx: Context, n: u64);
    /// Receives samples.
    #[stream]
    async fn samples(&self, ctx: Context, rx: StreamReceiver<f32>) -> Result<()>;
}

/// A clock.
#[echostream::service("clock")]
pub trait Clock {
    /// The time.
    async fn now(&self) -> Result<u64>;
}

#[derive(Default)]
struct MyMath {
    overflows: AtomicU64,
    /// Sum of the samples received, in thousandths.
    samples: AtomicU64,
}

impl Math for MyMath {
    async fn add(&self, _ctx: Context, a: i64, b: i64) -> Result<i64> {
        Ok(a + b)
    }
    async fn read(&self, _ctx: Context, id: u32) -> Result<f32> {
        Ok(id as f32 / 2.0)
    }
    async fn sum(&self, xs: Vec<i64>) -> Result<i64> {
        Ok(xs.iter().sum())
    }
    async fn overflow(&self, _ctx: Context, n: u64) {
        self.overflows.fetch_add(n, Ordering::SeqCst);
    }
    async fn samples(&self, _ctx: Context, rx: StreamReceiver<f32>) -> Result<()> {
        while let Some(x) = rx.recv().await {
            self.samples.fetch_add((x * 1000.0) as u64, Ordering::SeqCst);
        }
        Ok(())
    }
}

struct FixedClock;

impl Clock for FixedClock {
    async fn now(&self) -> Result<u64> {
        Ok(1234)
    }
}

#[handler("util.echo")]
async fn echo(text: String) -> Result<String> {
    Ok(text)
}

/// Free handlers with the service's wire names and types.
mod free {
    use echostream::prelude::*;

    #[handler("math.add")]
    pub(crate) async fn add(a: i64, b: i64) -> Result<i64> {
        Ok(a * 100 + b)
    }

    #[handler("legacy.sum")]
    pub(crate) async fn sum(xs: Vec<i64>) -> Result<i64> {
        Ok(xs.len() as i64)
    }
}

fn full_server(math: Arc<MyMath>) -> TestServer {
    serve(
        RpcServer::builder()
            .service(MathServer::from_arc(math))
            .service(ClockServer::new(FixedClock))
            .handler(echo),
    )
}

#[test]
fn descriptors_carry_wire_names_and_types() {
    assert_eq!(math::SERVICE, "math");
    assert_eq!(math::ADD, "math.add");
    assert_eq!(math::SUM, "legacy.sum");
    assert!(math::READ.is_idempotent());
    assert!(!math::ADD.is_idempotent());
    assert_eq!(math::OVERFLOW.info().payload.as_deref(), Some("u64"));
    assert_eq!(math::SAMPLES.info().message.as_deref(), Some("f32"));
    assert_eq!(clock::NOW.info().request.as_deref(), Some("()"));
}

#[tokio::test]
async fn every_kind_round_trips_and_two_services_share_a_server_with_free_handlers() {
    init_tracing();
    let state = Arc::new(MyMath::default());
    let s = full_server(state.clone());
    let client = connect(&s).await;
    let math = MathClient::new(client.clone());
    assert_eq!(math.add(2, 3).await.expect("add"), 5);
    assert_eq!(math.read(5).await.expect("idempotent read"), 2.5);
    assert_eq!(math.sum(vec![1, 2, 3]).await.expect("sum"), 6);
    math.overflow(7).await.expect("event");
    wait_until("the event arrives", || {
        state.overflows.load(Ordering::SeqCst) == 7
    })
    .await;
    let tx = math.samples().await.expect("open stream");
    tx.send(0.5).await.expect("send");
    tx.send(1.25).await.expect("send");
    tx.finish().await.expect("finish");
    wait_until("the samples arrive", || {
        state.samples.load(Ordering::SeqCst) == 1750
    })
    .await;

    assert_eq!(ClockClient::new(client.clone()).now().await.expect("clock"), 1234);
    let echoed: String = client.request("util.echo", "hi").await.expect("free handler");
    assert_eq!(echoed, "hi");
    // The wire names are plain names: an untyped call reaches the service too.
    let sum: i64 = client.request("math.add", (1, 1)).await.expect("untyped");
    assert_eq!(sum, 2);
}

#[tokio::test]
async fn typed_client_calls_free_handlers_of_the_same_names() {
    let s = serve(RpcServer::builder().handler(free::add).handler(free::sum));
    let math = MathClient::new(connect(&s).await);
    assert_eq!(math.add(2, 3).await.expect("add"), 203);
    assert_eq!(math.sum(vec![9, 9]).await.expect("sum"), 2);
    match math.read(1).await {
        Err(Error::UnknownMethod { method }) => assert_eq!(method, "math.read"),
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
}

#[tokio::test]
async fn server_calls_a_service_the_client_serves_through_peer() {
    #[handler("ask.client")]
    async fn ask_client(ctx: Context) -> Result<i64> {
        MathClient::new(ctx.peer().clone()).add(20, 22).await
    }
    let s = serve(RpcServer::builder().handler(ask_client));
    let client = tokio::time::timeout(
        WAIT,
        client_for(&s)
            .service(MathServer::new(MyMath::default()))
            .connect(&s.addr),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let answer: i64 = client
        .request("ask.client", ())
        .await
        .expect("server-to-client call");
    assert_eq!(answer, 42);
}

#[tokio::test]
async fn reflection_describes_every_handler_listener_and_stream() {
    let s = full_server(Arc::default());
    let d = connect(&s).await.describe().await.expect("describe");
    let names: Vec<&str> = d.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "clock.now",
            "echostream.describe",
            "echostream.health",
            "legacy.sum",
            "math.add",
            "math.read",
            "util.echo"
        ]
    );
    let add = d.method("math.add").expect("math.add");
    assert_eq!(add.request.as_deref(), Some("(i64, i64)"));
    assert_eq!(add.response.as_deref(), Some("i64"));
    assert!(!add.idempotent);
    assert_eq!(add.service.as_deref(), Some("math"));
    let read = d.method("math.read").expect("math.read");
    assert!(read.idempotent);
    assert_eq!(read.request.as_deref(), Some("u32"));
    assert_eq!(read.response.as_deref(), Some("f32"));
    assert_eq!(
        d.method("legacy.sum").expect("sum").service.as_deref(),
        Some("math")
    );
    assert_eq!(
        d.method("clock.now").expect("now").service.as_deref(),
        Some("clock")
    );
    let free = d.method("util.echo").expect("util.echo");
    assert_eq!(free.service, None);
    assert_eq!(free.request.as_deref(), Some("alloc::string::String"));
    assert_eq!(free.response.as_deref(), Some("alloc::string::String"));

    assert_eq!(d.events.len(), 1);
    assert_eq!(d.events[0].name, "math.overflow");
    assert_eq!(d.events[0].payload.as_deref(), Some("u64"));
    assert_eq!(d.events[0].service.as_deref(), Some("math"));
    // The health watch stream is the server's own; the service's stream is described.
    assert_eq!(d.streams.len(), 2);
    assert!(d.stream("echostream.health.watch").is_some());
    let samples = d.stream("math.samples").expect("the service's stream");
    assert_eq!(samples.message.as_deref(), Some("f32"));
    assert_eq!(samples.service.as_deref(), Some("math"));
}

#[tokio::test]
async fn reflection_passes_the_interceptors_and_can_be_turned_off() {
    let refuse = interceptor_fn(|ctx: &Context, _kind: CallKind| {
        Err(Status::new(
            Code::PERMISSION_DENIED,
            format!("`{}` is private", ctx.method()),
        ))
    });
    let s = serve(
        RpcServer::builder()
            .service(ClockServer::new(FixedClock))
            .protect("echostream.*", refuse),
    );
    let client = connect(&s).await;
    match client.describe().await {
        Err(Error::PermissionDenied { method, .. }) => assert_eq!(method, "echostream.describe"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        ClockClient::new(client).now().await.expect("other calls pass"),
        1234
    );

    let off = serve(
        RpcServer::builder()
            .service(ClockServer::new(FixedClock))
            .reflection(false),
    );
    match connect(&off).await.describe().await {
        Err(Error::UnknownMethod { method }) => assert_eq!(method, "echostream.describe"),
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
}

#[tokio::test]
async fn a_name_used_twice_is_a_build_error_naming_both() {
    let err = RpcServer::builder()
        .bind("127.0.0.1:0")
        .service(MathServer::new(MyMath::default()))
        .handler(free::add)
        .build()
        .expect_err("duplicate method");
    let text = err.to_string();
    assert!(text.contains("`math.add`"), "{text}");
    assert!(text.contains("service `math`"), "{text}");
    assert!(text.contains("free handler"), "{text}");
}

/// The service macro's compile-time checks: `tests/ui/service_pass` and
/// `tests/ui/service_fail` with their expected messages.
#[test]
fn service_compile_time_checks() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/service_pass/*.rs");
    cases.compile_fail("tests/ui/service_fail/*.rs");
}

/// A message type with a JSON Schema when the feature `schema` is on.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(echostream::schemars::JsonSchema),
    schemars(crate = "echostream::schemars")
)]
pub struct Point {
    /// Horizontal.
    pub x: i64,
    /// A name.
    pub label: String,
    /// Labels.
    pub tags: Vec<String>,
}

/// A type that never has a JSON Schema: the feature must not require one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Opaque(pub u8);

/// Geometry: schemas (with the feature `schema`), a type without one, a
/// raw stream, and a descriptor module renamed because `geo` is taken.
#[echostream::service("geo", module = "geo_api")]
pub trait Geo {
    /// The point's x.
    async fn x_of(&self, p: Point) -> Result<i64>;
    /// The byte back.
    async fn opaque(&self, o: Opaque) -> Result<Opaque>;
    /// Raw bytes.
    #[stream]
    async fn raw(&self, s: XStream) -> Result<()>;
}

/// Takes the default descriptor module name of `Geo`.
#[allow(dead_code)]
mod geo {}

#[derive(Default)]
struct MyGeo {
    raw: std::sync::Mutex<Vec<u8>>,
}

impl Geo for MyGeo {
    async fn x_of(&self, p: Point) -> Result<i64> {
        Ok(p.x)
    }
    async fn opaque(&self, o: Opaque) -> Result<Opaque> {
        Ok(o)
    }
    async fn raw(&self, s: XStream) -> Result<()> {
        let bytes = s.read_to_end().await.map_err(std::io::Error::from)?;
        self.raw.lock().unwrap().extend(bytes);
        Ok(())
    }
}

#[tokio::test]
async fn raw_streams_are_described_as_raw_and_take_bytes_as_written() {
    init_tracing();
    let geo = Arc::new(MyGeo::default());
    let s = serve(RpcServer::builder().service(GeoServer::from_arc(geo.clone())));
    let client = GeoClient::new(connect(&s).await);
    assert_eq!(
        client
            .x_of(Point {
                x: 7,
                label: "p".into(),
                tags: vec![]
            })
            .await
            .unwrap(),
        7
    );
    assert_eq!(client.opaque(Opaque(9)).await.unwrap().0, 9);
    let tx = client.raw().await.expect("open raw stream");
    tx.xstream().write_all(b"abc").await.expect("write");
    tx.finish().await.expect("finish");
    assert_eq!(*geo.raw.lock().unwrap(), b"abc");

    assert_eq!(geo_api::RAW.name(), "geo.raw");
    let d = client.caller().describe().await.expect("describe");
    let raw = d.stream("geo.raw").expect("raw stream described");
    assert!(raw.raw);
    assert_eq!(raw.message, None);
    let opaque = d.method("geo.opaque").expect("opaque described");
    assert_eq!((&opaque.request_schema, &opaque.response_schema), (&None, &None));
    #[cfg(not(feature = "schema"))]
    assert_eq!(d.method("geo.x_of").unwrap().request_schema, None);
}

/// With the feature `schema`, reflection carries the JSON Schema of each
/// type that implements `JsonSchema`, over the wire.
#[cfg(feature = "schema")]
#[tokio::test]
async fn reflection_carries_json_schemas_of_service_types() {
    init_tracing();
    let s = serve(
        RpcServer::builder()
            .service(GeoServer::new(MyGeo::default()))
            .service(MathServer::new(MyMath::default())),
    );
    let d = connect(&s).await.describe().await.expect("describe");
    let parse = |text: &Option<String>| -> serde_json::Value {
        serde_json::from_str(text.as_deref().expect("a schema")).expect("schema is JSON")
    };
    let x_of = d.method("geo.x_of").unwrap();
    let point = parse(&x_of.request_schema);
    assert_eq!(point["title"], "Point");
    assert_eq!(point["type"], "object");
    assert_eq!(point["properties"]["x"]["type"], "integer");
    assert_eq!(point["properties"]["x"]["format"], "int64");
    assert_eq!(point["properties"]["x"]["description"], "Horizontal.");
    assert_eq!(point["properties"]["label"]["type"], "string");
    assert_eq!(point["properties"]["tags"]["type"], "array");
    assert_eq!(point["properties"]["tags"]["items"]["type"], "string");
    let mut required: Vec<&str> = point["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["label", "tags", "x"]);
    assert_eq!(parse(&x_of.response_schema)["type"], "integer");

    // A type without `JsonSchema` has none; the build did not need it.
    let opaque = d.method("geo.opaque").unwrap();
    assert_eq!((&opaque.request_schema, &opaque.response_schema), (&None, &None));

    // Several arguments travel as a tuple: an array schema of two integers.
    let add = parse(&d.method("math.add").unwrap().request_schema);
    assert_eq!(add["type"], "array");
    assert_eq!(add["prefixItems"][0]["type"], "integer");
    assert_eq!(add["prefixItems"][1]["type"], "integer");
    assert_eq!(add["minItems"], 2);
    assert_eq!(add["maxItems"], 2);

    let overflow = d.event("math.overflow").unwrap();
    assert_eq!(parse(&overflow.payload_schema)["type"], "integer");
    assert_eq!(parse(&overflow.payload_schema)["minimum"], 0);
    let samples = d.stream("math.samples").unwrap();
    assert_eq!(parse(&samples.message_schema)["type"], "number");
    assert_eq!(d.stream("geo.raw").unwrap().message_schema, None);
}
