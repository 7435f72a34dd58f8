//! The EchoStream runtime: QUIC connections, the control-stream protocol, and
//! the RPC server and client. Most users depend on the `echostream` facade
//! crate instead, which re-exports what they need.
//!
//! # Layout (top to bottom)
//! - [`rpc`]: API layer: [`rpc::RpcServer`], [`rpc::RpcClient`], handlers,
//!   listeners, [`rpc::Context`], the router.
//! - [`protocol`]: the control stream: hello/welcome handshake, the batching
//!   writer, the reader that dispatches frames, large frames on side streams;
//!   [`protocol::Peer`] is the per-connection handle.
//! - [`connection`]: transport: quinn endpoints, socket and transport
//!   settings, TLS identities and trust ([`connection::tls`]).
//! - [`stream`]: application streams: [`stream::XStream`] pairs (data half +
//!   error half), the [`stream::Streams`] control handle, typed message streams.
//!
//! Wire frames and codecs live in `echostream-types` (sans-IO).

// Peer input must never panic the process: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod connection;
mod error;
pub mod protocol;
pub mod rpc;
pub mod stream;
pub mod testing;

pub use echostream_types as types;
pub use error::{Error, Result};
