//! Connection life-cycle: vanished peers, admission policy, limits,
//! connection events and info, reconnection.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::ConnectionRequest;
use echostream::rpc::{handler_fn, ConnectionEvent, ConnectionPolicy, ReconnectPolicy};
use echostream::testing::{Impairment, Relay};
use echostream::ServerIdentity;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not reached in time: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_vanished_peer_is_noticed_within_the_idle_timeout_on_both_sides() {
    init_tracing();
    let aborted = Arc::new(AtomicBool::new(false));
    let a2 = aborted.clone();
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .idle_timeout(Duration::from_secs(1))
        .keep_alive(Some(Duration::from_millis(200)))
        .handler(handler_fn("hang", move |_c: Context, _: ()| {
            let flag = DropFlag(a2.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            }
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    let mut events = handle.connection_events();
    tokio::spawn(server.run());
    let relay = Relay::start(handle.local_addr(), Impairment::none(), 1)
        .await
        .unwrap();
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .idle_timeout(Duration::from_secs(1))
        .keep_alive(Some(Duration::from_millis(200)))
        .connect(&relay.local_addr().to_string())
        .await
        .unwrap();
    let call = tokio::spawn({
        let c = c.clone();
        async move {
            c.request_with::<_, ()>("hang", (), CallOptions::new().no_timeout())
                .await
        }
    });
    wait_until("server has the connection", || handle.connection_count() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    relay.set_cut(true); // the network is gone; nobody closes anything
                         // Client side: the pending call fails with connection lost, nothing hangs.
    let err = tokio::time::timeout(WAIT, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    match &err {
        Error::ConnectionClosed { reason, .. } => assert!(reason.contains("idle timeout"), "{reason}"),
        other => panic!("expected connection lost, got {other:?}"),
    }
    // Server side: the connection is cleaned up and its handler aborted.
    wait_until("server dropped the connection", || handle.connection_count() == 0).await;
    wait_until("handler aborted", || aborted.load(Ordering::SeqCst)).await;
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            ConnectionEvent::Connected(_) => continue,
            ConnectionEvent::Disconnected { reason, info } => {
                assert!(reason.contains("idle timeout"), "{reason}");
                assert!(info.bytes_received > 0);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // New calls on the dead client fail fast.
    let err = c.request::<_, ()>("hang", ()).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
}

#[tokio::test]
async fn admission_via_event_approves_and_rejects_with_a_reason() {
    let (policy, mut requests) = ConnectionPolicy::approve_via_event(8);
    let s = serve(RpcServer::builder().connection_policy(policy).handler(handler_fn(
        "who",
        |ctx: Context, _: ()| async move {
            Ok::<_, Error>(ctx.hello_metadata().get_str("name").unwrap_or("?").to_owned())
        },
    )));
    tokio::spawn(async move {
        while let Some(req) = requests.recv().await {
            let req: ConnectionRequest = req;
            assert!(req.remote_addr().ip().is_loopback());
            assert!(req.fingerprint().is_none(), "clients present no certificate");
            match req.metadata().get_str("name") {
                Some("alice") => req.approve(),
                other => {
                    let reason = format!("{} is not on the guest list", other.unwrap_or("anonymous"));
                    req.reject(reason)
                }
            }
        }
    });
    let alice = client_for(&s)
        .metadata("name", "alice")
        .connect(&s.addr)
        .await
        .unwrap();
    assert_eq!(alice.request::<_, String>("who", ()).await.unwrap(), "alice");
    let err = client_for(&s)
        .metadata("name", "mallory")
        .connect(&s.addr)
        .await
        .unwrap_err();
    match &err {
        Error::Rejected { addr, reason } => {
            assert_eq!(addr, &s.addr);
            assert!(reason.contains("mallory is not on the guest list"), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_admitted_while_the_server_shuts_down_is_closed_not_left_open() {
    init_tracing();
    let (policy, mut requests) = ConnectionPolicy::approve_via_event(8);
    let s = serve(RpcServer::builder().connection_policy(policy));
    let (builder, addr) = (client_for(&s), s.addr.clone());
    let connecting = tokio::spawn(async move { builder.connect(&addr).await });
    let request = tokio::time::timeout(WAIT, requests.recv())
        .await
        .expect("the connection asks for a decision in time")
        .expect("a request");
    s.shutdown.shutdown();
    // The shutdown lists the connections to close meanwhile; this one is still being admitted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    request.approve();
    match tokio::time::timeout(WAIT, connecting).await.unwrap().unwrap() {
        // Closed before its welcome arrived.
        Err(_) => {}
        Ok(client) => {
            // Admitted after the shutdown's list was taken: it must still be closed (before, it
            // stayed open until its idle timeout, with the server's `run()` long returned).
            let reason = tokio::time::timeout(WAIT, client.peer().closed())
                .await
                .expect("the server closes a connection it admitted while shutting down");
            assert!(reason.to_string().contains("shut down"), "{reason}");
        }
    }
    tokio::time::timeout(WAIT, s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_connection_over_the_limit_is_rejected_with_a_reason() {
    let s = serve(RpcServer::builder().max_connections(2));
    let _a = connect(&s).await;
    let _b = connect(&s).await;
    let err = client_for(&s).connect(&s.addr).await.unwrap_err();
    match &err {
        // Refused before the TLS handshake (no TLS work for a server at its limit).
        Error::Rejected { reason, .. } => assert!(reason.contains("connection limit"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    drop(_a);
    // Room again once one leaves.
    let deadline = Instant::now() + WAIT;
    loop {
        match client_for(&s).connect(&s.addr).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never got a slot back: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn connection_events_and_info_describe_each_connection() {
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(handler_fn("echo", |_c: Context, b: Vec<u8>| async move {
            Ok::<_, Error>(b)
        }))
        .build()
        .unwrap();
    let handle = server.handle();
    let mut events = handle.connection_events();
    tokio::spawn(server.run());
    let c = RpcClient::builder()
        .pin(handle.fingerprint())
        .metadata("name", "probe")
        .connect(&handle.local_addr().to_string())
        .await
        .unwrap();
    let Some(ConnectionEvent::Connected(info)) = events.recv().await else {
        panic!("expected a connected event")
    };
    assert_eq!(info.hello_metadata.get_str("name"), Some("probe"));
    // The protocol's own hello entry (event credit) is not the application's metadata.
    assert!(
        info.hello_metadata.get("echostream.event-credit").is_none(),
        "{:?}",
        info.hello_metadata
    );
    assert_eq!(
        info.remote,
        c.local_addr().map(|a| ([127, 0, 0, 1], a.port()).into()).unwrap()
    );
    for _ in 0..10 {
        let _: Vec<u8> = c.request("echo", vec![1u8; 1000]).await.unwrap();
    }
    let mine = c.info();
    assert!(
        mine.bytes_sent > 10_000 && mine.bytes_received > 10_000,
        "{mine:?}"
    );
    assert!(mine.packets_sent > 0 && mine.packets_received > 0);
    assert!(mine.rtt > Duration::ZERO);
    assert_eq!(mine.fingerprint, Some(handle.fingerprint()));
    let theirs = handle.peer(info.connection_id).unwrap().info();
    assert!(theirs.bytes_received > 10_000);
    c.close().await;
    match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
        Some(ConnectionEvent::Disconnected { info: gone, reason }) => {
            assert_eq!(gone.connection_id, info.connection_id);
            assert!(reason.contains("client closed"), "{reason}");
        }
        other => panic!("expected a disconnected event, got {other:?}"),
    }
}

fn restartable(identity: &ServerIdentity, addr: &str) -> RpcServer {
    RpcServer::builder()
        .bind(addr)
        .identity(identity.clone())
        .handler(handler_fn("ping", |_c: Context, _: ()| async {
            Ok::<_, Error>("pong".to_string())
        }))
        .handler(handler_fn("ask_client", |ctx: Context, _: ()| async move {
            ctx.peer().request::<_, String>("client.name", ()).await
        }))
        .build()
        .unwrap()
}

#[tokio::test]
async fn reconnect_after_the_server_restarts_on_the_same_port() {
    let identity = fixed_identity();
    let first = restartable(&identity, "127.0.0.1:0");
    let addr = first.local_addr().to_string();
    let fp = first.fingerprint();
    let stop = first.shutdown_handle();
    let task = tokio::spawn(first.run());
    let c = RpcClient::builder()
        .pin(fp)
        .reconnect(ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..Default::default()
        })
        .handler(handler_fn("client.name", |_c: Context, _: ()| async {
            Ok::<_, Error>("c1".to_string())
        }))
        .connect(&addr)
        .await
        .unwrap();
    assert_eq!(c.request::<_, String>("ping", ()).await.unwrap(), "pong");
    stop.shutdown();
    task.await.unwrap().unwrap();
    wait_until("client noticed", || !c.is_connected()).await;
    // While disconnected, calls fail fast.
    let t = Instant::now();
    let err = c.request::<_, String>("ping", ()).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // A new server on the same port; the same client object works again,
    // with its handlers still registered.
    let second = restartable(&identity, &addr);
    tokio::spawn(second.run());
    wait_until("reconnected", || c.is_connected()).await;
    assert_eq!(c.request::<_, String>("ping", ()).await.unwrap(), "pong");
    assert_eq!(c.request::<_, String>("ask_client", ()).await.unwrap(), "c1");
}

async fn next_event(events: &mut echostream::ClientConnectionEvents) -> Option<ConnectionEvent> {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
}

#[tokio::test]
async fn client_connection_events_report_each_disconnection_and_reconnection_then_end_at_close() {
    let identity = fixed_identity();
    let first = restartable(&identity, "127.0.0.1:0");
    let addr = first.local_addr().to_string();
    let fp = first.fingerprint();
    let stop = first.shutdown_handle();
    let task = tokio::spawn(first.run());
    let c = RpcClient::builder()
        .pin(fp)
        .reconnect(ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..Default::default()
        })
        .connect(&addr)
        .await
        .unwrap();
    let mut events = c.connection_events();
    let first_id = c.peer().connection_id();
    stop.shutdown();
    task.await.unwrap().unwrap();
    match next_event(&mut events).await {
        Some(ConnectionEvent::Disconnected { info, reason }) => {
            assert_eq!(info.connection_id, first_id);
            assert!(!reason.is_empty());
        }
        other => panic!("expected the first connection's end, got {other:?}"),
    }
    let second = restartable(&identity, &addr);
    tokio::spawn(second.run());
    match next_event(&mut events).await {
        Some(ConnectionEvent::Connected(info)) => {
            assert_ne!(info.connection_id, first_id);
            assert_eq!(info.connection_id, c.peer().connection_id());
        }
        other => panic!("expected the new connection, got {other:?}"),
    }
    c.close().await;
    assert!(matches!(
        next_event(&mut events).await,
        Some(ConnectionEvent::Disconnected { .. })
    ));
    assert!(
        next_event(&mut events).await.is_none(),
        "no connection after close"
    );
}

#[tokio::test]
async fn without_reconnection_client_connection_events_end_after_the_disconnection() {
    let s = serve(RpcServer::builder());
    let c = client_for(&s).connect(&s.addr).await.unwrap();
    let mut events = c.connection_events();
    c.peer().close("test: bye");
    let e = tokio::time::timeout(WAIT, events.recv()).await.unwrap();
    assert!(
        matches!(&e, Some(ConnectionEvent::Disconnected { reason, .. }) if reason.contains("test: bye")),
        "{e:?}"
    );
    assert!(tokio::time::timeout(WAIT, events.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn with_wait_for_connection_a_call_made_while_disconnected_waits_for_the_new_connection() {
    let identity = fixed_identity();
    let first = restartable(&identity, "127.0.0.1:0");
    let addr = first.local_addr().to_string();
    let fp = first.fingerprint();
    let stop = first.shutdown_handle();
    let task = tokio::spawn(first.run());
    let c = RpcClient::builder()
        .pin(fp)
        .reconnect(ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
            wait_for_connection: true,
            ..Default::default()
        })
        .connect(&addr)
        .await
        .unwrap();
    stop.shutdown();
    task.await.unwrap().unwrap();
    wait_until("client noticed", || !c.is_connected()).await;
    let call = tokio::spawn({
        let c = c.clone();
        async move {
            c.request_with::<_, String>("ping", (), CallOptions::new().timeout(Duration::from_secs(15)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "the call waits for the new connection");
    tokio::spawn(restartable(&identity, &addr).run());
    assert_eq!(
        tokio::time::timeout(WAIT, call).await.unwrap().unwrap().unwrap(),
        "pong"
    );
}

#[tokio::test]
async fn clients_of_one_builder_share_a_socket_and_close_independently() {
    init_tracing();
    let s = serve(
        RpcServer::builder().handler(handler_fn("echo", |_c: Context, x: u32| async move {
            Ok::<u32, Status>(x)
        })),
    );
    let builder = client_for(&s);
    let a = builder.clone().connect(&s.addr).await.unwrap();
    let b = builder.clone().connect(&s.addr).await.unwrap();
    // One UDP socket for both: binding costs time and quinn buffers.
    assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
    // A builder that opts out of sharing gets a socket of its own.
    let other = client_for(&s).share_socket(false).connect(&s.addr).await.unwrap();
    assert_ne!(other.local_addr().unwrap(), a.local_addr().unwrap());
    // Closing one leaves the other working.
    a.close().await;
    let x: u32 = b.request("echo", 7u32).await.unwrap();
    assert_eq!(x, 7);
    assert!(a.request::<_, u32>("echo", 1u32).await.is_err());
    // The builder keeps the socket for its next connection (a reconnect,
    // the next 0-RTT attempt) even when no client uses it.
    let local = b.local_addr().unwrap();
    b.close().await;
    drop((a, b));
    let c = builder.connect(&s.addr).await.unwrap();
    assert_eq!(c.local_addr().unwrap(), local);
    let x: u32 = c.request("echo", 8u32).await.unwrap();
    assert_eq!(x, 8);
}

/// A connection's state, and with it the UDP socket, is released when the other side closes
/// it. (The control stream's writer task, idle, held the connection and waited for a queue
/// that its own hold kept open: every connection a client closed stayed on the server.)
#[tokio::test]
async fn a_connection_closed_by_the_other_side_releases_its_state_and_socket() {
    let ping = || {
        handler_fn("ping", |_c: Context, _: ()| async {
            Ok::<_, Error>("pong".to_string())
        })
    };
    // The client closes first: once the server has shut down, its port is free again.
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(ping())
        .build()
        .unwrap();
    let (addr, fp, handle) = (
        server.local_addr().to_string(),
        server.fingerprint(),
        server.handle(),
    );
    let stop = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    let c = RpcClient::builder().pin(fp).connect(&addr).await.unwrap();
    assert_eq!(c.request::<_, String>("ping", ()).await.unwrap(), "pong");
    c.close().await;
    drop(c);
    // The server has seen the close, so shutting down has no connection of its own to end.
    wait_until("the server saw the close", || handle.connection_count() == 0).await;
    drop(handle);
    stop.shutdown();
    task.await.unwrap().unwrap();
    wait_until("the server's port is released", || {
        std::net::UdpSocket::bind(&addr).is_ok()
    })
    .await;

    // The server closes first: once the client is dropped, its socket is free again.
    let s = serve(RpcServer::builder().handler(ping()));
    let c = connect(&s).await;
    assert_eq!(c.request::<_, String>("ping", ()).await.unwrap(), "pong");
    let port = c.local_addr().unwrap().port();
    s.shutdown.shutdown();
    s.task.await.unwrap().unwrap();
    wait_until("the client saw the close", || !c.is_connected()).await;
    drop(c);
    wait_until("the client's port is released", || {
        std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).is_ok()
    })
    .await;
}

/// Clients connected one by one (each from its own builder, as `RpcClient::connect` does) in
/// one runtime share one UDP socket while any of them lives; closing one leaves the others
/// working; `share_socket(false)` gives a client its own; the shared socket closes once its
/// last client is gone.
#[tokio::test]
async fn clients_connected_separately_share_one_socket_until_the_last_is_gone() {
    let s = serve(
        RpcServer::builder().handler(handler_fn("echo", |_c: Context, x: u32| async move {
            Ok::<_, Error>(x)
        })),
    );
    let a = connect(&s).await;
    let b = connect(&s).await;
    let shared = a.local_addr().unwrap();
    assert_eq!(
        b.local_addr().unwrap(),
        shared,
        "a second client binds no socket of its own"
    );
    let own = client_for(&s).share_socket(false).connect(&s.addr).await.unwrap();
    assert_ne!(own.local_addr().unwrap(), shared);

    a.close().await;
    drop(a);
    let x: u32 = b.request("echo", 7u32).await.unwrap();
    assert_eq!(x, 7, "closing one client leaves the others on the socket working");
    let y: u32 = own.request("echo", 8u32).await.unwrap();
    assert_eq!(y, 8);

    b.close().await;
    drop(b);
    // Nothing holds the shared endpoint any more: its socket closes and the port is free.
    wait_until("the shared socket closes after its last client", || {
        std::net::UdpSocket::bind(shared).is_ok()
    })
    .await;
    own.close().await;
}
