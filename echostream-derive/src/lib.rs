//! Attribute macros for EchoStream; use them through the `echostream` crate.
//!
//! `#[echostream::handler("service.method")]` turns an `async fn` into a
//! request handler, `#[echostream::listener("service.event")]` into a
//! listener for one-way events, and `#[echostream::stream_handler("name")]`
//! into an acceptor of streams. The macros are thin sugar: everything they
//! generate can be written by hand by implementing `echostream::Handler`,
//! `echostream::Listener` or `echostream::stream::StreamHandler` for a type,
//! and the generated code reaches the runtime only through the hidden
//! `echostream::__private` module, so user crates depend on `echostream`
//! alone.
//!
//! # Layout
//! All three macros run one pipeline, and differ only in a table of per-kind
//! parts:
//! - [`handler()`], [`listener()`], [`stream_handler()`]: the entry points,
//!   which name their kind.
//! - `kind`: the per-kind parts: words for error messages, options, how the
//!   parameters are obtained, and the runtime names (trait, constant,
//!   registration).
//! - `args`: parsing and checking the attribute's arguments (the name, and
//!   options).
//! - `signature`: checking the function's signature and splitting its
//!   parameters into the optional context and the rest.
//! - `generator`: `FnGenerator`, one method per emitted item: the unit
//!   struct, its inherent impl, the runtime trait's impl, the registration.

use proc_macro::TokenStream;

mod args;
mod descriptor;
mod generator;
mod kind;
mod service;
mod signature;

use kind::Kind;

/// Turns an `async fn` into an EchoStream request handler named by a method.
///
/// ```ignore
/// use echostream::prelude::*;
///
/// /// Starts playing a file.
/// #[echostream::handler("audio.play")]
/// async fn handle_play(ctx: Context, file: String) -> Result<()> {
///     Ok(())
/// }
///
/// // `handle_play` is now a value implementing `Handler`:
/// let server = RpcServer::builder().handler(handle_play);
/// ```
///
/// # What it generates
///
/// For `async fn NAME(ctx: Context, a: A, b: B) -> Ret { body }`:
///
/// - a unit struct `NAME` with the function's visibility and doc comments,
///   so `NAME` can be passed as a value (`.handler(NAME)`);
/// - `NAME::METHOD`, the method name, and `NAME::invoke(ctx, a, b)`, the
///   original function, callable directly (in tests, say);
/// - an implementation of `echostream::Handler` for `NAME` that decodes the
///   arguments, runs `invoke` and encodes its result in the request's codec;
/// - a registration, so `RpcServer::builder().register_all()` finds it.
///
/// # Parameters
///
/// A first parameter of type `Context` receives the call's context; it may be
/// left out. The other parameters are the call's argument, decoded with serde:
/// none takes `()`, one takes that type, several take a tuple `(A, B, ...)`
/// (so a client calls `request("math.add", (1, 2))`). Argument types must be
/// owned (`String`, not `&str`), since they are decoded from the request.
///
/// The function must return `Result<T, E>` with `T: Serialize` and
/// `E: Into<Status>`, such as `echostream::Result<T>`.
///
/// # Options
///
/// - `#[handler("name", idempotent)]`: the handler is safe to run more than
///   once for one call, which allows it to be served from 0-RTT data.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    generator::expand(Kind::Handler, attr.into(), item.into()).into()
}

