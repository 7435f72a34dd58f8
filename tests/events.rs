//! Events, subscriptions, calls from the server to the client, broadcast.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::ServerBuilder;
use echostream::rpc::{handler_fn, listener_fn};
use echostream::ServerIdentity;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not reached in time: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn ten_thousand_events_arrive_in_order() {
    init_tracing();
    let seen = Arc::new(Mutex::new(Vec::with_capacity(10_000)));
    let s2 = seen.clone();
    let s = serve(
        RpcServer::builder().listener(listener_fn("seq", move |_c: Context, n: u64| {
            s2.lock().unwrap().push(n);
            async {}
        })),
    );
    let c = connect(&s).await;
    for i in 0..10_000u64 {
        c.emit("seq", i).await.unwrap();
    }
    wait_until("all events", || seen.lock().unwrap().len() == 10_000).await;
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().copied().eq(0..10_000u64),
        "events out of order or missing"
    );
}

#[tokio::test]
async fn several_listeners_all_run_and_a_bad_payload_is_counted_without_disturbing_others() {
    let a = Arc::new(AtomicU64::new(0));
    let b = Arc::new(AtomicU64::new(0));
    let (a2, b2) = (a.clone(), b.clone());
    let s = serve(
        RpcServer::builder()
            .listener(listener_fn("n", move |_c: Context, n: u64| {
                a2.fetch_add(n, Ordering::SeqCst);
                async {}
            }))
            .listener(listener_fn("n", move |_c: Context, n: u64| {
                b2.fetch_add(n, Ordering::SeqCst);
                async {}
            }))
            .listener(listener_fn("boom", |_c: Context, _: ()| async {
                panic!("listener panic")
            })),
    );
    let handle_failed = {
        let c = connect(&s).await;
        c.emit("n", 5u64).await.unwrap();
        c.emit("n", "not a number").await.unwrap();
        c.emit("boom", ()).await.unwrap();
        c.emit("n", 7u64).await.unwrap();
        wait_until("both listeners saw 5 and 7", || {
            a.load(Ordering::SeqCst) == 12 && b.load(Ordering::SeqCst) == 12
        })
        .await;
        // The connection survived the undecodable event and the panic.
        c.emit("n", 1u64).await.unwrap();
        wait_until("one more", || a.load(Ordering::SeqCst) == 13).await;
        c
    };
    drop(handle_failed);
    let _ = s;
}

#[tokio::test]
async fn undecodable_events_are_counted_by_the_server() {
    let s_builder = RpcServer::builder().listener(listener_fn("n", |_c: Context, _n: u64| async {}));
    let server = s_builder
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.run());
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .connect(&handle.local_addr().to_string())
        .await
        .unwrap();
    c.emit("n", "text").await.unwrap();
    c.emit("n", vec![1u8, 2, 3]).await.unwrap();
    wait_until("two failures counted", || handle.failed_events() == 2).await;
}

#[tokio::test]
async fn subscription_yields_events_and_counts_drops_when_full() {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .listener(listener_fn("tick", |_c: Context, _n: u64| async {}))
        .build()
        .unwrap();
    let handle = server.handle();
    let mut sub = handle.subscribe::<u64>("tick");
    let processed = Arc::new(AtomicU64::new(0));
    let p2 = processed.clone();
    // A second listener tells us when the server has seen every event.
    let server = server;
    let addr = handle.local_addr().to_string();
    tokio::spawn(server.run());
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .connect(&addr)
        .await
        .unwrap();
    let mut live = handle.subscribe::<u64>("tick");
    tokio::spawn(async move {
        while live.recv().await.is_some() {
            p2.fetch_add(1, Ordering::SeqCst);
        }
    });
    for i in 0..1500u64 {
        c.emit("tick", i).await.unwrap();
    }
    wait_until("all events offered", || processed.load(Ordering::SeqCst) == 1500).await;
    // The unread subscription kept its first 1024 and counted the rest.
    let mut got = vec![];
    while got.len() < 1024 {
        got.push(tokio::time::timeout(WAIT, sub.recv()).await.unwrap().unwrap());
    }
    assert!(got.iter().copied().eq(0..1024u64));
    assert_eq!(sub.dropped(), 476);
}

#[tokio::test]
async fn client_subscription_receives_server_events() {
    let s = serve(
        RpcServer::builder().handler(handler_fn("notify_me", |ctx: Context, n: u32| async move {
            for i in 0..n {
                ctx.peer().emit("note", format!("note {i}")).await?;
            }
            Ok::<_, Error>(())
        })),
    );
    let c = connect(&s).await;
    let mut sub = c.subscribe::<String>("note");
    let () = c.request("notify_me", 3u32).await.unwrap();
    for i in 0..3 {
        assert_eq!(
            tokio::time::timeout(WAIT, sub.recv()).await.unwrap().unwrap(),
            format!("note {i}")
        );
    }
}

