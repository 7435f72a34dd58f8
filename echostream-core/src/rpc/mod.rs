//! API layer: handlers, listeners, the router, and the server and client.
//!
//! - [`handler`]: the [`Handler`] trait (what `#[handler]` implements) and
//!   [`handler_fn`] for closures.
//! - [`listener`]: the [`Listener`] trait for one-way events.
//! - [`context`]: [`Context`], what a handler knows about its call (made by the protocol
//!   layer, re-exported here).
//! - `inbound`: the RPC side of each connection, which the protocol layer calls into
//!   (`protocol::Inbound`): rate limits, handler lookup, interceptors, listeners.
//! - `peer_server`: [`Peer::server`] and [`Context::server`], which the RPC layer adds.
//! - [`server`] / [`client`]: [`RpcServer`] and [`RpcClient`] with their builders.
//! - [`discovery`]: `enable_discovery`, `RpcClient::discover` (feature `discovery`).

pub mod auth;
pub mod client;
pub mod context;
pub mod discovery;
pub mod handler;
pub(crate) mod inbound;
pub mod interceptor;
pub mod limits;
pub mod listener;
mod options;
mod peer_server;
pub mod reflect;
pub mod security;
pub mod server;
pub mod service;
pub mod subscribe;

pub use crate::protocol::{CallOptions, ConnectionInfo, Peer, ZeroRtt};
pub use client::{ClientBuilder, ReconnectPolicy, RpcClient};
pub use context::Context;
#[cfg(feature = "discovery")]
pub use discovery::DiscoverOptions;
pub use handler::{
    decode_args, encode_reply, handler_fn, registered_handlers, FnHandler, Handler, HandlerRegistration,
    HandlerResult, Payload,
};
pub use listener::{
    listener_fn, registered_listeners, FnListener, Listener, ListenerRegistration, ListenerResult,
};
pub use server::{
    BroadcastReport, ConnectionEvent, ConnectionEvents, ConnectionPolicy, ConnectionRequest,
    ConnectionRequests, RpcServer, ServerBuilder, ServerHandle, ShutdownHandle,
};
pub use service::{Caller, Routes, Service, TypedSender};
pub use subscribe::Subscription;

pub use auth::{authenticator_fn, AuthRequest, AuthResult, Authenticator, PeerIdentity, StaticTokens};
pub use interceptor::{
    interceptor_fn, require_authenticated, require_role, CallKind, Guarded, HandlerExt, Interceptor,
};
pub use limits::{retry_after, AddressValidation, AdmissionStats, RateLimit};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Method and event names to their handlers and listeners. Built once by a
/// builder, then shared read-only by every connection.
#[derive(Default)]
pub(crate) struct Router {
    handlers: HashMap<String, Arc<dyn Handler>>,
    listeners: HashMap<String, Vec<Arc<dyn Listener>>>,
    /// Events a listener could not decode or that failed.
    bad_events: AtomicU64,
    /// Typed subscriptions added at run time.
    pub(crate) subscriptions: Arc<subscribe::Subscriptions>,
    /// Stream names accepted here (handlers and `accept`), shared by every connection.
    streams: Arc<crate::stream::Registry>,
}

impl Router {
    pub(crate) fn handler(&self, method: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(method).cloned()
    }

    pub(crate) fn listeners(&self, event: &str) -> Vec<Arc<dyn Listener>> {
        self.listeners.get(event).cloned().unwrap_or_default()
    }

    pub(crate) fn count_bad_event(&self) {
        self.bad_events.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bad_events(&self) -> u64 {
        self.bad_events.load(Ordering::Relaxed)
    }

    pub(crate) fn stream_registry(&self) -> Arc<crate::stream::Registry> {
        self.streams.clone()
    }

    pub(crate) fn methods(&self) -> Vec<String> {
        let mut m: Vec<_> = self.handlers.keys().cloned().collect();
        m.sort();
        m
    }
}

/// Collects registrations for a builder; duplicates are reported at build time.
#[derive(Clone, Default)]
pub(crate) struct RouterBuilder {
    handlers: Vec<Arc<dyn Handler>>,
    listeners: Vec<Arc<dyn Listener>>,
    register_all: bool,
    stream_handlers: Vec<Arc<dyn crate::stream::StreamHandler>>,
    stream_options: crate::stream::StreamOptions,
    /// The transport's initial stream limits, the floor of their growth.
    stream_limits: (u32, u32),
    /// `.reflection(false)`: no `echostream.describe` handler (see `reflect`).
    no_reflection: bool,
}

impl RouterBuilder {
    pub(crate) fn handler(&mut self, h: Arc<dyn Handler>) {
        self.handlers.push(h);
    }

