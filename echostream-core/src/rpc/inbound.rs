//! The RPC layer's side of one connection: what the protocol hands up through
//! [`Inbound`](crate::protocol::Inbound) (requests, events, stream opens) meets the router and
//! the security policy here.
//!
//! A request is checked (rate limits, handler lookup, 0-RTT idempotency, the byte budget), given
//! its deadline and [`Context`], and its handler (behind the interceptors, if any) is polled
//! once right in the connection's reader: most answer without waiting, and their answer goes
//! back to the reader to be batched with the others from the same read (no task spawned, no hop
//! to another thread). A handler that waits continues through [`Peer::spawn_call`].

use crate::protocol::{in_span, Context, Inbound, Payload, Peer};
use crate::rpc::security::{self, ConnGuard, SecurityPolicy};
use crate::rpc::{Router, ServerHandle};
use echostream_types::{Code, EventFrame, Metadata, RequestFrame, Status};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

/// The RPC state of one connection: the router, the server it belongs to, the peer's identity
/// and rate-limit buckets.
pub(crate) struct ConnInbound {
    router: Arc<Router>,
    /// The server this connection belongs to (server side only).
    pub(crate) server: Option<ServerHandle>,
    pub(crate) guard: ConnGuard,
}

impl ConnInbound {
    pub(crate) fn new(
        conn: &quinn::Connection,
        router: Arc<Router>,
        server: Option<ServerHandle>,
        policy: Arc<SecurityPolicy>,
        auth: crate::rpc::auth::PeerAuth,
    ) -> Arc<Self> {
        Arc::new(Self {
            router,
            server,
            guard: ConnGuard::new(conn, policy, auth),
        })
    }
}

/// The RPC state of the connection `peer` is a handle to.
pub(crate) fn of(peer: &Peer) -> Option<&ConnInbound> {
    peer.inbound().as_any().downcast_ref()
}