#[tokio::test]
async fn server_keeps_a_peer_handle_and_calls_the_client_after_the_handler_returned() {
    let kept: Arc<Mutex<Option<Peer>>> = Arc::default();
    let k2 = kept.clone();
    let s = serve(
        RpcServer::builder().handler(handler_fn("register", move |ctx: Context, _: ()| {
            *k2.lock().unwrap() = Some(ctx.peer().clone());
            async { Ok::<_, Error>(()) }
        })),
    );
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let g2 = got.clone();
    let c = client_for(&s)
        .handler(handler_fn("client.double", |_c: Context, n: i32| async move {
            Ok::<_, Error>(n * 2)
        }))
        .listener(listener_fn("client.news", move |_c: Context, s: String| {
            g2.lock().unwrap().push(s);
            async {}
        }))
        .connect(&s.addr)
        .await
        .unwrap();
    let () = c.request("register", ()).await.unwrap();
    let peer = kept.lock().unwrap().clone().unwrap();
    let doubled: i32 = peer.request("client.double", 21).await.unwrap();
    assert_eq!(doubled, 42);
    peer.emit("client.news", "hello from the server").await.unwrap();
    wait_until("client got the event", || got.lock().unwrap().len() == 1).await;
    // Once the client is gone, the kept handle fails with connection closed.
    c.close().await;
    drop(c);
    let err = tokio::time::timeout(WAIT, peer.request::<_, i32>("client.double", 1))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
}

/// A raw quinn client (no EchoStream client code) that completes the hello and then never reads
/// its control stream, with a small stream window so that flow control fills quickly.
async fn raw_client_that_stops_reading(
    addr: &str,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    (quinn::SendStream, quinn::RecvStream),
) {
    use echostream::types::{Frame, Hello, Metadata};
    let (crypto, _) =
        echostream::tls::client_crypto(&echostream::ClientTrust::dangerous_accept_any_certificate(), addr)
            .unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(16 * 1024));
    config.transport_config(Arc::new(transport));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    let conn = tokio::time::timeout(WAIT, ep.connect(addr.parse().unwrap(), "localhost").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut hello = bytes::BytesMut::new();
    Frame::Hello(Hello {
        version: 1,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    })
    .encode(&mut hello)
    .unwrap();
    send.write_all(&hello).await.unwrap();
    // The welcome came; from now on nothing is read.
    let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
        .await
        .unwrap()
        .unwrap();
    assert!(chunk.is_some(), "server answered the hello");
    (ep, conn, (send, recv))
}

fn broadcast_server() -> ServerBuilder {
    RpcServer::builder().slow_peer_timeout(Duration::from_millis(500))
}

#[tokio::test]
async fn broadcast_reaches_49_readers_while_one_client_that_does_not_read_is_disconnected() {
    const EVENTS: u64 = 2000;
    let server = broadcast_server()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()
        .unwrap();
    let handle = server.handle();
    let addr = handle.local_addr().to_string();
    tokio::spawn(server.run());
    let mut counters = vec![];
    let mut clients = vec![];
    for _ in 0..49 {
        let n = Arc::new(AtomicU64::new(0));
        let n2 = n.clone();
        let next = Arc::new(AtomicU64::new(0));
        let c = RpcClient::builder()
            .pin(handle.fingerprint())
            .listener(listener_fn(
                "chat",
                move |_c: Context, (i, _text): (u64, String)| {
                    // Every event, in order.
                    assert_eq!(next.fetch_add(1, Ordering::SeqCst), i);
                    n2.fetch_add(1, Ordering::SeqCst);
                    async {}
                },
            ))
            .connect(&addr)
            .await
            .unwrap();
        counters.push(n);
        clients.push(c);
    }
    // The slow client completes the hello, then never reads again (a wedged process: a
    // listener that never returns does not stop an EchoStream client's reader).
    let (slow_ep, slow, _control) = raw_client_that_stops_reading(&addr).await;
    wait_until("50 connected", || handle.connection_count() == 50).await;
    let mut evicted = vec![];
    let text = "x".repeat(200);
    for i in 0..EVENTS {
        let report = handle.broadcast("chat", (i, &text)).await.unwrap();
        evicted.extend(report.disconnected);
    }
    wait_until("49 readers got every event", || {
        counters.iter().all(|n| n.load(Ordering::SeqCst) == EVENTS)
    })
    .await;
    assert_eq!(evicted, vec![slow_ep.local_addr().unwrap()]);
    match tokio::time::timeout(WAIT, slow.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(
                a.error_code.into_inner(),
                u64::from(echostream::types::CloseCode::SLOW_CONSUMER.0)
            );
            let reason = String::from_utf8_lossy(&a.reason);
            assert!(reason.contains("did not keep up"), "{reason}");
        }
        other => panic!("expected the slow client to be disconnected, got {other:?}"),
    }
    assert_eq!(handle.connection_count(), 49);
}

