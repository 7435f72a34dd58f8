//! The health service over real QUIC: `echostream.health` answers per service, the watch
//! stream pushes changes, a graceful shutdown says NOT_SERVING before connections close, and
//! both go through the interceptors like any call.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::health::{HealthStatus, HEALTH_METHOD, HEALTH_WATCH_STREAM};
use echostream::rpc::{interceptor_fn, CallKind};
use echostream::types::Code;
use echostream::{Caller, ServerIdentity};

/// A running server with its handle, stop switch and task, and a client pinned to it.
async fn started() -> (
    RpcClient,
    echostream::rpc::ServerHandle,
    echostream::rpc::ShutdownHandle,
    tokio::task::JoinHandle<Result<()>>,
) {
    init_tracing();
    let srv = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()
        .unwrap();
    let (addr, fp, handle) = (srv.local_addr().to_string(), srv.fingerprint(), srv.handle());
    let stop = srv.shutdown_handle();
    let task = tokio::spawn(srv.run());
    let c = RpcClient::builder().pin(fp).connect(&addr).await.unwrap();
    (c, handle, stop, task)
}

async fn recv(w: &StreamReceiver<HealthStatus>) -> Option<HealthStatus> {
    tokio::time::timeout(WAIT, w.recv())
        .await
        .expect("a health message in time")
}

#[tokio::test]
async fn health_answers_per_service_and_follows_the_handle() {
    let (c, handle, stop, task) = started().await;
    assert_eq!(c.health("").await.unwrap(), HealthStatus::Serving);
    assert_eq!(c.health("math").await.unwrap(), HealthStatus::ServiceUnknown);
    handle.set_not_serving("math");
    assert_eq!(c.health("math").await.unwrap(), HealthStatus::NotServing);
    assert_eq!(handle.health("math"), HealthStatus::NotServing);
    handle.set_serving("math");
    assert_eq!(c.health("math").await.unwrap(), HealthStatus::Serving);
    // Plain JSON callers (other languages, the CLI) get the gRPC names.
    let raw: serde_json::Value = c
        .request_with(
            HEALTH_METHOD,
            "",
            CallOptions::new().codec(echostream::Codec::Json),
        )
        .await
        .unwrap();
    assert_eq!(raw, "SERVING");
    // Reflection lists both registrations.
    let d = c.describe().await.unwrap();
    assert!(d.method(HEALTH_METHOD).is_some_and(|m| m.idempotent));
    assert!(d.stream(HEALTH_WATCH_STREAM).is_some());
    stop.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_watch_gets_the_status_now_then_each_change() {
    let (c, handle, stop, task) = started().await;
    let whole = c.watch_health("").await.unwrap();
    let db = c.watch_health("db").await.unwrap();
    assert_eq!(recv(&whole).await, Some(HealthStatus::Serving));
    assert_eq!(recv(&db).await, Some(HealthStatus::ServiceUnknown));
    handle.set_not_serving("db");
    assert_eq!(recv(&db).await, Some(HealthStatus::NotServing));
    handle.set_serving("db");
    assert_eq!(recv(&db).await, Some(HealthStatus::Serving));
    // Setting the same status again pushes nothing; the next change arrives next.
    handle.set_serving("db");
    handle.set_not_serving("");
    assert_eq!(recv(&whole).await, Some(HealthStatus::NotServing));
    // A watcher that goes away ends its handler (the shutdown below does not wait for it).
    drop(db);
    // Graceful shutdown: NOT_SERVING reaches the watcher before the connection closes, then
    // the stream ends cleanly.
    handle.set_serving("");
    assert_eq!(recv(&whole).await, Some(HealthStatus::Serving));
    let started = std::time::Instant::now();
    stop.shutdown();
    assert_eq!(recv(&whole).await, Some(HealthStatus::NotServing));
    assert_eq!(recv(&whole).await, None);
    task.await.unwrap().unwrap();
    assert!(started.elapsed() < WAIT);
}

#[tokio::test]
async fn health_goes_through_the_interceptors_and_can_be_turned_off() {
    init_tracing();
    let s = serve(
        RpcServer::builder().interceptor(interceptor_fn(|ctx: &Context, kind: CallKind| {
            if ctx.method().starts_with("echostream.health") {
                return Err(Status::new(
                    Code::PERMISSION_DENIED,
                    format!("no health for strangers ({kind:?})"),
                ));
            }
            Ok(())
        })),
    );
    let c = connect(&s).await;
    let err = c.health("").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(c.watch_health("").await.is_err());

    let off = serve(RpcServer::builder().health_service(false));
    let c = connect(&off).await;
    let err = c.health("").await.unwrap_err();
    assert!(matches!(err, Error::UnknownMethod { .. }), "{err:?}");
    // A user handler may take the name only when the service is off.
    let taken = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(echostream::rpc::handler_fn(
            HEALTH_METHOD,
            |_c: Context, _: String| async { Ok::<_, Error>("mine") },
        ))
        .build();
    assert!(taken.is_err(), "a duplicate of the reserved name must be refused");
}
