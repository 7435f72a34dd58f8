//! The boundary between the protocol and the RPC layer above it: the protocol reads frames and
//! keeps the call table; what a request, an event or a stream open *means* to the application
//! (which handler, which policy) is decided by an [`Inbound`] the RPC layer implements
//! (`rpc::inbound`), one per connection. The protocol never names the layer above.

use super::{Context, Payload, Peer};
use echostream_types::{EventFrame, Metadata, RequestFrame, Status};
use futures::future::BoxFuture;
use std::any::Any;

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
