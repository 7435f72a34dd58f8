//! The EchoStream runtime: QUIC connections, the control-stream protocol, and
//! the RPC server and client. Most users depend on the `echostream` facade
//! crate instead, which re-exports what they need.
//!
//! # Layout (top to bottom)
//! - [`rpc`]: API layer: [`rpc::RpcServer`], [`rpc::RpcClient`], handlers,
//!   listeners, interceptors and rate limits, the router; `rpc::inbound` is what
//!   the protocol layer calls for each request, event and stream open.
//! - [`stream`]: application streams: [`stream::XStream`] pairs (data half +
//!   error half), the [`stream::Streams`] control handle, typed message streams.
//! - [`protocol`]: the control stream: the sans-IO call state and `classify`
//!   (what each frame means), the driver tasks (batching writer, reader, side
//!   streams, events), hello/welcome, clock sync; [`protocol::Peer`] is the
//!   per-connection handle and [`protocol::Context`] a call's context on it.
//! - [`connection`]: transport: quinn endpoints, socket and transport
//!   settings, TLS identities and trust ([`connection::tls`]).
//!
//! Dependencies point down only: `echostream-types` → `connection` →
//! `protocol` → `stream` → `rpc` → the `echostream` facade. A layer may name
//! its own and lower layers, never a higher one; where a lower layer needs
//! what only a higher one knows (which handler, which policy) it calls a small
//! trait the higher layer implements: `protocol::Inbound` (implemented in
//! `rpc::inbound`) and `protocol::StreamHost` (implemented by the stream
//! layer's `ConnStreams`). `error.rs` sits with `connection`. The test
//! `tests/layers.rs` reads the `use` lines and `crate::` paths and fails on a
//! path that points up.
//!
//! Wire frames and codecs live in `echostream-types` (sans-IO).

// Peer input must never panic the process: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod connection;
mod error;
pub mod metrics;
pub mod protocol;
pub mod rpc;
pub mod stream;
pub mod testing;

pub use echostream_types as types;
pub use error::{Error, Result};
