//! 0-RTT reconnect and resumption over real QUIC on 127.0.0.1: session tickets kept per server,
//! idempotent calls in early data, other calls held until the handshake completes, a server
//! refusing non-idempotent early calls, a server rejecting early data (transparent resend), and
//! the reconnect supervisor resuming.
//!
//! A relay between client and server can hold every client datagram that would complete the
//! handshake (QUIC Handshake and 1-RTT packets) while it lets the first flight (Initial and 0-RTT
//! packets) through: while it holds, the server has only early data, so what it does with early
//! data is observed deterministically, without timing assumptions.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, ReconnectPolicy};
use echostream::types::{Frame, FrameDecoder, Hello, RequestFrame, PROTOCOL_VERSION};
use echostream::{ClientAuth, ClientCertTrust, Codec, Fingerprint, Metadata};
use echostream::{ServerIdentity, ZeroRtt};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

// ---------------------------------------------------------------------------------------------
// A relay that can switch servers and hold the datagrams completing the client's handshake
// ---------------------------------------------------------------------------------------------

struct RelayState {
    upstream: SocketAddr,
    client: Option<SocketAddr>,
    hold: bool,
    held: Vec<Vec<u8>>,
}

struct HoldRelay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
    back: Arc<UdpSocket>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HoldRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads a QUIC variable-length integer.
fn varint(d: &[u8]) -> Option<(usize, usize)> {
    let first = *d.first()?;
    let len = 1usize << (first >> 6);
    let mut v = u64::from(first & 0x3f);
    for b in d.get(1..len)? {
        v = (v << 8) | u64::from(*b);
    }
    Some((usize::try_from(v).ok()?, len))
}

/// True when a client datagram carries a Handshake or 1-RTT packet: what completes the
/// handshake or travels after it. Initial and 0-RTT packets are the first flight.
fn after_first_flight(d: &[u8]) -> bool {
    let mut i = 0;
    while i < d.len() {
        let first = d[i];
        if first & 0x80 == 0 {
            return true; // short header: 1-RTT
        }
        let kind = (first >> 4) & 0x03;
        match kind {
            2 => return true,  // Handshake
            3 => return false, // Retry (never sent by a client)
            _ => {}
        }
        let Some(skip) = long_packet_len(&d[i..], kind) else {
            return false;
        };
        i += skip;
    }
    false
}

fn long_packet_len(d: &[u8], kind: u8) -> Option<usize> {
    let mut j = 5; // flags + version
    let dcid = usize::from(*d.get(j)?);
    j += 1 + dcid;
    let scid = usize::from(*d.get(j)?);
    j += 1 + scid;
    if kind == 0 {
        let (token, n) = varint(d.get(j..)?)?;
        j += n + token;
    }
    let (len, n) = varint(d.get(j..)?)?;
    Some(j + n + len)
}

