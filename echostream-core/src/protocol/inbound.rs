//! The boundaries between the protocol and the layers above it: the protocol reads frames and
//! keeps the call table; what a request, an event or a stream open *means* to the application
//! (which handler, which policy) is decided by an [`Inbound`] the RPC layer implements
//! (`rpc::inbound`), and the streams the peer opens go to a [`StreamHost`] the stream layer
//! implements (`stream::ConnStreams`), one of each per connection. The protocol never names
//! the layers above.

use super::{Context, Payload, Peer};
use echostream_types::{EventFrame, Metadata, RequestFrame, Status};
use futures::future::BoxFuture;
use std::any::Any;

/// The stream layer's state of one connection, and what it does with the streams the peer opens
/// (besides side streams, which are the protocol's own). The stream layer reaches its state back
/// from a [`Peer`] by downcasting (`Peer::stream_state`).
pub(crate) trait StreamHost: Any + Send + Sync {
    /// A unidirectional stream whose first byte, `kind`, is not the side-frame type.
    fn accept_uni(&self, peer: Peer, kind: u8, recv: quinn::RecvStream) -> BoxFuture<'static, ()>;

    /// A bidirectional stream the peer opened (once the TLS handshake has completed).
    fn accept_bi(
        &self,
        peer: Peer,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> BoxFuture<'static, ()>;

    /// Application streams live on this connection: (opened here, accepted here).
    fn live_streams(&self) -> (usize, usize);
}

/// What the RPC layer does with what the peer sends on one connection.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// Runs a request the protocol admitted (`state::CallState::admit`), in the reader: the
    /// handler is polled once right there. Returns its answer when it finished on that poll
    /// (or was refused); otherwise it continued through [`Peer::spawn_call`], which answers.
    fn request(&self, peer: &Peer, req: RequestFrame) -> Option<Result<Payload, Status>>;

    /// Handles one event, in arrival order (called from the connection's event task).
    fn event<'a>(&'a self, peer: &'a Peer, ev: EventFrame) -> BoxFuture<'a, ()>;

    /// Applies this side's policy to a stream the peer wants to open named `name`; on `Ok` the
    /// context the stream handler receives, on `Err` the refusal sent to the opener.
    fn stream_open<'a>(
        &'a self,
        peer: &'a Peer,
        name: &'a str,
        metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<Context, Status>>;

    /// The implementation, for the RPC layer to reach its own per-connection state (the server
    /// handle, the identity) from a [`Peer`].
    fn as_any(&self) -> &dyn Any;
}
