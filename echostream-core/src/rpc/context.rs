//! The per-call context handed to handlers and listeners.
//!
//! [`Context`] is made by the protocol layer for every call it reads (it is a call's context on
//! a connection) and re-exported here; the RPC layer adds its methods: [`Context::server`]
//! (`rpc::peer_server`) and [`Context::identity`] (`rpc::security`).

pub use crate::protocol::Context;
