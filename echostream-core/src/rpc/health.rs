//! The health service: a status per service name that a probe, a load balancer or the
//! command-line tool can ask for (`echostream.health`) or follow (`echostream.health.watch`).
//!
//! Every server has it unless built with `.health_service(false)`. The whole server (service
//! name `""`) starts `SERVING`; other names are `SERVICE_UNKNOWN` until the application sets
//! them with [`ServerHandle::set_serving`](crate::rpc::ServerHandle::set_serving) and
//! [`set_not_serving`](crate::rpc::ServerHandle::set_not_serving). A graceful shutdown sets
//! every service `NOT_SERVING` first and lets the watchers send that before the connections
//! close, so a balancer stops sending calls before they would fail.
//!
//! Both are ordinary registrations (a handler and a stream handler): they go through the
//! interceptors, rate limits and stream decision like any other, and reflection lists them.
//! Clients ask with [`Caller::health`](crate::rpc::Caller::health) and
//! [`Caller::watch_health`](crate::rpc::Caller::watch_health).

use crate::rpc::{decode_args, Context, Handler, Payload};
use crate::stream::{StreamHandler, StreamSender, XStream};
use echostream_types::descriptor::{MethodInfo, StreamInfo};
pub use echostream_types::health::{
    HealthStatus, HEALTH_METHOD, HEALTH_SERVICE_METADATA, HEALTH_WATCH_STREAM,
};
use echostream_types::{Codec, Status};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The statuses of one server, shared by its handle and the two registrations.
#[derive(Debug)]
pub(crate) struct Health {
    /// Service name → status; `""` is the whole server. Watchers wait on changes.
    states: watch::Sender<BTreeMap<String, HealthStatus>>,
    /// Set by a graceful shutdown: watchers send the final statuses and end their streams.
    draining: watch::Sender<bool>,
    /// Watch streams running, so a shutdown can wait for their last message.
    watchers: AtomicUsize,
    watchers_gone: Notify,
}

impl Health {
    pub(crate) fn new() -> Arc<Self> {
        let mut states = BTreeMap::new();
        states.insert(String::new(), HealthStatus::Serving);
        Arc::new(Health {
            states: watch::channel(states).0,
            draining: watch::channel(false).0,
            watchers: AtomicUsize::new(0),
            watchers_gone: Notify::new(),
        })
    }

    pub(crate) fn set(&self, service: &str, status: HealthStatus) {
        self.states
            .send_if_modified(|states| states.insert(service.to_owned(), status) != Some(status));
    }

    pub(crate) fn get(&self, service: &str) -> HealthStatus {
        self.states
            .borrow()
            .get(service)
            .copied()
            .unwrap_or(HealthStatus::ServiceUnknown)
    }

    pub(crate) fn all(&self) -> BTreeMap<String, HealthStatus> {
        self.states.borrow().clone()
    }

    /// The start of a graceful shutdown: every service `NOT_SERVING`, then wait (at most
    /// `limit`) until each watcher has sent it and ended its stream.
    pub(crate) async fn drain(&self, limit: Duration) {
        self.states.send_modify(|states| {
            for status in states.values_mut() {
                *status = HealthStatus::NotServing;
            }
        });
        self.draining.send_replace(true);
        let _ = tokio::time::timeout(limit, async {
            loop {
                let gone = self.watchers_gone.notified();
                if self.watchers.load(Ordering::Acquire) == 0 {
                    return;
                }
                gone.await;
            }
        })
        .await;
    }
}

/// Answers `echostream.health`: the status of the service named by the argument.
pub(crate) struct CheckHandler(pub(crate) Arc<Health>);

impl Handler for CheckHandler {
    fn method(&self) -> &str {
        HEALTH_METHOD
    }

    /// A read: safe on 0-RTT early data.
    fn idempotent(&self) -> bool {
        true
    }

    fn call(&self, ctx: Context, args: Payload) -> BoxFuture<'static, Result<Payload, Status>> {
        let answer = decode_args::<String>(&ctx, &args).and_then(|service| {
            Payload::encode(args.codec, &self.0.get(&service)).map_err(|e| {
                Status::new(
                    echostream_types::Code::INTERNAL,
                    format!("health answer did not encode: {e}"),
                )
            })
        });
        Box::pin(async move { answer })
    }

    fn describe(&self) -> MethodInfo {
        MethodInfo::unknown(HEALTH_METHOD)
            .with_types::<String, HealthStatus>()
            .with_idempotent(true)
    }
}

/// Serves `echostream.health.watch`: the status now, then every change, as JSON messages,
/// until the opener closes the stream or the server drains.
pub(crate) struct WatchHandler(pub(crate) Arc<Health>);

/// Counts a watcher for [`Health::drain`] while it lives.
struct Watching(Arc<Health>);

impl Drop for Watching {
    fn drop(&mut self) {
        if self.0.watchers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.watchers_gone.notify_waiters();
        }
    }
}

impl StreamHandler for WatchHandler {
    fn name(&self) -> &str {
        HEALTH_WATCH_STREAM
    }

    fn call(&self, _ctx: Context, stream: XStream) -> BoxFuture<'static, Result<(), Status>> {
        let health = self.0.clone();
        health.watchers.fetch_add(1, Ordering::AcqRel);
        let watching = Watching(health.clone());
        Box::pin(async move {
            let _watching = watching;
            let service = stream
                .metadata()
                .get_str(HEALTH_SERVICE_METADATA)
                .unwrap_or_default()
                .to_owned();
            let mut states = health.states.subscribe();
            let mut draining = health.draining.subscribe();
            let sender = StreamSender::new(stream, Codec::Json);
            let mut last = None;
            loop {
                let now = states
                    .borrow_and_update()
                    .get(&service)
                    .copied()
                    .unwrap_or(HealthStatus::ServiceUnknown);
                if last != Some(now) {
                    // The opener went away: nothing more to do.
                    if sender.send(now).await.is_err() {
                        return Ok(());
                    }
                    last = Some(now);
                }
                if *draining.borrow_and_update() {
                    let _ = sender.finish().await;
                    return Ok(());
                }
                tokio::select! {
                    changed = states.changed() => if changed.is_err() { return Ok(()) },
                    _ = draining.changed() => {}
                    // The opener sends nothing: its data ending (or the stream dropped, or
                    // the connection lost) means it stopped watching.
                    _ = sender.xstream().read_chunk() => return Ok(()),
                }
            }
        })
    }

    fn describe(&self) -> StreamInfo {
        StreamInfo::unknown(HEALTH_WATCH_STREAM).with_type::<HealthStatus>()
    }
}