/// Turns an `async fn` into an EchoStream listener for one-way events of a name.
///
/// ```ignore
/// use echostream::prelude::*;
///
/// /// Forgets a user's session.
/// #[echostream::listener("user.logged_out")]
/// async fn on_logout(ctx: Context, user_id: u64) {
///     // ...
/// }
///
/// // `on_logout` is now a value implementing `Listener`, on either side:
/// let server = RpcServer::builder().listener(on_logout);
/// // and a peer sends the event with `emit("user.logged_out", 42u64)`.
/// ```
///
/// # What it generates
///
/// For `async fn NAME(ctx: Context, a: A, b: B) -> Ret { body }`:
///
/// - a unit struct `NAME` with the function's visibility and doc comments,
///   so `NAME` can be passed as a value (`.listener(NAME)`);
/// - `NAME::EVENT`, the event name, and `NAME::invoke(ctx, a, b)`, the
///   original function, callable directly (in tests, say);
/// - an implementation of `echostream::Listener` for `NAME` that decodes the
///   event's payload and runs `invoke`;
/// - a registration, so `RpcServer::builder().register_all()` and
///   `RpcClient::builder().register_all()` find it.
///
/// Several listeners may share one event name: they all run, in registration
/// order.
///
/// # Parameters
///
/// As for [`handler()`]: a first parameter of type `Context` is optional; the
/// others are the event's payload, decoded with serde: none takes `()`, one
/// takes that type, several take a tuple `(A, B, ...)`. Argument types must be
/// owned (`String`, not `&str`). A payload that does not decode is logged with
/// the event name and counted (`failed_events()`); the listener does not run.
///
/// The function returns nothing, or `Result<(), E>` with `E: Into<Status>`
/// (such as `echostream::Result<()>`); an error is logged and counted the same
/// way, since nobody waits for an answer.
///
/// # Options
///
/// None for now: the attribute takes the event name alone.
#[proc_macro_attribute]
pub fn listener(attr: TokenStream, item: TokenStream) -> TokenStream {
    generator::expand(Kind::Listener, attr.into(), item.into()).into()
}

/// Turns an `async fn` into an EchoStream stream handler: it accepts the
/// streams of a name, each in its own task.
///
/// ```ignore
/// #[echostream::stream_handler("audio.stream")]
/// async fn handle_audio_stream(ctx: Context, stream: StreamReceiver<AudioFrame>) {
///     while let Some(frame) = stream.recv().await { /* play(frame) */ }
/// }
/// let server = RpcServer::builder().stream_handler(handle_audio_stream);
/// ```
///
/// The parameters are an optional `Context` first, then the stream:
/// `StreamReceiver<T>` (typed messages; byte vectors `Vec<u8>` when `T`
/// is left out), `StreamDuplex<T>` or `XStream` (raw byte frames, whose
/// descriptor is a `RawStream`, not a `StreamKind`). The function returns
/// nothing, or `Result<(), E>` with `E: Into<Status>`: an error reaches the
/// opener as `Error::Remote` on its next send (or on `finish()`).
/// Like `#[handler]`, it generates a unit struct named like the function
/// (`NAME::STREAM`, `NAME::invoke`) and a registration for `register_all()`.
#[proc_macro_attribute]
pub fn stream_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    generator::expand(Kind::StreamHandler, attr.into(), item.into()).into()
}

/// Turns a trait into a typed service: descriptors, a client and a server.
///
/// ```ignore
/// #[echostream::service("math")]           // wire names "math.add", ...
/// pub trait Math {
///     async fn add(&self, ctx: Context, a: i64, b: i64) -> Result<i64>;
///     #[idempotent] async fn read(&self, id: u32) -> Result<f32>;
///     #[method(name = "legacy.sum")] async fn sum(&self, xs: Vec<i64>) -> Result<i64>;
///     #[event] async fn overflow(&self, n: u64);
///     #[stream] async fn samples(&self, rx: StreamReceiver<f32>) -> Result<()>;
/// }
/// ```
///
/// # What it generates
///
/// - the trait, each method written `fn -> impl Future<Output = ..> + Send` so
///   implementations (`async fn` in `impl Math for MyMath`) can be served;
/// - `mod math` (the trait's name in snake case; `#[service("math", module =
///   "math_api")]` names it when `math` is taken) with one typed descriptor per
///   method (`math::ADD: Method<(i64, i64), i64>`, `math::OVERFLOW: Event<u64>`,
///   `math::SAMPLES: StreamKind<f32>`, a `RawStream` for an `XStream`
///   parameter) and `math::SERVICE`;
/// - `MathClient<C = RpcClient>`, one typed method per trait method, over any
///   `Caller` (`RpcClient`, `Peer`): `MathClient::new(client).add(2, 3).await?`;
/// - `MathServer<T: Math>`, a `Service`: `RpcServer::builder().service(MathServer::new(my_impl))`,
///   which registers one ordinary handler, listener or stream handler per method.
///
/// Parameters are as for `#[handler]` (an optional `Context` first, owned
/// serde types), after `&self`. The wire name is `"prefix.method"` unless
/// `#[method(name = "...")]` gives it. With the `echostream` feature
/// `schema`, reflection carries the JSON Schema of each type that implements
/// `schemars::JsonSchema`; other types are reported without one, so the
/// feature never requires it.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into()).into()
}