#[tokio::test]
async fn emit_waits_instead_of_queueing_without_bound() {
    // A server whose only listener blocks: the client's emits must stop
    // completing once the listener queue's credit is used up.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g2 = gate.clone();
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let s = serve(RpcServer::builder().event_queue(8).listener(listener_fn(
        "blocked",
        move |_c: Context, _b: Vec<u8>| {
            let g = g2.clone();
            let d = d2.clone();
            async move {
                g.acquire().await.unwrap().forget();
                d.fetch_add(1, Ordering::SeqCst);
            }
        },
    )));
    let c = connect(&s).await;
    let emitted = Arc::new(AtomicUsize::new(0));
    let e2 = emitted.clone();
    let c2 = c.clone();
    let emitter = tokio::spawn(async move {
        for _ in 0..20_000 {
            c2.emit("blocked", vec![0u8; 1024]).await.unwrap();
            e2.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Wait until emitting stalls.
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = emitted.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(last < 20_000, "emit never applied backpressure");
    // Not merely slow: while the listener is blocked, nothing more goes out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        emitted.load(Ordering::SeqCst),
        last,
        "emits kept completing while the receiver was blocked"
    );
    // Releasing the listener lets everything through, nothing lost.
    gate.add_permits(1_000_000);
    tokio::time::timeout(WAIT * 3, emitter).await.unwrap().unwrap();
    wait_until("all delivered", || done.load(Ordering::SeqCst) == 20_000).await;
}

/// Frames are written directly by their sender while the connection's writer is idle and
/// queued to it otherwise; when the receiver stalls (flow control fills, a direct write is
/// only partly taken) the two paths alternate. Each emitter's events must still arrive in
/// its order, complete, and calls on the same connection still get their answers.
#[tokio::test]
async fn each_emitters_order_survives_stalls_that_mix_direct_and_queued_writes() {
    const EMITTERS: u64 = 4;
    const EACH: u64 = 3_000;
    let seen = Arc::new(Mutex::new(vec![Vec::new(); EMITTERS as usize]));
    let s2 = seen.clone();
    let s = serve(
        RpcServer::builder()
            .event_queue(16)
            .handler(handler_fn("echo", |_c: Context, b: Vec<u8>| async move {
                Ok::<_, Error>(b)
            }))
            .listener(listener_fn(
                "seq",
                move |_c: Context, (who, n, _pad): (u64, u64, Vec<u8>)| {
                    s2.lock().unwrap()[who as usize].push(n);
                    async move {
                        // Stall now and then: the queues and the flow-control window fill.
                        if n % 500 == 499 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                },
            )),
    );
    let c = connect(&s).await;
    let mut tasks = Vec::new();
    for who in 0..EMITTERS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                // About 3 KB each: a few hundred fill the peer's stream window.
                c.emit("seq", (who, n, vec![who as u8; 3_000])).await.unwrap();
                if n % 100 == 0 {
                    let back: Vec<u8> = c.request("echo", vec![n as u8; 10]).await.unwrap();
                    assert_eq!(back, vec![n as u8; 10]);
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(WAIT * 3, t).await.unwrap().unwrap();
    }
    wait_until("all events", || {
        seen.lock().unwrap().iter().map(Vec::len).sum::<usize>() == (EMITTERS * EACH) as usize
    })
    .await;
    for (who, got) in seen.lock().unwrap().iter().enumerate() {
        assert!(
            got.iter().copied().eq(0..EACH),
            "emitter {who}: events out of order or missing"
        );
    }
}

/// One emitter of large events toward a receiver that stalls: the stream's flow-control
/// credit runs out in the middle of a frame written directly, and the writer must send the
/// rest of that frame before anything else.
#[tokio::test]
async fn large_events_toward_a_stalled_receiver_arrive_whole_and_in_order() {
    const N: u64 = 200;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g2 = gate.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let s = serve(RpcServer::builder().event_queue(4).listener(listener_fn(
        "big",
        move |_c: Context, (n, body): (u64, Vec<u8>)| {
            let ok = body.len() == 60_000 && body.iter().all(|&b| b == n as u8);
            s2.lock().unwrap().push((n, ok));
            let g = g2.clone();
            async move {
                g.acquire().await.unwrap().forget();
            }
        },
    )));
    let c = connect(&s).await;
    let c2 = c.clone();
    let emitter = tokio::spawn(async move {
        for n in 0..N {
            c2.emit("big", (n, vec![n as u8; 60_000])).await.unwrap();
            // Lets the writer lend the stream again: the next event is written directly.
            tokio::task::yield_now().await;
        }
    });
    // The listener holds the first events; the window and the queues fill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gate.add_permits(N as usize);
    tokio::time::timeout(WAIT * 3, emitter).await.unwrap().unwrap();
    wait_until("all events", || seen.lock().unwrap().len() == N as usize).await;
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().map(|(n, _)| *n).eq(0..N),
        "events out of order or missing"
    );
    assert!(seen.iter().all(|(_, ok)| *ok), "an event arrived damaged");
    drop(c);
}

/// The exact case of issue 22: a listener that calls back the peer that sent the event, on the
/// same connection, while that connection's event queue is full. The answer to the listener's
/// call travels on the control stream behind the peer's queued events; a reader that waited
/// for room in the event queue would never read it, and the call would time out. The reader
/// never waits on a queue listeners drain: the sender is held back by event credit instead,
/// so every event is delivered, none dropped, and every call back gets its answer.
#[tokio::test]
async fn a_listener_that_calls_back_its_peer_while_the_event_queue_is_full_gets_its_answer() {
    init_tracing();
    const N: u64 = 500;
    // Holds the first listener run until the client has filled the queue.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let ran = Arc::new(AtomicU64::new(0));
    let server_peer: Arc<Mutex<Option<Peer>>> = Arc::default();
    let (g2, f2, r2, p2) = (gate.clone(), failures.clone(), ran.clone(), server_peer.clone());
    let s = serve(RpcServer::builder().event_queue(4).listener(listener_fn(
        "flood",
        move |ctx: Context, n: u64| {
            let (g, f, r) = (g2.clone(), f2.clone(), r2.clone());
            p2.lock().unwrap().get_or_insert_with(|| ctx.peer().clone());
            async move {
                if n == 0 {
                    g.acquire().await.unwrap().forget();
                }
                let opts = CallOptions::new().timeout(Duration::from_secs(10));
                match ctx.peer().request_with::<_, u64>("client.echo", n, opts).await {
                    Ok(back) if back == n => {}
                    Ok(back) => f.lock().unwrap().push(format!("event {n}: answer {back}")),
                    Err(e) => f.lock().unwrap().push(format!("event {n}: {e}")),
                }
                r.fetch_add(1, Ordering::SeqCst);
            }
        },
    )));
    let c = client_for(&s)
        .handler(handler_fn("client.echo", |_c: Context, n: u64| async move {
            Ok::<_, Error>(n)
        }))
        .connect(&s.addr)
        .await
        .unwrap();
    let emitted = Arc::new(AtomicU64::new(0));
    let (c2, e2) = (c.clone(), emitted.clone());
    let emitter = tokio::spawn(async move {
        for n in 0..N {
            c2.emit("flood", n).await.unwrap();
            e2.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The queue's worth of events is out (more if the peer's reader would take them); give
    // them time to arrive, then let the listener call back.
    wait_until("the queue's worth of events sent", || {
        emitted.load(Ordering::SeqCst) >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.add_permits(1);
    wait_until("every event handled", || {
        !failures.lock().unwrap().is_empty() || ran.load(Ordering::SeqCst) == N
    })
    .await;
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "listener calls back to the peer failed: {failures:?}"
    );
    tokio::time::timeout(WAIT, emitter).await.unwrap().unwrap();
    let dropped = server_peer.lock().unwrap().as_ref().map(Peer::events_dropped);
    assert_eq!(dropped, Some(0), "a credit-aware sender never overruns the queue");
}

/// An emit waiting for event credit (the peer's listener is blocked) fails with the
/// connection's end instead of waiting forever.
#[tokio::test]
async fn an_emit_waiting_for_event_credit_fails_when_the_connection_ends() {
    let s = serve(
        RpcServer::builder()
            .event_queue(2)
            .listener(listener_fn("stuck", |_c: Context, _n: u64| {
                std::future::pending::<()>()
            })),
    );
    let c = connect(&s).await;
    c.emit("stuck", 0u64).await.unwrap();
    c.emit("stuck", 1u64).await.unwrap();
    let c2 = c.clone();
    let waiting = tokio::spawn(async move { c2.emit("stuck", 2u64).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the third emit waits for credit");
    c.close().await;
    let result = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(result.is_err(), "{result:?}");
}
