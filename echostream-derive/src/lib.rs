//! Attribute macros for EchoStream; use them through the `echostream` crate.
//!
//! `#[echostream::handler("service.method")]` turns an `async fn` into a
//! request handler. The macro is thin sugar: everything it generates can be
//! written by hand by implementing `echostream::Handler` for a type, and the
//! generated code reaches the runtime only through the hidden
//! `echostream::__private` module, so user crates depend on `echostream` alone.
//!
//! # Layout
//! - [`handler`]: the entry point.
//! - `args`: parsing and checking the attribute's arguments (the method name
//!   and options).
//! - `signature`: checking the function's signature and splitting its
//!   parameters into the optional context and the decoded arguments.
//! - `expand`: generating the handler type, its `Handler` impl and its
//!   registration.

use proc_macro::TokenStream;

mod args;
mod expand;
mod signature;
mod stream_handler;

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
    expand::handler(attr.into(), item.into()).into()
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
/// `StreamReceiver<T>` (typed messages; raw byte frames `Vec<u8>` when `T`
/// is left out), `StreamDuplex<T>` or `XStream`. The function returns
/// nothing, or `Result<(), E>` with `E: Into<Status>`: an error reaches the
/// opener as `Error::Remote` on its next send (or on `finish()`).
/// Like `#[handler]`, it generates a unit struct named like the function
/// (`NAME::STREAM`, `NAME::invoke`) and a registration for `register_all()`.
#[proc_macro_attribute]
pub fn stream_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    stream_handler::expand(attr.into(), item.into()).into()
}
