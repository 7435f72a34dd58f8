//! Typed calls and services: the [`Caller`] extension trait (typed calls
//! through [`Method`], [`Event`] and [`StreamKind`] descriptors), the
//! [`Service`] trait `#[echostream::service]` implements, and the builder
//! methods `.service(..)` and `.reflection(..)`.
//!
//! Nothing here changes the wire: a descriptor is a name with compile-time
//! types, and a service registers ordinary handlers, listeners and stream
//! handlers under its names. `Caller` is an extension trait of the API layer
//! over the public methods of [`RpcClient`] and [`Peer`], so the typed calls
//! behave exactly like `request_with`, `emit` and `create_stream`.

use crate::protocol::{CallOptions, Peer};
use crate::rpc::{
    decode_args, ClientBuilder, Context, Handler, Listener, ListenerResult, Payload, RouterBuilder,
    RpcClient, ServerBuilder,
};
use crate::stream::{StreamHandler, StreamSender};
use crate::Result;
use echostream_types::descriptor::RawStream;
use echostream_types::descriptor::{EventInfo, DESCRIBE_METHOD};
use echostream_types::health::{HealthStatus, HEALTH_METHOD, HEALTH_SERVICE_METADATA, HEALTH_WATCH_STREAM};
use echostream_types::{Codec, Event, Method, ServiceDescription, Status, StreamKind};
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

/// Typed calls over anything that can call: an [`RpcClient`], a [`Peer`]
/// (server-to-client calls through `ctx.peer()`), or a balanced client.
///
/// ```no_run
/// # use echostream_core::rpc::{Caller, RpcClient};
/// # use echostream_types::Method;
/// const ADD: Method<(i64, i64), i64> = Method::new("math.add");
/// # async fn doc(client: RpcClient) -> echostream_core::Result<()> {
/// let sum = client.call(&ADD, (2, 3)).await?; // `sum: i64`; `(2, "3")` does not compile
/// # Ok(()) }
/// ```
///
/// An implementation provides the three untyped primitives; the typed
/// methods are provided on top of them.
pub trait Caller: Send + Sync {
    /// Calls `method` and decodes its result (as `RpcClient::request_with`).
    fn send_request<A, R>(
        &self,
        method: &str,
        args: A,
        opts: CallOptions,
    ) -> impl Future<Output = Result<R>> + Send
    where
        A: Serialize + Send,
        R: DeserializeOwned + Send;

    /// Sends a one-way event (as `RpcClient::emit`).
    fn send_event<T>(&self, name: &str, value: T) -> impl Future<Output = Result<()>> + Send
    where
        T: Serialize + Send;

    /// The connection new streams open on.
    fn stream_peer(&self) -> Peer;

