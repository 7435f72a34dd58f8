//! Faults through the lossy relay: loss, reordering and delay; a link cut longer than the idle
//! timeout; reconnection once it heals.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, ReconnectPolicy};
use echostream::testing::{Impairment, Relay};
use echostream::ServerIdentity;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_complete_through_loss_reordering_and_delay() {
    init_tracing();
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .max_concurrent_requests(20_000)
        .handler(handler_fn("double", |_c: Context, n: u64| async move {
            Ok::<_, Error>(n * 2)
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.run());
    let relay = Relay::start(
        handle.local_addr(),
        Impairment::delay(Duration::from_millis(20), Duration::from_millis(10)).with_loss(0.05),
        7,
    )
    .await
    .unwrap();
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .timeout(Duration::from_secs(120))
        .connect(&relay.local_addr().to_string())
        .await
        .unwrap();
    let started = Instant::now();
    let calls = (0..10_000u64).map(|i| {
        let c = c.clone();
        tokio::spawn(async move { (i, c.request::<_, u64>("double", i).await) })
    });
    let results = futures::future::join_all(calls).await;
    let mut ok = 0;
    for r in results {
        let (i, answer) = r.unwrap();
        assert_eq!(answer.unwrap(), i * 2, "call {i}");
        ok += 1;
    }
    let (forwarded, dropped) = relay.counts();
    eprintln!(
        "10,000 calls through 5% loss, 20 ms ± 10 ms: {:?}; datagrams forwarded {forwarded}, dropped {dropped}",
        started.elapsed()
    );
    assert_eq!(ok, 10_000);
    assert!(dropped > 0, "the relay dropped packets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_longer_than_the_idle_timeout_fails_every_pending_call_on_both_sides_then_reconnect_heals() {
    let server_side_results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started_callbacks = Arc::new(AtomicUsize::new(0));
    let (results, started_cb) = (server_side_results.clone(), started_callbacks.clone());
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .idle_timeout(Duration::from_secs(1))
        .keep_alive(Some(Duration::from_millis(200)))
        .handler(handler_fn("hang", |_c: Context, _: ()| async {
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        }))
        .handler(handler_fn("ping", |_c: Context, _: ()| async {
            Ok::<_, Error>("pong".to_string())
        }))
        // Starts server-to-client calls that hang on the client, to test the server's side.
        .handler(handler_fn("call_me_back", move |ctx: Context, n: u32| {
            let results = results.clone();
            let started = started_cb.clone();
            async move {
                for _ in 0..n {
                    let peer = ctx.peer().clone();
                    let results = results.clone();
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let r = peer
                            .request_with::<_, ()>("client.hang", (), CallOptions::new().no_timeout())
                            .await;
                        results.lock().unwrap().push(r);
                    });
                }
                Ok::<_, Error>(())
            }
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.run());
    let relay = Relay::start(handle.local_addr(), Impairment::none(), 3)
        .await
        .unwrap();
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .idle_timeout(Duration::from_secs(1))
        .keep_alive(Some(Duration::from_millis(200)))
        .connect_timeout(Duration::from_secs(1))
        .reconnect(ReconnectPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            ..Default::default()
        })
        .handler(handler_fn("client.hang", |_c: Context, _: ()| async {
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        }))
        .connect(&relay.local_addr().to_string())
        .await
        .unwrap();
    let () = c.request("call_me_back", 50u32).await.unwrap();
    let pending: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.request_with::<_, ()>("hang", (), CallOptions::new().no_timeout())
                    .await
            })
        })
        .collect();
    wait_until("the server has the calls", || {
        handle
            .peers()
            .iter()
            .map(|p| p.inflight_requests())
            .sum::<usize>()
            == 200
    })
    .await;
    assert_eq!(started_callbacks.load(Ordering::SeqCst), 50);
    let cut_at = Instant::now();
    relay.set_cut(true);
    for p in pending {
        let err = tokio::time::timeout(WAIT, p)
            .await
            .expect("no call hangs")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, Error::ConnectionClosed { reason, .. } if reason.contains("idle timeout")),
            "{err:?}"
        );
    }
    eprintln!("client calls failed {:?} after the cut", cut_at.elapsed());
    wait_until("every server-side call failed", || {
        server_side_results.lock().unwrap().len() == 50
    })
    .await;
    for r in server_side_results.lock().unwrap().iter() {
        assert!(matches!(r, Err(Error::ConnectionClosed { .. })), "{r:?}");
    }
    wait_until("the server forgot the connection", || {
        handle.connection_count() == 0
    })
    .await;
    // Heal: the client reconnects by itself and works again.
    relay.set_cut(false);
    wait_until("reconnected", || c.is_connected()).await;
    assert_eq!(c.request::<_, String>("ping", ()).await.unwrap(), "pong");
}
