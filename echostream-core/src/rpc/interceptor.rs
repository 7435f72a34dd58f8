//! Access control: interceptors that run before every request, event and stream open.
//!
//! An [`Interceptor`] sees the call's [`Context`] (method, metadata, peer address, the peer's
//! [`identity`](Context::identity) and certificate) and its [`CallKind`], and either lets the
//! call continue (`Ok(())`) or denies it with a [`Status`]; the caller receives that status
//! (`PERMISSION_DENIED` or `UNAUTHENTICATED` by convention) and the handler never runs.
//!
//! # Order
//!
//! For every incoming call, first denial wins:
//!
//! 1. connection level, once: TLS (and client certificates), the
//!    [`Authenticator`](crate::rpc::Authenticator), the connection policy;
//! 2. rate limits: per connection, then per method (`RATE_LIMITED`, checked before any task is
//!    spawned for the call);
//! 3. this side's interceptors, in registration order: [`ServerBuilder::interceptor`]
//!    (every call) and [`ServerBuilder::protect`] (calls whose name matches a pattern) share one
//!    ordered list; a client has the same ([`ClientBuilder::interceptor`],
//!    [`ClientBuilder::protect`]) for what its server asks of it;
//! 4. the handler's own guards ([`HandlerExt::require_authenticated`], ...), outermost first
//!    like tower layers: `h.require_authenticated().require_role("admin")` checks the role
//!    first;
//! 5. the handler.
//!
//! Events go through steps 1–3 (a denied event is dropped, logged and counted in
//! `failed_events()`); stream opens go through steps 1–3 as well, through
//! `rpc::security::check_stream_open` (called by the stream manager).
//!
//! [`ServerBuilder::interceptor`]: crate::rpc::ServerBuilder::interceptor
//! [`ServerBuilder::protect`]: crate::rpc::ServerBuilder::protect
//! [`ClientBuilder::interceptor`]: crate::rpc::ClientBuilder::interceptor
//! [`ClientBuilder::protect`]: crate::rpc::ClientBuilder::protect

use crate::rpc::{Context, Handler, Payload};
use echostream_types::{Code, Status};
use futures::future::BoxFuture;
use std::sync::Arc;

/// What kind of call an interceptor is looking at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// A request (the caller waits for the answer).
    Request,
    /// A one-way event.
    Event,
    /// An application stream being opened (the name is the stream name).
    StreamOpen,
}

/// Runs before a call and lets it continue or denies it.
pub trait Interceptor: Send + Sync + 'static {
    /// `Ok(())` lets the call continue; `Err(status)` denies it and the caller gets the status.
    fn intercept(&self, ctx: &Context, kind: CallKind) -> BoxFuture<'static, Result<(), Status>>;
}

impl std::fmt::Debug for dyn Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interceptor")
    }
}

impl<I: Interceptor + ?Sized> Interceptor for Arc<I> {
    fn intercept(&self, ctx: &Context, kind: CallKind) -> BoxFuture<'static, Result<(), Status>> {
        (**self).intercept(ctx, kind)
    }
}

/// An interceptor from a synchronous closure.
///
/// ```
/// # use echostream_core::rpc::{interceptor_fn, CallKind, Context};
/// # use echostream_types::{Code, Status};
/// // Only callers on the local host may use anything.
/// let local_only = interceptor_fn(|ctx: &Context, _kind: CallKind| {
///     if ctx.peer_addr().ip().is_loopback() {
///         Ok(())
///     } else {
///         Err(Status::new(Code::PERMISSION_DENIED, format!("`{}` is for local callers only", ctx.method())))
///     }
/// });
/// ```
pub fn interceptor_fn<F>(f: F) -> FnInterceptor<F>
where
    F: Fn(&Context, CallKind) -> Result<(), Status> + Send + Sync + 'static,
{
    FnInterceptor(f)
}

/// See [`interceptor_fn`].
pub struct FnInterceptor<F>(F);

impl<F> std::fmt::Debug for FnInterceptor<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnInterceptor")
    }
}

impl<F> Interceptor for FnInterceptor<F>
where
    F: Fn(&Context, CallKind) -> Result<(), Status> + Send + Sync + 'static,
{
    fn intercept(&self, ctx: &Context, kind: CallKind) -> BoxFuture<'static, Result<(), Status>> {
        Box::pin(std::future::ready((self.0)(ctx, kind)))
    }
}

/// Denies callers without an identity with `UNAUTHENTICATED`.
pub fn require_authenticated() -> RequireAuthenticated {
    RequireAuthenticated
}

/// See [`require_authenticated`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequireAuthenticated;

impl Interceptor for RequireAuthenticated {
    fn intercept(&self, ctx: &Context, _kind: CallKind) -> BoxFuture<'static, Result<(), Status>> {
        Box::pin(std::future::ready(authenticated(ctx).map(|_| ())))
    }
}

fn authenticated(ctx: &Context) -> Result<&crate::rpc::PeerIdentity, Status> {
    ctx.identity().ok_or_else(|| {
        Status::new(
            Code::UNAUTHENTICATED,
            format!(
                "`{}` requires an authenticated caller; {} did not authenticate",
                ctx.method(),
                ctx.peer_addr()
            ),
        )
    })
}

/// Denies callers without an identity (`UNAUTHENTICATED`) or without `role`
/// (`PERMISSION_DENIED`).
pub fn require_role(role: impl Into<String>) -> RequireRole {
    RequireRole { role: role.into() }
}

/// See [`require_role`].
#[derive(Clone, Debug)]
pub struct RequireRole {
    role: String,
}

impl Interceptor for RequireRole {
    fn intercept(&self, ctx: &Context, _kind: CallKind) -> BoxFuture<'static, Result<(), Status>> {
        let result = authenticated(ctx).and_then(|id| {
            if id.has_role(&self.role) {
                Ok(())
            } else {
                Err(Status::new(
                    Code::PERMISSION_DENIED,
                    format!(
                        "`{}` requires role `{}`; `{}` does not have it",
                        ctx.method(),
                        self.role,
                        id.name()
                    ),
                ))
            }
        });
        Box::pin(std::future::ready(result))
    }
}

/// Registration-time guards on one handler: `.handler(reboot.require_role("admin"))`.
pub trait HandlerExt: Handler + Sized {
    /// Runs `interceptor` before this handler.
    fn intercept(self, interceptor: impl Interceptor) -> Guarded<Self> {
        Guarded {
            inner: self,
            guard: Arc::new(interceptor),
        }
    }

    /// Only authenticated callers may call this handler.
    fn require_authenticated(self) -> Guarded<Self> {
        self.intercept(require_authenticated())
    }

    /// Only callers with `role` may call this handler.
    fn require_role(self, role: impl Into<String>) -> Guarded<Self> {
        self.intercept(require_role(role))
    }
}

impl<H: Handler> HandlerExt for H {}

/// A handler with a guard in front (see [`HandlerExt`]).
pub struct Guarded<H> {
    inner: H,
    guard: Arc<dyn Interceptor>,
}

impl<H: Handler> std::fmt::Debug for Guarded<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("method", &self.inner.method())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Handler for Guarded<H> {
    fn method(&self) -> &str {
        self.inner.method()
    }

    fn idempotent(&self) -> bool {
        self.inner.idempotent()
    }

    fn describe(&self) -> echostream_types::descriptor::MethodInfo {
        self.inner.describe()
    }

    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
        let check = self.guard.intercept(&ctx, CallKind::Request);
        let run = self.inner.call(ctx, args);
        Box::pin(async move {
            check.await?;
            run.await
        })
    }
}