impl HoldRelay {
    async fn start(upstream: SocketAddr) -> HoldRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RelayState {
            upstream,
            client: None,
            hold: false,
            held: Vec::new(),
        }));
        let (f, b, s) = (front.clone(), back.clone(), state.clone());
        let up = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = f.recv_from(&mut buf).await {
                let d = buf[..n].to_vec();
                let target = {
                    let mut st = s.lock().unwrap();
                    st.client = Some(from);
                    if st.hold && after_first_flight(&d) {
                        st.held.push(d);
                        continue;
                    }
                    st.upstream
                };
                let _ = b.send_to(&d, target).await;
            }
        });
        let (f, b, s) = (front.clone(), back.clone(), state.clone());
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = b.recv_from(&mut buf).await {
                let client = s.lock().unwrap().client;
                if let Some(c) = client {
                    let _ = f.send_to(&buf[..n], c).await;
                }
            }
        });
        HoldRelay {
            addr,
            state,
            back,
            tasks: vec![up, down],
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// From now on, hold the client's Handshake and 1-RTT datagrams.
    fn hold(&self) {
        self.state.lock().unwrap().hold = true;
    }

    /// Forwards what was held, and everything from now on.
    async fn release(&self) {
        let (held, upstream) = {
            let mut st = self.state.lock().unwrap();
            st.hold = false;
            (std::mem::take(&mut st.held), st.upstream)
        };
        for d in held {
            let _ = self.back.send_to(&d, upstream).await;
        }
    }

    fn held(&self) -> usize {
        self.state.lock().unwrap().held.len()
    }

    /// Sends the client's datagrams to another server from now on.
    fn switch_to(&self, upstream: SocketAddr) {
        self.state.lock().unwrap().upstream = upstream;
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// What the handlers saw.
#[derive(Default)]
struct Seen {
    gets: AtomicUsize,
    gets_early: AtomicUsize,
    puts: AtomicUsize,
}

/// Declared idempotent through the macro.
#[echostream::handler("kv.version", idempotent)]
async fn kv_version(ctx: Context, key: String) -> Result<String> {
    Ok(format!("v1:{key}:early={}", ctx.peer().is_early()))
}

/// `kv.get` is idempotent (and says whether it ran on early data); `kv.put` is not.
fn kv_server(seen: &Arc<Seen>, name: &'static str) -> echostream::rpc::ServerBuilder {
    let (s1, s2) = (seen.clone(), seen.clone());
    RpcServer::builder()
        .handler(kv_version)
        .handler(
            handler_fn("kv.get", move |ctx: Context, key: String| {
                let seen = s1.clone();
                async move {
                    seen.gets.fetch_add(1, Ordering::SeqCst);
                    if ctx.peer().is_early() {
                        seen.gets_early.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, Error>(format!("{name}:{key}"))
                }
            })
            .mark_idempotent(),
        )
        .handler(handler_fn("kv.put", move |_ctx: Context, key: String| {
            let seen = s2.clone();
            async move {
                seen.puts.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(format!("{name}:stored {key}"))
            }
        }))
}

struct Running {
    addr: SocketAddr,
    fingerprint: Fingerprint,
    handle: echostream::ServerHandle,
}

fn start(builder: echostream::rpc::ServerBuilder, identity: ServerIdentity) -> Running {
    let server = builder
        .bind("127.0.0.1:0")
        .identity(identity)
        .build()
        .expect("server builds");
    let running = Running {
        addr: server.local_addr(),
        fingerprint: server.fingerprint(),
        handle: server.handle(),
    };
    tokio::spawn(server.run());
    running
}

async fn connect_to(builder: &echostream::rpc::ClientBuilder, addr: &str) -> RpcClient {
    tokio::time::timeout(WAIT, builder.clone().connect(addr))
        .await
        .expect("connect in time")
        .expect("connect succeeds")
}

/// A first, full connection that leaves a session ticket in the builder's store.
async fn first_connection(builder: &echostream::rpc::ClientBuilder, addr: &str) {
    let c = connect_to(builder, addr).await;
    let v: String = c.request("kv.get", "warm-up").await.unwrap();
    assert!(v.ends_with(":warm-up"));
    assert_eq!(
        c.peer().zero_rtt(),
        ZeroRtt::NotAttempted,
        "no ticket yet: a full handshake"
    );
    wait_until("the server's session ticket arrived", || c.can_resume()).await;
    c.close().await;
}

async fn settled(c: &RpcClient) -> ZeroRtt {
    let peer = c.peer();
    wait_until("the handshake completed", || peer.zero_rtt() != ZeroRtt::Pending).await;
    peer.zero_rtt()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reconnect_resumes_the_session_and_its_early_data_is_accepted() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let addr = server.addr.to_string();
    let builder = RpcClient::builder().pin(server.fingerprint);
    first_connection(&builder, &addr).await;

    let c = connect_to(&builder, &addr).await;
    assert_eq!(
        c.peer().zero_rtt(),
        ZeroRtt::Pending,
        "the hello went out as early data"
    );
    let v: String = c
        .request_with("kv.get", "k", CallOptions::new().idempotent())
        .await
        .unwrap();
    assert_eq!(v, "a:k");
    assert_eq!(settled(&c).await, ZeroRtt::Accepted);
    assert_eq!(c.info().zero_rtt, ZeroRtt::Accepted);
    assert_eq!(
        c.server_fingerprint(),
        Some(server.fingerprint),
        "known from the resumed session"
    );
    // The welcome read by the reader task, not by connect, still reaches the client.
    let v: String = c.request("kv.put", "k").await.unwrap();
    assert_eq!(v, "a:stored k");
    c.close().await;
}

#[tokio::test]
async fn builders_made_separately_resume_each_others_sessions_through_a_shared_session_cache() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let addr = server.addr.to_string();
    let cache = echostream::SessionCache::new();
    let first = RpcClient::builder().pin(server.fingerprint).session_cache(&cache);
    first_connection(&first, &addr).await;
    assert!(
        cache.tickets(&addr) > 0,
        "the first builder's ticket is in the shared cache"
    );

    // Another builder, made from scratch, with the same cache: early data accepted.
    let second = RpcClient::builder().pin(server.fingerprint).session_cache(&cache);
    let c = connect_to(&second, &addr).await;
    let v: String = c
        .request_with("kv.get", "k", CallOptions::new().idempotent())
        .await
        .unwrap();
    assert_eq!(v, "a:k");
    assert_eq!(settled(&c).await, ZeroRtt::Accepted);
    c.close().await;

    // A builder with a cache of its own has no ticket: a full handshake.
    let alone = RpcClient::builder().pin(server.fingerprint);
    let c = connect_to(&alone, &addr).await;
    assert_eq!(c.peer().zero_rtt(), ZeroRtt::NotAttempted);
    c.close().await;

    // Other trust settings never take the shared ticket.
    let other = RpcClient::builder()
        .trust(echostream::ClientTrust::Pinned(vec![
            server.fingerprint,
            Fingerprint([7; 32]),
        ]))
        .session_cache(&cache);
    let c = connect_to(&other, &addr).await;
    let _: String = c.request("kv.get", "x").await.unwrap();
    assert_eq!(c.peer().zero_rtt(), ZeroRtt::NotAttempted);
    c.close().await;
}

#[tokio::test]
async fn an_idempotent_call_travels_early_and_other_calls_wait_for_the_handshake() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let relay = HoldRelay::start(server.addr).await;
    // `kv.get` declared idempotent once for the whole client.
    let builder = RpcClient::builder().pin(server.fingerprint).idempotent("kv.get");
    first_connection(&builder, &relay.addr()).await;
    let gets_before = seen.gets.load(Ordering::SeqCst);

    // From here the server only receives the client's first flight until released.
    relay.hold();
    let c = connect_to(&builder, &relay.addr()).await;
    let put = tokio::spawn({
        let c = c.clone();
        async move { c.request::<_, String>("kv.put", "x").await }
    });
    let get: String = tokio::time::timeout(WAIT, c.request("kv.get", "x"))
        .await
        .expect("the early call is answered while the handshake cannot complete")
        .unwrap();
    assert_eq!(get, "a:x");
    assert_eq!(seen.gets.load(Ordering::SeqCst), gets_before + 1);
    assert_eq!(seen.gets_early.load(Ordering::SeqCst), 1, "it ran on early data");
    assert_eq!(
        seen.puts.load(Ordering::SeqCst),
        0,
        "the non-idempotent call was not sent early"
    );
    // The client finished its side of the handshake: its Finished (and then the held call) is
    // what the relay keeps from the server.
    wait_until("the client's handshake completed", || {
        c.peer().zero_rtt() == ZeroRtt::Accepted
    })
    .await;
    wait_until("the relay holds the end of the handshake", || relay.held() > 0).await;
    assert!(!put.is_finished());
    assert_eq!(seen.puts.load(Ordering::SeqCst), 0);

    relay.release().await;
    let put = tokio::time::timeout(WAIT, put).await.expect("answered").unwrap();
    // Sent after the handshake, so the server ran it rather than refusing it.
    assert_eq!(put.unwrap(), "a:stored x");
    assert_eq!(seen.puts.load(Ordering::SeqCst), 1);
    assert_eq!(settled(&c).await, ZeroRtt::Accepted);
    c.close().await;
}

/// A typed descriptor marked idempotent (what `#[service]` emits for an `#[idempotent]` method)
/// makes its calls travel as early data, with nothing declared on the client builder.
#[tokio::test]
async fn a_typed_idempotent_method_travels_as_early_data() {
    init_tracing();
    const GET: echostream::Method<String, String> = echostream::Method::new("kv.get").idempotent();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let relay = HoldRelay::start(server.addr).await;
    let builder = RpcClient::builder().pin(server.fingerprint);
    first_connection(&builder, &relay.addr()).await;
    let gets_before = seen.gets.load(Ordering::SeqCst);

    // From here the server only receives the client's first flight until released.
    relay.hold();
    let c = connect_to(&builder, &relay.addr()).await;
    let get = tokio::time::timeout(WAIT, echostream::Caller::call(&c, &GET, "t".to_owned()))
        .await
        .expect("the typed early call is answered while the handshake cannot complete")
        .unwrap();
    assert_eq!(get, "a:t");
    assert_eq!(seen.gets.load(Ordering::SeqCst), gets_before + 1);
    assert_eq!(seen.gets_early.load(Ordering::SeqCst), 1, "it ran on early data");
    relay.release().await;
    assert_eq!(settled(&c).await, ZeroRtt::Accepted);
    c.close().await;
}

#[tokio::test]
async fn a_call_marked_idempotent_only_by_the_client_is_refused_early_then_sent_again() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let relay = HoldRelay::start(server.addr).await;
    let builder = RpcClient::builder().pin(server.fingerprint);
    first_connection(&builder, &relay.addr()).await;

    relay.hold();
    let c = connect_to(&builder, &relay.addr()).await;
    // The client claims `kv.put` is safe to repeat; the server's handler does not.
    let put = tokio::spawn({
        let c = c.clone();
        async move {
            c.request_with::<_, String>("kv.put", "x", CallOptions::new().idempotent())
                .await
        }
    });
    // Refused early (not run), then held by the relay after the client's handshake.
    wait_until("the client's handshake completed", || {
        c.peer().zero_rtt() == ZeroRtt::Accepted
    })
    .await;
    wait_until("the relay holds the end of the handshake", || relay.held() > 0).await;
    assert_eq!(seen.puts.load(Ordering::SeqCst), 0);
    assert!(!put.is_finished());
    relay.release().await;
    let put = tokio::time::timeout(WAIT, put).await.expect("answered").unwrap();
    assert_eq!(
        put.unwrap(),
        "a:stored x",
        "sent again after the handshake, transparently"
    );
    assert_eq!(seen.puts.load(Ordering::SeqCst), 1, "run exactly once");
    c.close().await;
}