    /// Calls a typed method. An idempotent method's call may travel as 0-RTT
    /// early data.
    fn call<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        args: Req,
    ) -> impl Future<Output = Result<Resp>> + Send
    where
        Req: Serialize + Send,
        Resp: DeserializeOwned + Send,
    {
        self.call_with(method, args, CallOptions::default())
    }

    /// [`Caller::call`] with per-call options (timeout, metadata, codec).
    fn call_with<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        args: Req,
        opts: CallOptions,
    ) -> impl Future<Output = Result<Resp>> + Send
    where
        Req: Serialize + Send,
        Resp: DeserializeOwned + Send,
    {
        let opts = if method.is_idempotent() {
            opts.idempotent()
        } else {
            opts
        };
        self.send_request(method.name(), args, opts)
    }

    /// Sends a typed one-way event.
    fn emit_event<T>(&self, event: &Event<T>, value: T) -> impl Future<Output = Result<()>> + Send
    where
        T: Serialize + Send,
    {
        self.send_event(event.name(), value)
    }

    /// Opens a typed stream: the returned sender accepts only `T`.
    fn open_typed<T>(&self, stream: &StreamKind<T>) -> impl Future<Output = Result<TypedSender<T>>> + Send
    where
        T: Serialize + Send,
    {
        let create = self.stream_peer().create_stream(stream.name());
        async move { Ok(TypedSender::new(create.build().await?)) }
    }

    /// Opens a stream of raw byte frames (a handler taking `XStream`):
    /// write bytes as they are through the sender's `xstream()`.
    fn open_raw(&self, stream: &RawStream) -> impl Future<Output = Result<StreamSender>> + Send {
        let create = self.stream_peer().create_stream(stream.name());
        async move { create.build().await }
    }

    /// What the other side offers: its methods, events and streams (the
    /// reserved method `echostream.describe`, which may be turned off or
    /// refused by an interceptor). Asked in JSON, whatever the client's
    /// default codec: fields added to the answer since are
    /// `#[serde(default)]`, which a self-describing codec honours and the
    /// positional bincode cannot, so a newer side still reads an older one.
    fn describe(&self) -> impl Future<Output = Result<ServiceDescription>> + Send {
        let opts = CallOptions::default().idempotent().codec(Codec::Json);
        self.send_request(DESCRIBE_METHOD, (), opts)
    }

    /// The other side's health for `service` (`""`: the whole server), from the reserved
    /// method `echostream.health` (see [`crate::rpc::health`]).
    fn health(&self, service: &str) -> impl Future<Output = Result<HealthStatus>> + Send {
        let opts = CallOptions::default().idempotent().codec(Codec::Json);
        self.send_request(HEALTH_METHOD, service.to_owned(), opts)
    }

    /// Follows the other side's health for `service`: the receiver yields the status now,
    /// then each change, and ends when the server shuts down (after `NOT_SERVING`) or the
    /// connection ends.
    fn watch_health(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<crate::stream::StreamReceiver<HealthStatus>>> + Send {
        let peer = self.stream_peer();
        let metadata = echostream_types::Metadata::new().with(HEALTH_SERVICE_METADATA, service.to_owned());
        async move {
            let stream = peer
                .streams()
                .open_stream_with(&peer, HEALTH_WATCH_STREAM, metadata)
                .await?;
            Ok(crate::stream::StreamReceiver::new(stream))
        }
    }
}

/// `Caller` over the public methods both handles share; `$peer` is the
/// connection a new stream opens on.
macro_rules! caller_impl {
    ($($handle:ty => |$this:ident| $peer:expr),*) => {$(
        impl Caller for $handle {
            fn send_request<A, R>(
                &self,
                method: &str,
                args: A,
                opts: CallOptions,
            ) -> impl Future<Output = Result<R>> + Send
            where
                A: Serialize + Send,
                R: DeserializeOwned + Send,
            {
                self.request_with(method, args, opts)
            }

            fn send_event<T>(&self, name: &str, value: T) -> impl Future<Output = Result<()>> + Send
            where
                T: Serialize + Send,
            {
                self.emit(name, value)
            }

            fn stream_peer(&self) -> Peer {
                let $this = self;
                $peer
            }
        }
    )*};
}

caller_impl!(RpcClient => |client| client.peer(), Peer => |peer| peer.clone());

/// A stream sender that accepts messages of one type, from
/// [`Caller::open_typed`].
pub struct TypedSender<T> {
    inner: StreamSender,
    _message: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for TypedSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedSender").field(&self.inner).finish()
    }
}

impl<T: Serialize> TypedSender<T> {
    /// Wraps an untyped sender.
    pub fn new(inner: StreamSender) -> Self {
        Self {
            inner,
            _message: PhantomData,
        }
    }

    /// Sends one message.
    pub async fn send(&self, msg: T) -> Result<()> {
        self.inner.send(msg).await
    }

    /// Ends the stream cleanly; an error the acceptor returned arrives here
    /// as `Error::Remote`.
    pub async fn finish(self) -> Result<()> {
        self.inner.finish().await
    }

    /// The untyped sender (timestamps, the stream's name and halves).
    pub fn untyped(&self) -> &StreamSender {
        &self.inner
    }
}

