//! A call's context on a connection ([`Context`], handed to handlers and listeners) and the
//! encoded argument or result of a call ([`Payload`]). They live in the protocol layer, which
//! makes them for every request it reads; the RPC layer re-exports them (`rpc::Context`,
//! `rpc::Payload`) and adds its methods (`Context::server`, `Context::identity`).

use super::Peer;
use crate::connection::tls::Fingerprint;
use bytes::Bytes;
use echostream_types::{Codec, Metadata};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An encoded argument or result, with the codec it is encoded in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The codec.
    pub codec: Codec,
    /// The bytes.
    pub bytes: Bytes,
}

impl Payload {
    /// Encodes `value` with `codec`.
    pub fn encode<T: Serialize + ?Sized>(
        codec: Codec,
        value: &T,
    ) -> Result<Self, echostream_types::CodecError> {
        Ok(Self {
            codec,
            bytes: codec.encode(value)?,
        })
    }
}

/// What a handler knows about the call it is serving: method, caller,
/// metadata, deadline, and a [`Peer`] handle to call the caller back.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<CallInfo>,
}

struct CallInfo {
    method: String,
    request_id: Option<u64>,
    metadata: Metadata,
    deadline: Option<Instant>,
    peer: Peer,
    /// The handler's choice of compression for its answer (see [`Context::compress_reply`]).
    reply_compression: std::sync::Mutex<Option<echostream_types::compress::Compression>>,
}

impl Context {
    pub(crate) fn new(
        method: String,
        request_id: Option<u64>,
        metadata: Metadata,
        deadline: Option<Instant>,
        peer: Peer,
    ) -> Self {
        Self {
            inner: Arc::new(CallInfo {
                method,
                request_id,
                metadata,
                deadline,
                peer,
                reply_compression: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Compresses this call's answer with `compression` instead of this side's setting
    /// (`ServerBuilder::compression`); `Compression::None` sends it plain. As with the setting,
    /// only with an algorithm the caller announced, for an answer of at least the threshold,
    /// and when it shrinks by at least 10 %. Called by a handler before it returns; the last
    /// call wins.
    pub fn compress_reply(&self, compression: echostream_types::compress::Compression) {
        *super::state::lock(&self.inner.reply_compression) = Some(compression);
    }

    /// The answer's payload as it goes on the wire: compressed by the handler's choice, else
    /// by this side's setting, when the peer accepts it and it pays.
    pub(crate) fn reply_payload(&self, payload: Payload) -> Payload {
        let choice = *super::state::lock(&self.inner.reply_compression);
        match self.inner.peer.deflate(payload.codec, &payload.bytes, choice) {
            Some((codec, bytes)) => Payload { codec, bytes },
            None => payload,
        }
    }

    /// The method (or event name) being served.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// The request id on this connection; `None` for events.
    pub fn request_id(&self) -> Option<u64> {
        self.inner.request_id
    }

    /// Metadata sent with the request or event.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// When the caller stops waiting, in this host's monotonic clock (the
    /// deadline travels as a relative duration, so clock skew does not matter).
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.inner
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// A handle to the connection the call came on: call or notify the caller
    /// with it, now or later (until it disconnects).
    pub fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// The caller's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer.remote_addr()
    }

    /// A process-unique id of the connection.
    pub fn connection_id(&self) -> u64 {
        self.inner.peer.connection_id()
    }

    /// SHA-256 fingerprint of the peer's certificate, when it presented one.
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.inner.peer.fingerprint()
    }

    /// Metadata the peer sent in its hello (client name, credentials, ...).
    pub fn hello_metadata(&self) -> &Metadata {
        self.inner.peer.hello_metadata()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("method", &self.inner.method)
            .field("request_id", &self.inner.request_id)
            .field("peer", &self.peer_addr())
            .field("connection_id", &self.connection_id())
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}
