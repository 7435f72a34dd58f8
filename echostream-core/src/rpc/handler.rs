//! The handler trait: what `#[handler]` generates, and what can be written by hand.

pub use crate::protocol::Payload;
use crate::rpc::Context;
use echostream_types::descriptor::MethodInfo;
use echostream_types::{Code, Codec, Status};
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::sync::Arc;

/// A request handler registered under a method name.
///
/// `#[echostream::handler("name")]` implements this for a unit struct named
/// like the function. Written by hand it looks like this:
///
/// ```
/// use echostream_core::rpc::{Context, Handler, Payload};
/// use echostream_types::Status;
/// use futures::future::BoxFuture;
///
/// struct Echo;
/// impl Handler for Echo {
///     fn method(&self) -> &str { "echo" }
///     fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
///         Box::pin(async move {
///             let text: String = echostream_core::rpc::decode_args(&ctx, &args)?;
///             echostream_core::rpc::encode_reply(&ctx, args.codec, Ok::<_, Status>(text))
///         })
///     }
/// }
/// ```
/// [`handler_fn`] does the same for a closure.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an EchoStream handler",
    label = "not a handler",
    note = "annotate an `async fn` with `#[echostream::handler(\"name\")]`, use `handler_fn(\"name\", closure)`, or implement `Handler` by hand"
)]
pub trait Handler: Send + Sync + 'static {
    /// The method name it answers.
    fn method(&self) -> &str;
    /// Whether the handler is safe to run more than once for one call. A server with 0-RTT
    /// enabled runs calls that arrive as early data (which an attacker can replay) only for
    /// handlers that return true; the others are refused with `Code::EARLY_DATA_REFUSED`.
    /// `#[handler("name", idempotent)]` and [`FnHandler::mark_idempotent`] set it.
    fn idempotent(&self) -> bool {
        false
    }
    /// Runs the handler on an encoded argument, returning the encoded result.
    ///
    /// The connection polls the returned future once where it read the request, and moves it
    /// to a task of its own only if it is not ready: most handlers answer without waiting, and
    /// then no task is spawned. So a handler must not block its thread (as in any async
    /// code): before its first `.await` it would also hold up the other requests of its
    /// connection. Move long computations to `tokio::task::spawn_blocking`.
    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>>;
    /// What reflection (`echostream.describe`) reports about it; by default its name alone.
    fn describe(&self) -> MethodInfo {
        MethodInfo::unknown(self.method()).with_idempotent(self.idempotent())
    }
}

impl<H: Handler + ?Sized> Handler for Arc<H> {
    fn method(&self) -> &str {
        (**self).method()
    }
    fn idempotent(&self) -> bool {
        (**self).idempotent()
    }
    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
        (**self).call(ctx, args)
    }
    fn describe(&self) -> MethodInfo {
        (**self).describe()
    }
}

/// Decodes a handler's argument, or a `BAD_PAYLOAD` status naming the method
/// and what failed.
pub fn decode_args<A: DeserializeOwned>(ctx: &Context, args: &Payload) -> Result<A, Status> {
    args.codec.decode(&args.bytes).map_err(|e| {
        Status::new(
            Code::BAD_PAYLOAD,
            format!(
                "argument of `{}` did not decode as {} ({}): {e}",
                ctx.method(),
                std::any::type_name::<A>(),
                args.codec.name()
            ),
        )
    })
}

/// What a handler may return: `Result<T, E>` with a serialisable `T` and an
/// error convertible into a [`Status`].
#[diagnostic::on_unimplemented(
    message = "a handler must return `Result<T, E>` where `T: Serialize` and `E: Into<Status>`; found `{Self}`",
    label = "handler return type",
    note = "use `echostream::Result<T>` or implement `From<YourError> for echostream::Status`"
)]
pub trait HandlerResult: Send {
    /// The success value's type (what reflection reports as the result type).
    type Value;

    /// Encodes the success value with `codec`, or converts the error.
    fn into_reply(self, ctx: &Context, codec: Codec) -> Result<Payload, Status>;
}

impl<T: Serialize + Send, E: Into<Status> + Send> HandlerResult for Result<T, E> {
    type Value = T;

    fn into_reply(self, ctx: &Context, codec: Codec) -> Result<Payload, Status> {
        match self {
            Ok(v) => Payload::encode(codec, &v).map_err(|e| {
                Status::new(
                    Code::INTERNAL,
                    format!(
                        "result of `{}` did not encode ({}): {e}",
                        ctx.method(),
                        codec.name()
                    ),
                )
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// Encodes a handler's result in the request's codec.
pub fn encode_reply<R: HandlerResult>(ctx: &Context, codec: Codec, out: R) -> Result<Payload, Status> {
    out.into_reply(ctx, codec)
}

/// A handler made from a method name and an async closure `Fn(Context, A) -> Fut`.
///
/// ```
/// # use echostream_core::rpc::{handler_fn, Context};
/// let h = handler_fn("math.add", |_ctx: Context, (a, b): (i64, i64)| async move {
///     Ok::<_, echostream_core::Error>(a + b)
/// });
/// ```
pub fn handler_fn<A, F, Fut>(method: impl Into<String>, f: F) -> FnHandler<A, F>
where
    A: DeserializeOwned + Send + 'static,
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    FnHandler {
        method: method.into(),
        f: Arc::new(f),
        idempotent: false,
        _arg: std::marker::PhantomData,
    }
}

/// See [`handler_fn`].
pub struct FnHandler<A, F> {
    method: String,
    f: Arc<F>,
    idempotent: bool,
    _arg: std::marker::PhantomData<fn(A)>,
}

impl<A, F> FnHandler<A, F> {
    /// Declares the handler safe to run more than once for one call (see
    /// [`Handler::idempotent`]): it may then run on 0-RTT early data.
    ///
    /// ```
    /// # use echostream_core::rpc::{handler_fn, Context};
    /// let get = handler_fn("kv.get", |_ctx: Context, key: String| async move {
    ///     Ok::<_, echostream_core::Error>(key.len())
    /// })
    /// .mark_idempotent();
    /// ```
    pub fn mark_idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
}

impl<A, F> std::fmt::Debug for FnHandler<A, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnHandler").field("method", &self.method).finish()
    }
}

impl<A, F, Fut> Handler for FnHandler<A, F>
where
    A: DeserializeOwned + Send + 'static,
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    fn method(&self) -> &str {
        &self.method
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }

    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
        let f = self.f.clone();
        Box::pin(async move {
            let a: A = decode_args(&ctx, &args)?;
            let out = f(ctx.clone(), a).await;
            encode_reply(&ctx, args.codec, out)
        })
    }

    fn describe(&self) -> MethodInfo {
        MethodInfo::unknown(self.method())
            .with_types::<A, <Fut::Output as HandlerResult>::Value>()
            .with_idempotent(self.idempotent)
    }
}

/// A handler registered for `RpcServer::builder().register_all()`: what
/// `#[handler]` submits to the link-time registry.
#[derive(Debug)]
pub struct HandlerRegistration {
    /// Returns the handler.
    pub make: fn() -> Arc<dyn Handler>,
    /// Its method name, for listing.
    pub method: &'static str,
}

inventory::collect!(HandlerRegistration);

/// All handlers submitted with `#[handler]` anywhere in the binary.
pub fn registered_handlers() -> impl Iterator<Item = &'static HandlerRegistration> {
    inventory::iter::<HandlerRegistration>.into_iter()
}

impl std::fmt::Debug for dyn Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handler({})", self.method())
    }
}
