//! Listeners: functions run for each one-way event of a name.

use crate::rpc::{decode_args, Context, Payload};
use echostream_types::descriptor::EventInfo;
use echostream_types::Status;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;

/// Receives the events of one name. Several listeners of one name all run,
/// in registration order, one event at a time per connection.
pub trait Listener: Send + Sync + 'static {
    /// The event name.
    fn event(&self) -> &str;
    /// Handles one encoded event. An error (for example a payload that does
    /// not decode) is logged with the event name and counted.
    fn call(&self, ctx: Context, payload: Payload) -> BoxFuture<'static, Result<(), Status>>;

    /// Identifies the listener's type, so `register_all()` does not add a
    /// listener that was also registered explicitly.
    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// What reflection (`echostream.describe`) reports about it; by default its name alone.
    fn describe(&self) -> EventInfo {
        EventInfo::unknown(self.event())
    }
}

/// What a listener may return: nothing, or `Result<(), E>` whose error is
/// logged with the event name and counted.
#[diagnostic::on_unimplemented(
    message = "a listener must return `()` or `Result<(), E>` with `E: Into<Status>`; found `{Self}`",
    label = "listener return type"
)]
pub trait ListenerResult: Send {
    /// Converts into the listener's outcome.
    fn into_outcome(self) -> Result<(), Status>;
}

impl ListenerResult for () {
    fn into_outcome(self) -> Result<(), Status> {
        Ok(())
    }
}

impl<E: Into<Status> + Send> ListenerResult for Result<(), E> {
    fn into_outcome(self) -> Result<(), Status> {
        self.map_err(Into::into)
    }
}

/// A listener registered for `register_all()`: what `#[listener]` submits
/// to the link-time registry.
#[derive(Debug)]
pub struct ListenerRegistration {
    /// Returns the listener.
    pub make: fn() -> Arc<dyn Listener>,
    /// Its event name, for listing.
    pub event: &'static str,
}

inventory::collect!(ListenerRegistration);

/// All listeners submitted with `#[listener]` anywhere in the binary.
pub fn registered_listeners() -> impl Iterator<Item = &'static ListenerRegistration> {
    inventory::iter::<ListenerRegistration>.into_iter()
}

/// A listener made from an event name and an async closure.
pub fn listener_fn<T, F, Fut>(event: impl Into<String>, f: F) -> FnListener<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Context, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    FnListener {
        event: event.into(),
        f: Arc::new(f),
        _arg: std::marker::PhantomData,
    }
}

/// See [`listener_fn`].
pub struct FnListener<T, F> {
    event: String,
    f: Arc<F>,
    _arg: std::marker::PhantomData<fn(T)>,
}

impl<T, F> std::fmt::Debug for FnListener<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnListener").field("event", &self.event).finish()
    }
}

impl<T, F, Fut> Listener for FnListener<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Context, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn event(&self) -> &str {
        &self.event
    }

    fn call(&self, ctx: Context, payload: Payload) -> BoxFuture<'static, Result<(), Status>> {
        let f = self.f.clone();
        Box::pin(async move {
            let v: T = decode_args(&ctx, &payload)?;
            f(ctx, v).await;
            Ok(())
        })
    }

    fn describe(&self) -> EventInfo {
        EventInfo::unknown(self.event()).with_type::<T>()
    }
}