    pub(crate) fn listener(&mut self, l: Arc<dyn Listener>) {
        self.listeners.push(l);
    }

    pub(crate) fn register_all(&mut self) {
        self.register_all = true;
    }

    pub(crate) fn stream_handler(&mut self, h: Arc<dyn crate::stream::StreamHandler>) {
        self.stream_handlers.push(h);
    }

    pub(crate) fn stream_options(&mut self, o: crate::stream::StreamOptions) {
        self.stream_options = o;
    }

    pub(crate) fn stream_limits(&mut self, bidi: u32, uni: u32) {
        self.stream_limits = (bidi, uni);
    }

    /// The stream registry with the registered stream handlers.
    fn build_streams(&self) -> Result<crate::stream::Registry, crate::Error> {
        let registry = crate::stream::Registry::new(self.stream_options.clone());
        let limits = match self.stream_limits {
            (0, 0) => {
                let t = crate::connection::TransportOptions::default();
                (t.max_bidi_streams, t.max_uni_streams)
            }
            l => l,
        };
        *registry.initial_limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
        for h in &self.stream_handlers {
            registry.add_handler(h.clone())?;
        }
        if self.register_all {
            for reg in crate::stream::registered_stream_handlers() {
                if self.stream_handlers.iter().any(|h| h.name() == reg.name) {
                    continue;
                }
                registry.add_handler((reg.make)())?;
            }
        }
        Ok(registry)
    }

    pub(crate) fn build(&self) -> Result<Router, crate::Error> {
        let mut handlers: HashMap<String, Arc<dyn Handler>> = HashMap::new();
        let mut explicit = std::collections::HashSet::new();
        for h in &self.handlers {
            let name = h.method().to_owned();
            if name.is_empty() || name.len() > u16::MAX as usize {
                return Err(crate::Error::Config(format!(
                    "handler method name must be 1 to 65535 bytes, got {} bytes",
                    name.len()
                )));
            }
            if let Some(first) = handlers.insert(name.clone(), h.clone()) {
                return Err(reflect::duplicate_method(&name, &*first, &**h));
            }
            explicit.insert(name);
        }
        if self.register_all {
            for reg in registered_handlers() {
                // An explicit registration of the same method wins; two
                // `#[handler]`s with one name are a mistake.
                if explicit.contains(reg.method) {
                    continue;
                }
                if handlers.insert(reg.method.to_owned(), (reg.make)()).is_some() {
                    return Err(crate::Error::Config(format!(
                        "two #[handler] functions use the method name `{}`",
                        reg.method
                    )));
                }
            }
        }
        let mut listeners: HashMap<String, Vec<Arc<dyn Listener>>> = HashMap::new();
        for l in &self.listeners {
            listeners.entry(l.event().to_owned()).or_default().push(l.clone());
        }
        if self.register_all {
            for reg in registered_listeners() {
                let l = (reg.make)();
                let list = listeners.entry(reg.event.to_owned()).or_default();
                // Already registered explicitly: do not run it twice.
                if !list.iter().any(|x| x.type_name() == l.type_name()) {
                    list.push(l);
                }
            }
        }
        if !self.no_reflection {
            reflect::add_describe(self, &mut handlers, &listeners)?;
        }
        Ok(Router {
            handlers,
            listeners,
            bad_events: AtomicU64::new(0),
            subscriptions: Arc::default(),
            streams: Arc::new(self.build_streams()?),
        })
    }
}
