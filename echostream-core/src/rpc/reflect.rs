//! Reflection: what a side offers, answered by the reserved method
//! `echostream.describe` (see [`ServiceDescription`]).
//!
//! The answer is computed once when the builder builds the router, from each
//! handler's, listener's and stream handler's `describe()`, and registered as
//! an ordinary handler: it passes the interceptors and rate limits like any
//! call, and `.reflection(false)` leaves it out.

use crate::rpc::{encode_reply, Context, Handler, Listener, Payload, RouterBuilder};
use crate::stream::registered_stream_handlers;
use crate::stream::{StreamHandler, XStream};
use echostream_types::descriptor::{MethodInfo, StreamInfo, DESCRIBE_METHOD};
use echostream_types::{ServiceDescription, Status};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

/// A handler or stream handler with what reflection reports about it (its
/// types and service), which the wrapped one does not know. Used by code
/// `#[echostream::service]` generates.
#[derive(Debug)]
pub struct Described<H, I> {
    inner: H,
    info: I,
}

impl<H, I> Described<H, I> {
    /// Wraps `inner`, reported as `info`.
    pub fn new(inner: H, info: I) -> Self {
        Self { inner, info }
    }
}

impl<H: Handler> Handler for Described<H, MethodInfo> {
    fn method(&self) -> &str {
        self.inner.method()
    }

    fn idempotent(&self) -> bool {
        self.inner.idempotent()
    }

    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
        self.inner.call(ctx, args)
    }

    fn describe(&self) -> MethodInfo {
        self.info.clone()
    }
}

impl<H: StreamHandler> StreamHandler for Described<H, StreamInfo> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn call(&self, ctx: Context, stream: XStream) -> BoxFuture<'static, Result<(), Status>> {
        self.inner.call(ctx, stream)
    }

    fn describe(&self) -> StreamInfo {
        self.info.clone()
    }
}

/// Answers `echostream.describe` with the description built at build time.
struct DescribeHandler {
    answer: Arc<ServiceDescription>,
}

impl Handler for DescribeHandler {
    fn method(&self) -> &str {
        DESCRIBE_METHOD
    }

    /// A read: safe on 0-RTT early data.
    fn idempotent(&self) -> bool {
        true
    }

    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
        let reply = encode_reply(&ctx, args.codec, Ok::<_, Status>(&*self.answer));
        Box::pin(async move { reply })
    }

    fn describe(&self) -> MethodInfo {
        MethodInfo::unknown(DESCRIBE_METHOD)
            .with_types::<(), ServiceDescription>()
            .with_idempotent(true)
    }
}

/// Registers the reflection handler among `handlers`, describing them, the
/// listeners and the builder's stream handlers.
pub(super) fn add_describe(
    builder: &RouterBuilder,
    handlers: &mut HashMap<String, Arc<dyn Handler>>,
    listeners: &HashMap<String, Vec<Arc<dyn Listener>>>,
) -> Result<(), crate::Error> {
    if let Some(taken) = handlers.get(DESCRIBE_METHOD) {
        return Err(crate::Error::Config(format!(
            "method `{DESCRIBE_METHOD}` is reserved for reflection, but {} uses it; \
             turn reflection off with `.reflection(false)` to serve it",
            owner(&taken.describe())
        )));
    }
    let describe = DescribeHandler {
        answer: Arc::default(),
    };
    let mut answer = ServiceDescription {
        methods: handlers
            .values()
            .map(|h| h.describe())
            .chain([describe.describe()])
            .collect(),
        events: listeners.values().flatten().map(|l| l.describe()).collect(),
        streams: builder.stream_handlers.iter().map(|s| s.describe()).collect(),
    };
    if builder.register_all {
        for reg in registered_stream_handlers() {
            if !answer.streams.iter().any(|s| s.name == reg.name) {
                answer.streams.push((reg.make)().describe());
            }
        }
    }
    answer.methods.sort_by(|a, b| a.name.cmp(&b.name));
    answer.events.sort_by(|a, b| a.name.cmp(&b.name));
    answer.streams.sort_by(|a, b| a.name.cmp(&b.name));
    handlers.insert(
        DESCRIBE_METHOD.to_owned(),
        Arc::new(DescribeHandler {
            answer: Arc::new(answer),
        }),
    );
    Ok(())
}

/// The build error for two handlers of one method name, naming both.
pub(super) fn duplicate_method(name: &str, first: &dyn Handler, second: &dyn Handler) -> crate::Error {
    crate::Error::Config(format!(
        "two handlers are registered for method `{name}`: {} and {}",
        owner(&first.describe()),
        owner(&second.describe())
    ))
}

/// Who registered a handler, for error messages.
fn owner(info: &MethodInfo) -> String {
    let what = match &info.service {
        Some(service) => format!("method of service `{service}`"),
        None => "free handler".to_owned(),
    };
    match &info.request {
        Some(request) => format!("a {what} taking `{request}`"),
        None => format!("a {what}"),
    }
}
