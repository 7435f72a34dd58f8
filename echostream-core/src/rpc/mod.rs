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
//! - [`balance`]: [`Balancer`], one client over every instance a discovery source lists
//!   (feature `discovery`).
//!
//! # Behaviour
//!
//! What this layer promises; `ARCHITECTURE.md` summarises it.
//!
//! - **Server life-cycle.** `RpcServer::builder()...build()?` binds the socket
//!   and loads the identity (inside tokio); `run()`/`run_until(signal)` serve.
//!   Graceful shutdown (`shutdown_handle().shutdown()`): the endpoint stops
//!   accepting, every connection gets a GOAWAY (the peer's new calls fail fast),
//!   calls in flight get the grace period (default 10 s; then aborted and
//!   answered `CANCELLED`), each control stream is finished and acknowledged
//!   (bounded wait) and the connection closed with `GOING_AWAY`. A connection
//!   whose admission (handshake, hello, authenticator, decision) was still
//!   running when the shutdown listed the connections closes itself with
//!   `GOING_AWAY` as soon as it is admitted.
//! - **Clients share endpoints.** `RpcClient` is an `Arc` (`Clone + Send +
//!   Sync`); the connection closes when the last clone drops. UDP endpoints
//!   (socket + quinn's buffers, about 3 MiB) belong to the builder: clients
//!   connected from one builder and its clones share one per local bind address
//!   (IPv4/IPv6 wildcard), socket buffer size and tokio runtime (an endpoint's
//!   driver lives on the runtime that made it), and the builder keeps it between
//!   connections, so a reconnect or the next 0-RTT attempt skips binding.
//!   `RpcClient::connect(addr)` uses a throwaway builder: its endpoint closes
//!   with the client. `close()` waits for the endpoint to go idle (≤ 1 s, so the
//!   CONNECTION_CLOSE leaves before a process exits) only when no other client
//!   shares it.
//! - **Handlers are a trait; the macro is sugar.** `trait Handler { fn
//!   method(&self) -> &str; fn call(&self, Context, Payload) -> BoxFuture<'static,
//!   Result<Payload, Status>> }`. `#[handler("name")]` implements it for a unit
//!   struct named like the function (the function stays callable as
//!   `NAME::invoke`) and submits it to an `inventory` registry, so
//!   `.register_all()` registers every handler linked into the binary;
//!   `handler_fn(name, closure)` is the macro-free form. Several arguments are
//!   decoded from a tuple. A handler returns `Result<T, E>`, `T: Serialize`,
//!   `E: Into<Status>` (`echostream::Error` converts: its `Status` variant keeps
//!   the chosen code, `Remote` propagates a downstream status, anything else
//!   becomes `INTERNAL`). `request::<A, R>` is generic over any serde argument
//!   and result; a `()` result is written `let () = client.request(...).await?`
//!   because Rust cannot infer an unconstrained result type.
//!   `request_with(method, args, CallOptions)` sets timeout, metadata, codec.
//! - **`Context`**: method, request id, metadata, deadline, peer address,
//!   connection id, peer certificate fingerprint, hello metadata, identity, and
//!   `peer()`.
//! - **Symmetric peers.** After the handshake each side has a router of
//!   handlers and listeners (client ones registered with
//!   `RpcClient::builder().handler(h).listener(l)`) and calls the other through
//!   a `Peer`. A handler's `ctx.peer()` may be kept after the handler returns;
//!   its calls fail with `ConnectionClosed` once the peer is gone, and
//!   `Peer::closed().await` resolves with that error. `RpcServer::methods()`
//!   lists what a server answers. What the peer asks of a side passes the same
//!   protections on both sides, set with the same builder methods and on by
//!   the same defaults (`SharedOptions`): interceptors, rate limits, the
//!   default handler timeout, the concurrency cap and byte budget of requests,
//!   the event queue, frame and stream limits; so a client is as safe from a
//!   hostile server as a server from a hostile client.
//! - **Events.** `emit` encodes in the caller's task, waits for room in the
//!   bounded write queue and returns once the event is queued (not when the peer
//!   processed it). Events from one sender on one connection are delivered in
//!   order (one control stream, one in-order event task); those queued or in
//!   flight when a connection drops are lost with it (fire-and-forget: use a
//!   request when an acknowledgement matters). Listeners of a name run one event
//!   at a time in registration order; a listener error, an undecodable payload
//!   or a panic is logged with the event name and counted (`failed_events()`),
//!   and the next event proceeds. The listener queue is bounded (`event_queue`,
//!   16,384 events, 64 MiB of payload) and the connection's reader never waits
//!   for it: listeners are user code and may wait for that reader (a listener
//!   that calls its peer back needs the reader to read the answer). Instead
//!   the sender's `emit` waits for **event credit**: each side announces its
//!   queue in the hello, and a sender never has more events unprocessed at the
//!   receiver than that (the receiver gives credit back as its listeners
//!   finish). An event that finds the queue full anyway (a peer that ignores
//!   credit) is **dropped, counted and logged** (`Peer::events_dropped()`,
//!   `echostream.events.dropped{policy="queue_full"}`, a `warn` line at the
//!   start and the end of each run of drops).
//! - **Subscriptions** (`subscribe::<T>(name)` on a client or server handle): a
//!   bounded buffer each (1024). A slow consumer gets **counted drops** for that
//!   subscription only (`dropped()`), so it never slows the connection or the
//!   listeners; undecodable events are skipped and counted (`undecodable()`).
//!   Listeners are the choice when every event must be processed.
//! - **Server handle** (`server.handle()`, `ctx.server()`): `peers()`,
//!   `peer(id)`, `connection_count()`, `broadcast(name, value)`,
//!   `connection_events()`, `subscribe`, `shutdown()`. `broadcast` encodes once
//!   and queues on every connection concurrently; a peer whose write queue stays
//!   full for `slow_peer_timeout` (default 2 s: it stopped reading and flow
//!   control filled up), or whose listeners give no event credit back for
//!   that long, is disconnected with `SLOW_CONSUMER` (8) and a reason,
//!   and listed in the `BroadcastReport`; the others are never held up by it.
//!   Events are not silently dropped for a connected peer.
//! - **Connection life-cycle.** `connection_events()` is a bounded broadcast
//!   channel (1024; a lagging receiver counts what it missed) of `Connected` /
//!   `Disconnected { reason }` with a `ConnectionInfo` (addresses, ids,
//!   fingerprint, hello metadata, RTT and quinn's traffic statistics, calls
//!   pending and running; also `peer.info()`, `client.info()`). Admission:
//!   `ConnectionPolicy::approve_all()` (default) or `approve_via_event(queue)`,
//!   which hands the application a `ConnectionRequest` after the hello was
//!   validated and the client authenticated, before the welcome: it carries
//!   who connects (`identity()` from a token or the client certificate,
//!   `certificate()` with fingerprint, names and DER, the hello `metadata()`)
//!   as well as `remote_addr()`, so a policy can admit by identity;
//!   `reject(reason)`, a full decision queue or no answer within the handshake
//!   timeout close with `REJECTED` and a reason (the client gets
//!   `Error::Rejected { reason }`). `max_connections` (10,000) closes the
//!   connection over the limit with `REJECTED`; under a flood, attempts beyond
//!   the limits are refused before any TLS work.
//! - **Liveness.** Keep-alive (10 s) and idle timeout (30 s) on both builders.
//!   A vanished peer is noticed within the idle timeout: every pending call
//!   fails with `ConnectionClosed` ("did not answer within the idle timeout"),
//!   its handlers are aborted, the server forgets it, and every pending XStream
//!   read and write on both sides fails with `StreamError::ConnectionLost`,
//!   never a clean end (`tests/faults_streams.rs` cuts a relay under 16 pending
//!   operations).
//! - **Reconnect** (`ClientBuilder::reconnect(ReconnectPolicy)`): a supervisor
//!   task per client waits for the connection to end (not after `close()` or
//!   drop), then reconnects on the same UDP endpoint with the same options,
//!   backing off from `initial_backoff` (100 ms) doubling to `max_backoff`
//!   (5 s), optionally giving up after `max_attempts`. The router is shared, so
//!   nothing is registered again. Calls made while disconnected fail fast, or
//!   with `wait_for_connection` wait for the new connection up to their own
//!   timeout. A call in flight when the connection drops fails and is never
//!   resent (it may have run). **What a reconnect keeps**: everything the
//!   builder registered (handlers, listeners, stream handlers) and every
//!   `subscribe` (they deliver the new connection's events), the trust state
//!   (known-hosts entries, pins, resumption tickets). **What it cannot keep**:
//!   open streams (their pending and later operations fail with
//!   `StreamError::ConnectionLost`; open a new one), `accept` registrations and
//!   `SyncedClock` handles made on the old `Peer` (take `client.clock()` again:
//!   the new connection syncs from scratch), and calls in flight.
//!   `tests/restart.rs` checks this across a graceful restart and across a
//!   server process killed with SIGKILL and started again.
//!   `RpcClient::connection_events()` reports each
//!   end (`Disconnected`) and each new connection (`Connected`) on the client's
//!   side; it is lazy (no task: it watches the current `Peer` and the
//!   supervisor's generation counter) and ends once no connection will come.
//! - **Resumption and 0-RTT.** Client `resumption`/`zero_rtt` on by default
//!   (tickets per server address, shared by a builder and its clones;
//!   `RpcClient::can_resume()`), server `zero_rtt` off by default. Only calls
//!   marked idempotent on the client (`ClientBuilder::idempotent("method")`,
//!   `CallOptions::new().idempotent()`) and on the server (`#[handler("x",
//!   idempotent)]`, `handler_fn(..).mark_idempotent()`) run from early data.
//!   `Peer::zero_rtt()` (`NotAttempted`, `Pending`, `Accepted`, `Rejected`, also
//!   in `ConnectionInfo`) and `Peer::is_early()` report what happened. Wire
//!   rules: `docs/PROTOCOL.md` §10;
//!   replay and defaults: `docs/SECURITY.md` ("0-RTT early data and replay").

