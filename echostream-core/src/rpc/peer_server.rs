//! The server a connection belongs to, added by the RPC layer to [`Peer`] and [`Context`]:
//! the protocol layer below does not know servers, so these inherent methods live here, with
//! the per-connection RPC state they read (`rpc::inbound`).

use crate::protocol::{Context, Peer};
use crate::rpc::ServerHandle;

/// The server handle, added by the RPC layer.
impl Peer {
    /// The server this connection belongs to, when this is the server side.
    pub fn server(&self) -> Option<&ServerHandle> {
        crate::rpc::inbound::of(self)?.server.as_ref()
    }
}

/// The server handle, added by the RPC layer.
impl Context {
    /// The server this call arrived at (server side only): list peers,
    /// broadcast, watch connections.
    pub fn server(&self) -> Option<&ServerHandle> {
        self.peer().server()
    }
}
