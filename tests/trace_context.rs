//! Trace context across a call (feature `otel`), over real QUIC: a call made inside a span
//! carries W3C `traceparent`, and the handler's span continues that trace; the spans an
//! in-memory OpenTelemetry exporter receives link the server's span to the client's.
#![cfg(feature = "otel")]

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_in_a_span_continues_its_trace_in_the_handler() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Global: the server's tasks run on the runtime's threads.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");

    let s = serve(
        RpcServer::builder().handler(handler_fn("trace.me", |ctx: Context, _: ()| async move {
            let here = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id();
            Ok::<_, Error>((
                here.to_string(),
                ctx.metadata().get_str("traceparent").map(str::to_owned),
            ))
        })),
    );
    let c = connect(&s).await;

    let root = tracing::info_span!("client.op");
    let client_trace = root.context().span().span_context().trace_id().to_string();
    let (server_trace, traceparent): (String, Option<String>) =
        c.request("trace.me", ()).instrument(root.clone()).await.unwrap();
    assert_eq!(
        server_trace, client_trace,
        "the handler runs in the caller's trace"
    );
    let traceparent = traceparent.expect("the request carried a traceparent");
    assert!(
        traceparent.starts_with("00-") && traceparent.contains(&client_trace),
        "{traceparent}"
    );

    // Outside any span: no trace context is made up.
    let (_, none): (String, Option<String>) = c.request("trace.me", ()).await.unwrap();
    assert_eq!(none, None);

    drop(root);
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("exported spans");
    let client = spans
        .iter()
        .find(|s| s.name == "client.op")
        .expect("the client's span");
    let server = spans
        .iter()
        .find(|s| s.name == "rpc.server" && s.span_context.trace_id() == client.span_context.trace_id())
        .expect("the server's span, in the client's trace");
    assert_eq!(server.parent_span_id, client.span_context.span_id());
}