pub mod auth;
#[cfg(feature = "discovery")]
pub mod balance;
pub mod client;
pub mod context;
pub mod discovery;
pub mod handler;
pub mod health;
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

pub use crate::protocol::{CallOptions, ClockEstimate, ConnectionInfo, Peer, ZeroRtt};
#[cfg(feature = "discovery")]
pub use balance::{Balancer, InstanceStats};
pub use client::{ClientBuilder, ClientConnectionEvents, ReconnectPolicy, RpcClient, SessionCache};
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
    ConnectionRequests, ConnectionStatus, RpcServer, ServerBuilder, ServerHandle, ServerLimits, ServerStatus,
    ShutdownHandle,
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
pub(crate) struct Router {
    handlers: HashMap<String, Arc<dyn Handler>>,
    /// Each handler with its metric handles, for the call path (one lookup for both).
    routes: HashMap<String, Route>,
    /// The metric handles of calls to methods not registered here.
    unknown_metrics: Arc<crate::metrics::CallMetrics>,
    listeners: HashMap<String, Vec<Arc<dyn Listener>>>,
    /// Events a listener could not decode or that failed.
    bad_events: AtomicU64,
    /// Typed subscriptions added at run time.
    pub(crate) subscriptions: Arc<subscribe::Subscriptions>,
    /// Stream names accepted here (handlers and `accept`), shared by every connection.
    streams: Arc<crate::stream::Registry>,
}

/// A handler and the metric handles of its method.
pub(crate) struct Route {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) metrics: Arc<crate::metrics::CallMetrics>,
}

impl Router {
    /// The route of `method`, if registered.
    pub(crate) fn route(&self, method: &str) -> Option<&Route> {
        self.routes.get(method)
    }

    /// The metric handles calls to unregistered methods count under.
    pub(crate) fn unknown_metrics(&self) -> &Arc<crate::metrics::CallMetrics> {
        &self.unknown_metrics
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
        let routes = handlers
            .iter()
            .map(|(name, h)| {
                let route = Route {
                    handler: h.clone(),
                    metrics: crate::metrics::CallMetrics::new(crate::metrics::CallSide::Server, name),
                };
                (name.clone(), route)
            })
            .collect();
        Ok(Router {
            handlers,
            routes,
            unknown_metrics: crate::metrics::CallMetrics::new(
                crate::metrics::CallSide::Server,
                crate::metrics::UNKNOWN_METHOD_LABEL,
            ),
            listeners,
            bad_events: AtomicU64::new(0),
            subscriptions: Arc::default(),
            streams: Arc::new(self.build_streams()?),
        })
    }
}
