//! EchoStream's side: a server with an echo handler, an event listener and
//! two stream handlers (echo and sink), and a pinned client.

use super::EventSink;
use crate::Res;
use bytes::Bytes;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, listener_fn, ServerHandle};
use echostream::stream::{stream_handler_fn, StreamError};
use echostream::{Fingerprint, Method, ServerIdentity};
use std::sync::Arc;

/// The echo method as a typed descriptor, for the `EchoStream typed` system.
pub(crate) const ECHO: Method<Bytes, Bytes> = Method::new("echo");

/// A running EchoStream benchmark server.
pub(crate) struct EsServer {
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    /// Its certificate, which clients pin.
    pub(crate) fingerprint: Fingerprint,
    /// Connection count and shutdown.
    pub(crate) handle: ServerHandle,
    /// Where the `bench.event` listener counts.
    pub(crate) events: Arc<EventSink>,
}

/// Starts a server on `127.0.0.1:0` (call inside the server runtime).
pub(crate) async fn serve() -> Res<EsServer> {
    serve_on("127.0.0.1:0").await
}

/// Starts the same server on `bind` (`echostream-bench --serve`, for load generators such as
/// `echostream bench` in another process).
pub(crate) async fn serve_on(bind: &str) -> Res<EsServer> {
    let events = Arc::new(EventSink::default());
    let sink = events.clone();
    let server = RpcServer::builder()
        .bind(bind)
        .identity(ServerIdentity::Ephemeral)
        // Case 7 holds 10,000 connections from one address: both the total
        // (default 10,000, counting handshakes) and the per-address limit
        // (default 1,000) must be above it.
        .max_connections(1_000_000)
        .max_connections_per_address(1_000_000)
        // Case 8 reconnects with 0-RTT: the echo may run on early data.
        .zero_rtt(true)
        .handler(
            handler_fn(
                ECHO.name(),
                |_ctx: Context, b: Bytes| async move { Ok::<_, Error>(b) },
            )
            .mark_idempotent(),
        )
        .listener(listener_fn("bench.event", move |_ctx: Context, seq: u64| {
            let sink = sink.clone();
            async move { sink.on_event(seq) }
        }))
        .stream_handler(stream_handler_fn(
            "echo",
            |_ctx: Context, s: XStream| async move {
                let data = s.read_to_end().await?;
                s.write_chunk(Bytes::from(data)).await?;
                Ok::<_, StreamError>(())
            },
        ))
        .stream_handler(stream_handler_fn(
            "sink",
            |_ctx: Context, s: XStream| async move {
                let mut n = 0u64;
                while let Some(chunk) = s.read_chunk().await? {
                    n += chunk.len() as u64;
                }
                s.write_all(&n.to_be_bytes()).await?;
                Ok::<_, StreamError>(())
            },
        ))
        .build()?;
    let srv = EsServer {
        addr: server.local_addr().to_string(),
        fingerprint: server.fingerprint(),
        handle: server.handle(),
        events,
    };
    tokio::spawn(server.run());
    Ok(srv)
}

/// Connects a client that pins the server's certificate (no known-hosts file).
pub(crate) async fn connect(addr: &str, fingerprint: Fingerprint) -> Res<RpcClient> {
    Ok(RpcClient::builder().pin(fingerprint).connect(addr).await?)
}

