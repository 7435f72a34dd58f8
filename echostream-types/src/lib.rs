//! Wire types for EchoStream: frames, status codes and payload codecs.
//!
//! This crate is *sans-IO*: everything here is plain code over bytes, with no
//! sockets, tasks or clocks, so it can be unit-tested and fuzzed alone. The
//! runtime in `echostream-core` drives it over QUIC.
//!
//! # Layout
//! - [`frame`]: the control-stream frames ([`Frame`]), their byte encoding and
//!   the incremental [`FrameDecoder`] that checks a frame's declared length
//!   against the limit before buffering it.
//! - [`codec`]: payload codecs ([`Codec`]): bincode (default) and JSON, chosen
//!   per message by a one-byte tag.
//! - [`status`]: the wire status of a failed call ([`Status`], [`Code`]) and the
//!   QUIC close codes ([`CloseCode`]).
//! - [`metadata`]: string-keyed metadata carried by hellos, requests and events.
//! - [`descriptor`]: typed descriptors of methods, events and streams
//!   ([`Method`], [`Event`], [`StreamKind`]) and the reflection answer
//!   ([`ServiceDescription`]).
//! - [`side`]: side streams, which carry one large request or response each: the head a
//!   receiver checks before buffering, and the stream codes that end one early.
//! - [`pairing`]: the XStream pairing protocol: the data half's header
//!   ([`pairing::DataHeader`]), the acceptor's answer, the error half and its
//!   error block, the stream reset codes ([`pairing::code`]).
//! - [`message`]: typed-message framing on an XStream (the incremental
//!   [`message::MessageDecoder`]) and the status typed streams fail with.
//! - `cursor` (private): the bounds-checked reads and the string and metadata
//!   encodings all of the formats above share.
//!
//! The byte layout is specified in `docs/PROTOCOL.md` at the repository root.

// Peer input must never panic the process: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod codec;
pub mod compress;
mod cursor;
pub mod descriptor;
pub mod frame;
pub mod health;
pub mod message;
pub mod metadata;
pub mod pairing;
pub mod side;
pub mod status;

pub use codec::{Codec, CodecError};
pub use descriptor::{Event, Method, ServiceDescription, StreamKind};
pub use frame::{
    EventFrame, Frame, FrameDecoder, FrameError, Hello, RequestFrame, RequestRef, ResponseFrame,
};
pub use metadata::Metadata;
pub use status::{CloseCode, Code, Status};

/// The protocol version this crate speaks. Carried in the hello.
pub const PROTOCOL_VERSION: u16 = 1;

/// The ALPN identifier of protocol version 1.
pub const ALPN: &[u8] = b"echostream/1";

/// Default largest frame a peer may send, in bytes (length prefix excluded).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 32 * 1024 * 1024;