/// Something that registers handlers, listeners and stream handlers: what
/// `#[echostream::service]` implements for its generated server
/// (`MathServer::new(impl)`), and what `.service(..)` takes.
pub trait Service {
    /// Registers every method, event and stream of the service.
    fn register(self, routes: &mut Routes<'_>);
}

/// Where a [`Service`] registers; names share one space with the builder's
/// own handlers, so a duplicate is an error at build time naming both.
pub struct Routes<'a> {
    router: &'a mut RouterBuilder,
}

impl std::fmt::Debug for Routes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").finish_non_exhaustive()
    }
}

impl Routes<'_> {
    /// Registers a handler.
    pub fn handler(&mut self, h: impl Handler) -> &mut Self {
        self.router.handler(Arc::new(h));
        self
    }

    /// Registers a listener.
    pub fn listener(&mut self, l: impl Listener) -> &mut Self {
        self.router.listener(Arc::new(l));
        self
    }

    /// Registers a stream handler.
    pub fn stream_handler(&mut self, h: impl StreamHandler) -> &mut Self {
        self.router.stream_handler(Arc::new(h));
        self
    }
}

/// `service` and `reflection`, written once for both builders.
macro_rules! service_setters {
    ($($builder:ty),*) => {$(
        impl $builder {
            /// Serves a service (such as `MathServer::new(my_impl)`, generated by
            /// `#[echostream::service]`): registers its methods, events and streams.
            pub fn service(mut self, service: impl Service) -> Self {
                service.register(&mut Routes {
                    router: &mut self.opts.router,
                });
                self
            }

            /// Whether this side answers the reserved method `echostream.describe`
            /// with what it offers (default: on). It passes the interceptors like
            /// any call, so `.protect("echostream.*", ..)` can restrict it.
            pub fn reflection(mut self, enabled: bool) -> Self {
                self.opts.router.no_reflection = !enabled;
                self
            }
        }
    )*};
}

service_setters!(ServerBuilder, ClientBuilder);

/// The success type of a handler's result, for typed descriptors: `T` of
/// `Result<T, E>`. Used by generated code.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a handler must return `Result<T, E>` where `T: Serialize` and `E: Into<Status>`; found `{Self}`",
    label = "handler return type"
)]
pub trait ReplyOk {
    /// `T`.
    type Ok;
}

impl<T, E> ReplyOk for std::result::Result<T, E> {
    type Ok = T;
}

/// Stands for a type a macro could not name from the signature (neither
/// `Result<T, E>` nor a stream type): a descriptor holding it compiles but
/// cannot be used for a typed call, since it is not serde.
#[doc(hidden)]
#[derive(Debug)]
pub struct Unnamed<T: ?Sized>(PhantomData<T>);

/// A listener of a service's event: a closure whose result may be `()` or
/// `Result<(), E>`, with what reflection reports. Used by generated code.
#[doc(hidden)]
pub struct EventFn<T, F> {
    info: EventInfo,
    f: F,
    _payload: PhantomData<fn(T)>,
}

impl<T, F> std::fmt::Debug for EventFn<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFn").field("event", &self.info.name).finish()
    }
}

impl<T, F, Fut> EventFn<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Context, T) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ListenerResult,
{
    /// A listener running `f` on each decoded event.
    pub fn new(info: EventInfo, f: F) -> Self {
        Self {
            info,
            f,
            _payload: PhantomData,
        }
    }
}

impl<T, F, Fut> Listener for EventFn<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Context, T) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ListenerResult,
{
    fn event(&self) -> &str {
        &self.info.name
    }

    fn call(&self, ctx: Context, payload: Payload) -> BoxFuture<'static, std::result::Result<(), Status>> {
        match decode_args::<T>(&ctx, &payload) {
            Ok(value) => {
                let run = (self.f)(ctx, value);
                Box::pin(async move { run.await.into_outcome() })
            }
            Err(status) => Box::pin(async move { Err(status) }),
        }
    }

    fn describe(&self) -> EventInfo {
        self.info.clone()
    }
}