#[tokio::test]
async fn an_early_connection_to_a_vanished_server_fails_after_the_connect_timeout() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let relay = HoldRelay::start(server.addr).await;
    let builder = RpcClient::builder()
        .pin(server.fingerprint)
        .connect_timeout(Duration::from_millis(300));
    first_connection(&builder, &relay.addr()).await;

    // A socket that never answers stands for the vanished server.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    relay.switch_to(silent.local_addr().unwrap());
    let c = connect_to(&builder, &relay.addr()).await;
    assert_eq!(c.peer().zero_rtt(), ZeroRtt::Pending);
    let r = tokio::time::timeout(
        WAIT,
        c.request_with::<_, String>("kv.get", "k", CallOptions::new().idempotent().no_timeout()),
    )
    .await
    .expect("fails at the connect timeout, not the call's");
    match r {
        Err(Error::ConnectionClosed { code, reason }) => {
            assert_eq!(
                code,
                Some(echostream::types::CloseCode::HELLO_TIMEOUT),
                "{reason}"
            );
            assert!(reason.contains("did not complete in time"), "{reason}");
        }
        other => panic!("expected the connection to close, got {other:?}"),
    }
}

/// A session store that counts the tickets it holds, for the raw client.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, n: ServerName<'static>, g: rustls::NamedGroup) {
        self.inner.set_kx_hint(n, g)
    }
    fn kx_hint(&self, n: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(n)
    }
    fn set_tls12_session(&self, n: ServerName<'static>, v: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(n, v)
    }
    fn tls12_session(&self, n: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(n)
    }
    fn remove_tls12_session(&self, n: &ServerName<'static>) {
        self.inner.remove_tls12_session(n)
    }
    fn insert_tls13_ticket(&self, n: ServerName<'static>, v: Tls13ClientSessionValue) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(n, v)
    }
    fn take_tls13_ticket(&self, n: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(n)
    }
}

