//! Stream handlers: what a handler's parameter and return type may be, the [`StreamHandler`]
//! trait, [`stream_handler_fn`], running a handler on an accepted stream, and the registry of
//! handlers submitted by `#[stream_handler]`.

use super::{StreamDuplex, StreamReceiver, StreamState, TimedReceiver, XStream};
use crate::protocol::Context;
use echostream_types::descriptor::StreamInfo;
use echostream_types::message::encode_status;
use echostream_types::{Code, Codec, Status};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// What a stream handler's parameter can be: [`XStream`] (bytes),
/// [`StreamReceiver<T>`], [`TimedReceiver<T>`] or [`StreamDuplex<T>`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the stream parameter of a stream handler",
    label = "not a stream type",
    note = "use `StreamReceiver<T>`, `StreamDuplex<T>` or `XStream`"
)]
pub trait FromXStream: Sized + Send + 'static {
    /// Wraps the accepted stream.
    fn from_xstream(stream: XStream) -> Self;

    /// What reflection reports of a stream of this name taken as `Self`:
    /// by default the name alone.
    fn stream_info(name: &str) -> StreamInfo {
        StreamInfo::unknown(name)
    }
}

impl FromXStream for XStream {
    fn from_xstream(stream: XStream) -> Self {
        stream
    }

    /// Raw byte frames: no message type.
    fn stream_info(name: &str) -> StreamInfo {
        StreamInfo::unknown(name).with_raw()
    }
}

impl<T: DeserializeOwned + Send + 'static> FromXStream for StreamReceiver<T> {
    fn from_xstream(stream: XStream) -> Self {
        StreamReceiver::new(stream)
    }

    fn stream_info(name: &str) -> StreamInfo {
        StreamInfo::unknown(name).with_type::<T>()
    }
}

impl<T: DeserializeOwned + Send + 'static> FromXStream for TimedReceiver<T> {
    fn from_xstream(stream: XStream) -> Self {
        TimedReceiver::new(stream)
    }

    fn stream_info(name: &str) -> StreamInfo {
        StreamInfo::unknown(name).with_type::<T>()
    }
}

impl<T: DeserializeOwned + Send + 'static> FromXStream for StreamDuplex<T> {
    fn from_xstream(stream: XStream) -> Self {
        StreamDuplex::new(stream, Codec::default())
    }

    fn stream_info(name: &str) -> StreamInfo {
        StreamInfo::unknown(name).with_type::<T>()
    }
}

/// What a stream handler may return: nothing, or `Result<(), E>` whose error
/// reaches the opener as `Error::Remote`.
#[diagnostic::on_unimplemented(
    message = "a stream handler must return `()` or `Result<(), E>` with `E: Into<Status>`; found `{Self}`",
    label = "stream handler return type"
)]
pub trait StreamHandlerResult: Send {
    /// The error to report, if any.
    fn into_status(self) -> Result<(), Status>;
}

impl StreamHandlerResult for () {
    fn into_status(self) -> Result<(), Status> {
        Ok(())
    }
}

impl<E: Into<Status> + Send> StreamHandlerResult for Result<(), E> {
    fn into_status(self) -> Result<(), Status> {
        self.map_err(Into::into)
    }
}

/// Accepts the streams of one name, each in its own task.
/// `#[echostream::stream_handler("name")]` implements it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an EchoStream stream handler",
    label = "not a stream handler",
    note = "annotate an `async fn` with `#[echostream::stream_handler(\"name\")]` or use `stream_handler_fn`"
)]
pub trait StreamHandler: Send + Sync + 'static {
    /// The stream name it accepts.
    fn name(&self) -> &str;
    /// Runs on one accepted stream. An error is written on the error half.
    fn call(&self, ctx: Context, stream: XStream) -> BoxFuture<'static, Result<(), Status>>;
    /// What reflection (`echostream.describe`) reports about it; by default its name alone.
    fn describe(&self) -> StreamInfo {
        StreamInfo::unknown(self.name())
    }
}

impl std::fmt::Debug for dyn StreamHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamHandler({})", self.name())
    }
}

/// Runs a handler on an accepted stream, then ends the stream: closed
/// cleanly when it returned normally, with its error on the error half
/// otherwise (a panic becomes `HANDLER_PANICKED`).
pub(crate) async fn run_stream_handler(handler: Arc<dyn StreamHandler>, ctx: Context, stream: XStream) {
    let keep = stream.share();
    let name = stream.name().to_owned();
    let result = AssertUnwindSafe(handler.call(ctx, stream)).catch_unwind().await;
    let result = result.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        tracing::error!(stream = name, panic = msg, "stream handler panicked");
        Err(Status::new(
            Code::HANDLER_PANICKED,
            format!("stream handler for `{name}` panicked: {msg}"),
        ))
    });
    match result {
        Ok(()) => {
            if !matches!(keep.state(), StreamState::Closed) {
                let _ = keep.close().await;
            }
        }
        Err(status) => {
            tracing::debug!(stream = name, error = %status, "stream handler failed");
            // Boxed: a rare path whose future (about 600 bytes) would otherwise enlarge every
            // stream handler's task.
            let written = Box::pin(keep.error_write(&encode_status(&status), true)).await;
            if written.is_err() {
                let _ = keep.close().await;
            }
        }
    }
}

/// A stream handler made from a name and an async closure taking the
/// context and a stream parameter ([`FromXStream`]).
pub fn stream_handler_fn<S, F, Fut>(name: impl Into<String>, f: F) -> FnStreamHandler<S, F>
where
    S: FromXStream,
    F: Fn(Context, S) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: StreamHandlerResult,
{
    FnStreamHandler {
        name: name.into(),
        f: Arc::new(f),
        _s: PhantomData,
    }
}

/// See [`stream_handler_fn`].
pub struct FnStreamHandler<S, F> {
    name: String,
    f: Arc<F>,
    _s: PhantomData<fn(S)>,
}

impl<S, F> std::fmt::Debug for FnStreamHandler<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnStreamHandler")
            .field("name", &self.name)
            .finish()
    }
}

impl<S, F, Fut> StreamHandler for FnStreamHandler<S, F>
where
    S: FromXStream,
    F: Fn(Context, S) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: StreamHandlerResult,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, ctx: Context, stream: XStream) -> BoxFuture<'static, Result<(), Status>> {
        let f = self.f.clone();
        Box::pin(async move { f(ctx, S::from_xstream(stream)).await.into_status() })
    }

    /// The message type, from the stream parameter; no schema, since `S` is
    /// generic here (a `#[stream_handler]` or service method has one).
    fn describe(&self) -> StreamInfo {
        S::stream_info(&self.name)
    }
}

/// A stream handler submitted by `#[stream_handler]`, for `register_all()`.
#[derive(Debug)]
pub struct StreamHandlerRegistration {
    /// Returns the handler.
    pub make: fn() -> Arc<dyn StreamHandler>,
    /// Its stream name.
    pub name: &'static str,
}

inventory::collect!(StreamHandlerRegistration);

/// All stream handlers submitted with `#[stream_handler]` in the binary.
pub fn registered_stream_handlers() -> impl Iterator<Item = &'static StreamHandlerRegistration> {
    inventory::iter::<StreamHandlerRegistration>.into_iter()
}