/// Connect + first call with 0-RTT resumption, for case 8.
///
/// One client builder per server is kept for the whole run: its session store holds the
/// server's tickets, so each connection resumes and sends the hello and the 64-byte `echo`
/// (declared idempotent on both sides) as early data. The first call primes the store with an
/// unmeasured full connection; after each measured one, the function waits (unmeasured) until
/// the server's new tickets have arrived, so the next connection can resume too.
pub(crate) async fn echostream_zero_rtt_connect(
    addr: &str,
    fingerprint: Fingerprint,
) -> Res<std::time::Duration> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static BUILDERS: OnceLock<Mutex<HashMap<String, echostream::rpc::ClientBuilder>>> = OnceLock::new();
    let builders = BUILDERS.get_or_init(Default::default);
    let key = format!("{addr} {fingerprint}");
    let known = builders
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let payload = Bytes::from(vec![7u8; 64]);
    let builder = match known {
        Some(b) => b,
        None => {
            let b = RpcClient::builder().pin(fingerprint).idempotent("echo");
            let c = b.clone().connect(addr).await?;
            let _: Bytes = c.request("echo", &payload).await?;
            wait_for_ticket(&c).await;
            c.close().await;
            builders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, b.clone());
            b
        }
    };
    let t = Instant::now();
    let c = builder.connect(addr).await?;
    let back: Bytes = c.request("echo", &payload).await?;
    let elapsed = t.elapsed();
    if back != payload {
        return Err("0-RTT echo returned other bytes".into());
    }
    wait_for_ticket(&c).await;
    // Draining takes a few PTOs; it need not hold up the next measurement.
    tokio::spawn(async move { c.close().await });
    Ok(elapsed)
}

/// Connect + first call with a full handshake from a builder kept across
/// connections (so its UDP socket is reused, as in the 0-RTT case) with
/// resumption off: the like-for-like reference for 0-RTT in case 8.
pub(crate) async fn full_connect_kept(addr: &str, fingerprint: Fingerprint) -> Res<std::time::Duration> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static BUILDERS: OnceLock<Mutex<HashMap<String, echostream::rpc::ClientBuilder>>> = OnceLock::new();
    let builders = BUILDERS.get_or_init(Default::default);
    let key = format!("{addr} {fingerprint}");
    let builder = builders
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert_with(|| RpcClient::builder().pin(fingerprint).resumption(false))
        .clone();
    let payload = Bytes::from(vec![7u8; 64]);
    let t = Instant::now();
    let c = builder.connect(addr).await?;
    let back: Bytes = c.request("echo", &payload).await?;
    let elapsed = t.elapsed();
    if back != payload {
        return Err("echo returned other bytes".into());
    }
    tokio::spawn(async move { c.close().await });
    Ok(elapsed)
}

/// Waits (at most 2 s) until the client holds a session ticket for its server.
async fn wait_for_ticket(c: &RpcClient) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(2);
    while !c.can_resume() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// An EchoStream connection opened by hand on a shared quinn endpoint: the
/// server sees a conforming client (TLS with ALPN `echostream/1`, control
/// stream, hello, welcome), but the client side costs one connection, not
/// one `RpcClient` with its own UDP endpoint (about 3 MiB of quinn receive
/// buffers each, too much for 10,000 in one process). Case 7 uses it to
/// measure the *server's* memory per idle connection.
pub(crate) struct HelloConn {
    _conn: quinn::Connection,
    // The control stream stays open: the server treats its end as a close.
    _control: (quinn::SendStream, quinn::RecvStream),
}

/// Connects and completes the hello/welcome exchange.
pub(crate) async fn hello_connect(
    ep: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: std::net::SocketAddr,
) -> Res<HelloConn> {
    use echostream::types::{Frame, FrameDecoder, Hello, Metadata, PROTOCOL_VERSION};
    let conn = ep.connect_with(config, addr, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut buf = bytes::BytesMut::new();
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        max_frame_size: 32 << 20,
        metadata: Metadata::default(),
    })
    .encode(&mut buf)?;
    send.write_all(&buf).await?;
    let decoder = FrameDecoder::new(64 << 10);
    let mut got = bytes::BytesMut::new();
    loop {
        if let Some(frame) = decoder.decode(&mut got)? {
            match frame {
                Frame::Welcome(_) => break,
                other => return Err(format!("expected a welcome, got a {} frame", other.kind()).into()),
            }
        }
        match recv.read_chunk(64 << 10, true).await? {
            Some(c) => got.extend_from_slice(&c.bytes),
            None => return Err("control stream ended before the welcome".into()),
        }
    }
    Ok(HelloConn {
        _conn: conn,
        _control: (send, recv),
    })
}
