//! Trace context across calls (cargo feature `otel`): a request made inside a tracing span
//! carries the span's W3C trace context (`traceparent`, `tracestate`) in its metadata, and the
//! handler of a request that carries one runs in a span (`rpc.server`) that continues the
//! caller's trace, so a trace goes on across processes and languages.
//!
//! It rides on the application's OpenTelemetry setup: spans get trace ids from a
//! `tracing-opentelemetry` layer, and the keys are written and read by the global text-map
//! propagator (set it to `TraceContextPropagator` for W3C). Without the feature, or without a
//! propagator, nothing is added to requests and incoming trace context is left in the metadata
//! for the handler to read.

use echostream_types::Metadata;

/// The metadata keys of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Adds the current span's trace context to an outgoing request's metadata.
#[cfg(feature = "otel")]
pub(crate) fn inject(metadata: &mut Metadata) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    // A caller that set the keys itself keeps them.
    if metadata.get(TRACEPARENT).is_some() {
        return;
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Injector(metadata)));
}

/// Without the `otel` feature requests carry no trace context of ours.
#[cfg(not(feature = "otel"))]
pub(crate) fn inject(_metadata: &mut Metadata) {}

/// The span a handler runs in when its request carries trace context: its parent is the
/// caller's span.
#[cfg(feature = "otel")]
pub(crate) fn server_span(method: &str, metadata: &Metadata) -> Option<tracing::Span> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    metadata.get(TRACEPARENT)?;
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extractor(metadata)));
    let span = tracing::info_span!(
        "rpc.server",
        rpc.system = "echostream",
        rpc.method = method,
        otel.kind = "server"
    );
    let _ = span.set_parent(parent);
    Some(span)
}

/// Without the `otel` feature no span is made for trace context.
#[cfg(not(feature = "otel"))]
pub(crate) fn server_span(_method: &str, _metadata: &Metadata) -> Option<tracing::Span> {
    None
}

#[cfg(feature = "otel")]
struct Injector<'a>(&'a mut Metadata);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Injector for Injector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

#[cfg(feature = "otel")]
struct Extractor<'a>(&'a Metadata);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Extractor for Extractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}