impl Inbound for ConnInbound {
    fn request(&self, peer: &Peer, req: RequestFrame) -> Option<Result<Payload, Status>> {
        let id = req.id;
        let method = req.method;
        let started = Instant::now();
        let route = self.router.route(&method);
        // Labels are the registered names only: an unknown name counts as `_unknown`.
        let metrics = route.map_or(self.router.unknown_metrics(), |r| &r.metrics);
        metrics.started(req.payload.len());
        let refuse = |status: Status| {
            metrics.finished(started, Err(status.code()));
            Some(Err(status))
        };
        if let Err(status) = self.guard.check_rate(&method) {
            crate::metrics::rate_limited(metrics.method());
            return refuse(status);
        }
        let Some(route) = route else {
            tracing::debug!(method, id, "unknown method");
            let msg = format!("no handler for method `{method}`");
            return refuse(Status::new(Code::UNKNOWN_METHOD, msg));
        };
        let handler = route.handler.clone();
        let metrics = route.metrics.clone();
        if let Some(status) = peer.refuse_early(&method, handler.idempotent()) {
            metrics.finished(started, Err(status.code()));
            return Some(Err(status));
        }
        let reservation = match peer.budgets().reserve_request_bytes(&method, req.payload.len()) {
            Ok(r) => r,
            Err(status) => {
                metrics.finished(started, Err(status.code()));
                return Some(Err(status));
            }
        };
        let deadline = self
            .guard
            .handler_deadline(req.deadline)
            .map(|d| Instant::now() + d);
        let ctx = Context::new(method, Some(id), req.metadata, deadline, peer.clone());
        // Made only when debug logs are on: even a disabled span costs per call when
        // tracing's `log` feature is on.
        let span = if let Some(span) = crate::protocol::trace::server_span(ctx.method(), ctx.metadata()) {
            // The caller's trace continues here (feature `otel`).
            span
        } else if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug_span!("call", method = %ctx.method(), id)
        } else {
            tracing::Span::none()
        };
        let args = Payload {
            codec: req.codec,
            bytes: req.payload,
        };
        // With interceptors the call is the chain, then the handler; without, the handler's
        // own future (already boxed by `Handler::call`), so the common case boxes nothing more.
        let mut call: BoxFuture<'static, Result<Payload, Status>> = if self.guard.has_chain() {
            Box::pin(security::guarded_call(
                self.guard.policy().clone(),
                handler,
                ctx.clone(),
                args,
            ))
        } else {
            handler.call(ctx.clone(), args)
        };
        // Polled with a no-op waker: if it is not ready, the task polls it again at once with
        // its own waker, as the `Future` contract allows. The deadline cannot have passed
        // during one poll that found the call ready.
        let first = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().now_or_never()))
        };
        match first {
            Ok(Some(result)) => {
                let result = record(&metrics, started, finished(&ctx, result));
                return Some(result.map(|p| ctx.reply_payload(p)));
            }
            Err(panic) => return Some(record(&metrics, started, panicked(&ctx, &panic))),
            Ok(None) => {}
        }
        let method = ctx.method().to_owned();
        peer.spawn_call(
            id,
            method,
            in_span(
                async move {
                    let result = finish_call(call, ctx.clone(), reservation, deadline).await;
                    record(&metrics, started, result).map(|p| ctx.reply_payload(p))
                },
                span,
            ),
        );
        None
    }

    fn event<'a>(&'a self, peer: &'a Peer, ev: EventFrame) -> BoxFuture<'a, ()> {
        Box::pin(self.on_event(peer, ev))
    }

    fn stream_open<'a>(
        &'a self,
        peer: &'a Peer,
        name: &'a str,
        metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<Context, Status>> {
        Box::pin(security::stream_open_with(&self.guard, peer, name, metadata))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl ConnInbound {
    /// Runs the event's listeners one after the other, then offers it to subscriptions.
    async fn on_event(&self, peer: &Peer, ev: EventFrame) {
        let router = &self.router;
        crate::metrics::event_received();
        let listeners = router.listeners(&ev.name);
        let args = Payload {
            codec: ev.codec,
            bytes: ev.payload,
        };
        if listeners.is_empty() && !router.subscriptions.has(&ev.name) {
            tracing::debug!(event = %ev.name, "event with no listener or subscription");
            crate::metrics::event_dropped("no_listener");
            return;
        }
        if let Err(status) = security::check_event(&self.guard, peer, &ev.name, &ev.metadata).await {
            router.count_bad_event();
            crate::metrics::event_dropped("refused");
            tracing::warn!(event = %ev.name, peer = %peer.remote_addr(), error = %status, "event refused");
            return;
        }
        for l in listeners {
            let ctx = Context::new(ev.name.clone(), None, ev.metadata.clone(), None, peer.clone());
            let fut = AssertUnwindSafe(l.call(ctx, args.clone())).catch_unwind();
            match fut.await {
                Ok(Ok(())) => {}
                Ok(Err(status)) => {
                    router.count_bad_event();
                    tracing::warn!(event = %ev.name, peer = %peer.remote_addr(), error = %status, "listener failed");
                }
                Err(p) => {
                    router.count_bad_event();
                    tracing::error!(event = %ev.name, panic = panic_message(&p), "listener panicked");
                }
            }
        }
        router.subscriptions.deliver(&ev.name, peer, &args);
    }
}

/// The rest of a handler call that did not finish on its first poll: the deadline applies,
/// panics become a status. `reservation` holds the argument's bytes against the
/// connection's budget until the call ends.
async fn finish_call(
    call: futures::future::BoxFuture<'static, Result<Payload, Status>>,
    ctx: Context,
    reservation: Option<tokio::sync::OwnedSemaphorePermit>,
    deadline: Option<Instant>,
) -> Result<Payload, Status> {
    let _reservation = reservation;
    let fut = AssertUnwindSafe(call).catch_unwind();
    let result = match deadline {
        Some(d) => match tokio::time::timeout_at(d.into(), fut).await {
            Ok(r) => r,
            Err(_) => Ok(Err(Status::new(
                Code::DEADLINE_EXCEEDED,
                format!(
                    "handler for `{}` did not finish before the caller's deadline",
                    ctx.method()
                ),
            ))),
        },
        None => fut.await,
    };
    match result {
        Ok(result) => finished(&ctx, result),
        Err(panic) => panicked(&ctx, &panic),
    }
}

/// A handler's result, logged when it is an error.
fn finished(ctx: &Context, result: Result<Payload, Status>) -> Result<Payload, Status> {
    if let Err(s) = &result {
        tracing::debug!(method = ctx.method(), code = %s.code(), "handler returned an error");
    }
    result
}

/// Records a finished call in its method's metrics and passes the result on.
fn record(
    metrics: &crate::metrics::CallMetrics,
    started: Instant,
    result: Result<Payload, Status>,
) -> Result<Payload, Status> {
    metrics.finished(
        started,
        result.as_ref().map(|p| p.bytes.len()).map_err(Status::code),
    );
    result
}

/// The status answering a call whose handler panicked.
fn panicked(ctx: &Context, panic: &Box<dyn std::any::Any + Send>) -> Result<Payload, Status> {
    let msg = panic_message(panic);
    tracing::error!(method = ctx.method(), panic = msg, "handler panicked");
    Err(Status::new(
        Code::HANDLER_PANICKED,
        format!("handler for `{}` failed: it panicked: {msg}", ctx.method()),
    ))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}