fn encode(frames: &[Frame]) -> Bytes {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode(&mut buf).unwrap();
    }
    buf.freeze()
}

fn request(id: u64, method: &str, arg: &str) -> Frame {
    Frame::Request(RequestFrame {
        id,
        method: method.into(),
        codec: Codec::Bincode,
        deadline: None,
        metadata: Metadata::new(),
        payload: Codec::Bincode.encode(arg).unwrap(),
    })
}

/// Reads frames from the control stream until `n` responses arrived (after the welcome).
async fn responses(recv: &mut quinn::RecvStream, n: usize) -> Vec<echostream::types::ResponseFrame> {
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(f) = decoder.decode(&mut buf).unwrap() {
            match f {
                Frame::Welcome(_) => {}
                Frame::Response(r) => out.push(r),
                other => panic!("unexpected {} frame", other.kind()),
            }
        }
        if out.len() >= n {
            break;
        }
        let chunk = recv.read_chunk(65536, true).await.unwrap().expect("stream open");
        buf.extend_from_slice(&chunk.bytes);
    }
    out
}

#[tokio::test]
async fn the_server_refuses_a_non_idempotent_call_sent_as_early_data() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let relay = HoldRelay::start(server.addr).await;

    // A misbehaving client: raw quinn that puts a non-idempotent call into its early data.
    let store = Arc::new(CountingStore {
        inner: ClientSessionMemoryCache::new(8),
        tickets: AtomicUsize::new(0),
    });
    let (mut crypto, _) = echostream::tls::client_crypto(
        &echostream::ClientTrust::pinned(server.fingerprint),
        &relay.addr(),
    )
    .unwrap();
    crypto.resumption = rustls::client::Resumption::store(store.clone());
    crypto.enable_early_data = true;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(quic));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let hello = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    });

    // First connection: full handshake, hello/welcome, one call; keep it until tickets came.
    let conn = endpoint
        .connect_with(config.clone(), relay.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(&[hello.clone(), request(0, "kv.get", "warm-up")]))
        .await
        .unwrap();
    assert_eq!(responses(&mut recv, 1).await.len(), 1);
    wait_until("tickets arrived", || store.tickets.load(Ordering::SeqCst) > 0).await;
    conn.close(0u32.into(), b"done");

    // Second connection: everything in the first flight; the server cannot finish its handshake.
    relay.hold();
    let connecting = endpoint.connect_with(config, relay.addr, "localhost").unwrap();
    let (conn, accepted) = connecting.into_0rtt().expect("a ticket allowing early data");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(&[
        hello,
        request(0, "kv.put", "replayable"),
        request(2, "kv.get", "k"),
        request(4, "kv.version", "k"),
    ]))
    .await
    .unwrap();
    let mut answers = tokio::time::timeout(WAIT, responses(&mut recv, 3))
        .await
        .expect("both calls answered before the handshake completes");
    answers.sort_by_key(|r| r.id);
    let refused = answers[0].result.as_ref().expect_err("kv.put refused");
    assert_eq!(refused.code(), Code::EARLY_DATA_REFUSED);
    assert!(refused.message().contains("kv.put"), "{}", refused.message());
    let (codec, bytes) = answers[1].result.as_ref().expect("kv.get answered");
    assert_eq!(codec.decode::<String>(bytes).unwrap(), "a:k");
    let (codec, bytes) = answers[2].result.as_ref().expect("kv.version answered");
    assert_eq!(codec.decode::<String>(bytes).unwrap(), "v1:k:early=true");
    assert_eq!(
        seen.puts.load(Ordering::SeqCst),
        0,
        "the refused handler never ran"
    );
    assert_eq!(seen.gets_early.load(Ordering::SeqCst), 1);

    relay.release().await;
    assert!(
        tokio::time::timeout(WAIT, accepted).await.unwrap(),
        "0-RTT was accepted"
    );
    // After the handshake the same call is not early any more and runs.
    send.write_all(&encode(&[request(6, "kv.put", "later")]))
        .await
        .unwrap();
    let later = tokio::time::timeout(WAIT, responses(&mut recv, 1)).await.unwrap();
    assert!(later[0].result.is_ok(), "{:?}", later[0].result);
    assert_eq!(seen.puts.load(Ordering::SeqCst), 1);
    conn.close(0u32.into(), b"done");
}

