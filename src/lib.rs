//! # EchoStream
//!
//! A QUIC RPC framework: typed requests, one-way events and streams (each
//! with an out-of-band error half) over one encrypted connection, in both
//! directions.
//!
//! ```no_run
//! use echostream::prelude::*;
//!
//! #[echostream::handler("user.login")]
//! async fn login(_ctx: Context, username: String) -> Result<String> {
//!     Ok(format!("session-for-{username}"))
//! }
//!
//! # async fn doc() -> Result<()> {
//! let server = RpcServer::builder().bind("127.0.0.1:5000").handler(login).build()?;
//! let addr = server.local_addr().to_string();
//! tokio::spawn(server.run());
//!
//! let client = RpcClient::connect(&addr).await?;
//! let session: String = client.request("user.login", "alice").await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`prelude`]: what most programs import.
//! - [`rpc`], [`tls`], [`protocol`]: the runtime (from `echostream-core`).
//! - [`types`]: wire frames, codecs and status codes (from `echostream-types`).
//! - `discovery` (feature `discovery`, on by default): LAN discovery over mDNS
//!   (`echostream-discovery`): `RpcServer::builder().enable_discovery(name)`,
//!   `RpcClient::discover(name)`, and `discovery::Discovery` to browse.
//! - `#[handler]`: the attribute that turns an `async fn` into a [`rpc::Handler`].
//! - [`stream`]: [`XStream`], the [`Streams`] control handle, typed message
//!   streams; `#[stream_handler]` turns an `async fn` into a stream acceptor.
//!
//! The architecture is described in `ARCHITECTURE.md`, the wire protocol byte by byte in
//! `docs/PROTOCOL.md`, the security model in `docs/SECURITY.md`.

pub use echostream_core::connection::client_auth::{
    ClientAuth, ClientCertTrust, ClientIdentity, KeyLog, PeerCertificate,
};
pub use echostream_core::connection::tls;
pub use echostream_core::connection::tls::{ClientTrust, Fingerprint, ServerIdentity};
pub use echostream_core::rpc::{
    CallOptions, Caller, ClientConnectionEvents, ConnectionEvent, ConnectionEvents, ConnectionInfo,
    ConnectionPolicy, Context, Handler, Listener, Peer, ReconnectPolicy, RpcClient, RpcServer, ServerHandle,
    SessionCache, Subscription, ZeroRtt,
};
pub use echostream_core::stream::{
    IncomingStreams, StreamDuplex, StreamError, StreamReceiver, StreamSender, StreamState, Streams,
    TimedReceiver, XStream,
};
pub use echostream_core::{connection, metrics, protocol, rpc, stream, testing, Error, Result};
pub use echostream_derive::{handler, listener, service, stream_handler};
pub use echostream_types as types;
pub use echostream_types::compress::Compression;
pub use echostream_types::descriptor::{Event, Method, RawStream, ServiceDescription, StreamKind};
pub use echostream_types::{Code, Codec, Metadata, Status};

/// Clock synchronisation: clocks, timestamps, the synced clock of a connection.
pub mod timesync {
    pub use echostream_core::protocol::timesync::*;
    pub use echostream_core::protocol::SyncedClock;
    pub use echostream_core::stream::jitter::{
        JitterBuffer, JitterConfig, JitterStats, PlayoutDelay, PushOutcome, ADAPT_EVERY,
    };
}
#[cfg(feature = "discovery")]
pub use echostream_core::rpc::DiscoverOptions;
/// LAN discovery over mDNS: announce, browse, find (the `echostream-discovery` crate).
#[cfg(feature = "discovery")]
pub use echostream_discovery as discovery;
/// The `schemars` version whose `JsonSchema` reflection reads (feature
/// `schema`): derive it as `#[derive(echostream::schemars::JsonSchema)]`
/// with `#[schemars(crate = "echostream::schemars")]`, or depend on the same
/// `schemars` major version.
#[cfg(feature = "schema")]
pub use schemars;

/// The names most programs need: `use echostream::prelude::*;`.
///
/// The server and client, a call's context and the peer handle, call options, the result and
/// error types with the wire status, the three attributes, and the stream types. Everything
/// else stays one path away: trust and identities at the crate root
/// ([`ServerIdentity`], [`ClientTrust`], [`Fingerprint`], [`Codec`], [`Metadata`]) and under
/// [`tls`]; handler helpers, access control and connection policy under [`rpc`]; stream
/// options and the stream control handle under [`stream`]; clocks under [`timesync`].
pub mod prelude {
    pub use crate::{handler, listener, stream_handler};
    pub use crate::{
        CallOptions, Code, Context, Error, Peer, Result, RpcClient, RpcServer, Status, StreamReceiver,
        StreamSender, XStream,
    };
}

/// Runtime items used by the code `#[handler]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use echostream_core::rpc::reflect::Described;
    pub use echostream_core::rpc::service::{EventFn, ReplyOk, Unnamed};
    pub use echostream_core::rpc::{
        decode_args, encode_reply, handler_fn, Caller, Context, Handler, HandlerRegistration, Listener,
        ListenerRegistration, ListenerResult, Payload, Routes, RpcClient, Service, TypedSender,
    };
    pub use echostream_core::stream::stream_handler_fn;
    pub use echostream_core::stream::{
        FromXStream, StreamHandler, StreamHandlerRegistration, StreamHandlerResult, StreamSender, XStream,
    };
    pub use echostream_core::{Error, Result};
    pub use echostream_types::descriptor::{
        Event, EventInfo, Method, MethodInfo, NoJsonSchema, RawStream, ServiceDescription, StreamInfo,
        StreamKind, ViaJsonSchema,
    };
    pub use echostream_types::{Codec, Status};
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use std::sync::Arc;
}