#[tokio::test]
async fn a_server_without_zero_rtt_rejects_early_data_and_the_client_sends_it_again() {
    init_tracing();
    // Two servers with one identity: the ticket comes from `a`, the reconnection reaches `b`,
    // which does not accept early data (nor know the ticket).
    let id = ServerIdentity::Ephemeral.load().unwrap();
    let identity = || ServerIdentity::Der {
        cert_chain: id.cert_chain.clone(),
        private_key: Arc::new(id.private_key.clone_key()),
    };
    let (seen_a, seen_b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let a = start(kv_server(&seen_a, "a").zero_rtt(true), identity());
    let b = start(kv_server(&seen_b, "b").zero_rtt(false), identity());
    assert_eq!(a.fingerprint, b.fingerprint);
    let relay = HoldRelay::start(a.addr).await;
    let builder = RpcClient::builder().pin(a.fingerprint).idempotent("kv.get");
    first_connection(&builder, &relay.addr()).await;

    relay.switch_to(b.addr);
    let c = connect_to(&builder, &relay.addr()).await;
    assert_eq!(c.peer().zero_rtt(), ZeroRtt::Pending, "early data was sent");
    let (get, put) = tokio::join!(
        c.request::<_, String>("kv.get", "k"),
        c.request::<_, String>("kv.put", "k")
    );
    assert_eq!(get.unwrap(), "b:k", "the early call was sent again and answered");
    assert_eq!(put.unwrap(), "b:stored k");
    assert_eq!(settled(&c).await, ZeroRtt::Rejected);
    assert_eq!(seen_b.gets.load(Ordering::SeqCst), 1, "run once");
    assert_eq!(seen_b.gets_early.load(Ordering::SeqCst), 0);
    // The connection is a normal one from here on.
    let again: String = c.request("kv.get", "again").await.unwrap();
    assert_eq!(again, "b:again");
    c.close().await;
}

#[tokio::test]
async fn the_reconnect_supervisor_resumes_the_session_with_early_data() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let c = RpcClient::builder()
        .pin(server.fingerprint)
        .idempotent("kv.get")
        .reconnect(ReconnectPolicy {
            initial_backoff: Duration::from_millis(20),
            wait_for_connection: true,
            ..Default::default()
        })
        .connect(&server.addr.to_string())
        .await
        .unwrap();
    let _: String = c.request("kv.get", "warm-up").await.unwrap();
    wait_until("the server's session ticket arrived", || c.can_resume()).await;
    let first = c.peer().connection_id();

    let dropped = Arc::new(AtomicBool::new(false));
    for p in server.handle.peers() {
        p.close("test drops the connection");
        dropped.store(true, Ordering::SeqCst);
    }
    assert!(dropped.load(Ordering::SeqCst));
    wait_until("reconnected", || {
        c.is_connected() && c.peer().connection_id() != first
    })
    .await;
    let v: String = tokio::time::timeout(WAIT, c.request("kv.get", "k"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "a:k");
    assert_eq!(
        settled(&c).await,
        ZeroRtt::Accepted,
        "the supervisor's connection resumed"
    );
    let v: String = c.request("kv.put", "k").await.unwrap();
    assert_eq!(v, "a:stored k");
    c.close().await;
}

#[tokio::test]
async fn a_client_with_zero_rtt_off_resumes_without_early_data() {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let server = start(kv_server(&seen, "a").zero_rtt(true), ServerIdentity::Ephemeral);
    let addr = server.addr.to_string();
    let builder = RpcClient::builder().pin(server.fingerprint).zero_rtt(false);
    first_connection(&builder, &addr).await;
    let c = connect_to(&builder, &addr).await;
    assert_eq!(c.peer().zero_rtt(), ZeroRtt::NotAttempted);
    let v: String = c
        .request_with("kv.get", "k", CallOptions::new().idempotent())
        .await
        .unwrap();
    assert_eq!(v, "a:k");
    assert_eq!(seen.gets_early.load(Ordering::SeqCst), 0);
    c.close().await;
}

#[tokio::test]
async fn zero_rtt_cannot_be_combined_with_client_certificates() {
    let pin = Fingerprint([7; 32]);
    let err = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .zero_rtt(true)
        .client_auth(ClientAuth::Required(ClientCertTrust::Pinned(vec![pin])))
        .build()
        .expect_err("refused");
    assert!(err.to_string().contains("0-RTT"), "{err}");
}
