//! The raw-quinn baseline: the floor EchoStream is measured against.
//!
//! Same quinn and rustls versions, the same crypto provider and rustls
//! configurations (EchoStream's public `tls::server_crypto` /
//! `tls::client_crypto`: aws-lc-rs, TLS 1.3 only, X25519MLKEM768 first),
//! and EchoStream's default `TransportOptions` with 4 MiB socket buffers,
//! applied by EchoStream's own `TransportOptions::quinn` and
//! `connection::endpoint`, so the two cannot drift apart.
//!
//! Wire format: every bidirectional stream starts with a tag byte:
//! [`TAG_ECHO`] (the rest is echoed back, then FIN) or [`TAG_SINK`] (read
//! and counted to the end; the count comes back as a `u64`). Every
//! unidirectional stream carries events: big-endian `u64` sequence numbers.

use super::EventSink;
use crate::Res;
use bytes::Bytes;
use echostream::connection::TransportOptions;
use echostream::tls::{self, ClientTrust, Fingerprint, ServerIdentity};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// First byte of an echo stream.
pub(crate) const TAG_ECHO: u8 = 0;
/// First byte of a bulk stream whose bytes are counted and dropped.
pub(crate) const TAG_SINK: u8 = 1;
/// Largest echo accepted (the 1 MiB case plus room).
const MAX_ECHO: usize = 4 << 20;

/// EchoStream's transport configuration, for quinn.
pub(crate) fn transport(o: &TransportOptions) -> Arc<quinn::TransportConfig> {
    o.quinn().expect("default transport options are valid")
}

/// A UDP socket with EchoStream's default buffers, wrapped by quinn.
pub(crate) fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> Res<quinn::Endpoint> {
    Ok(echostream::connection::endpoint(
        addr,
        server,
        &TransportOptions::default(),
    )?)
}

/// A client endpoint bound like EchoStream's (`0.0.0.0:0`).
pub(crate) fn client_endpoint() -> Res<quinn::Endpoint> {
    endpoint((Ipv4Addr::UNSPECIFIED, 0).into(), None)
}

/// A running raw-quinn server.
pub(crate) struct QuinnServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its certificate, which clients pin.
    pub(crate) fingerprint: Fingerprint,
    /// Connections accepted (handshake complete).
    pub(crate) connections: Arc<AtomicU64>,
    /// Where events are counted.
    pub(crate) events: Arc<EventSink>,
    _endpoint: quinn::Endpoint,
}

/// Starts a server on `127.0.0.1:0`. With `zero_rtt` the server accepts
/// early data and answers it at once (0.5-RTT), as quinn's documentation
/// shows; without, it mirrors EchoStream's server (no early data, streams
/// served once the handshake is complete).
pub(crate) async fn serve(zero_rtt: bool) -> Res<QuinnServer> {
    let identity = ServerIdentity::Ephemeral.load()?;
    let mut crypto = tls::server_crypto(&identity)?;
    if zero_rtt {
        // quinn requires either 0 or u32::MAX here.
        crypto.max_early_data_size = u32::MAX;
    }
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto)?));
    config.transport_config(transport(&TransportOptions::default()));
    let ep = endpoint((Ipv4Addr::LOCALHOST, 0).into(), Some(config))?;
    let srv = QuinnServer {
        addr: ep.local_addr()?,
        fingerprint: identity.fingerprint,
        connections: Arc::default(),
        events: Arc::default(),
        _endpoint: ep.clone(),
    };
    let (connections, events) = (srv.connections.clone(), srv.events.clone());
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(serve_connection(
                incoming,
                zero_rtt,
                connections.clone(),
                events.clone(),
            ));
        }
    });
    Ok(srv)
}

async fn serve_connection(
    incoming: quinn::Incoming,
    zero_rtt: bool,
    connections: Arc<AtomicU64>,
    events: Arc<EventSink>,
) {
    let conn = if zero_rtt {
        let Ok(connecting) = incoming.accept() else { return };
        match connecting.into_0rtt() {
            Ok((conn, _)) => conn,
            Err(connecting) => match connecting.await {
                Ok(c) => c,
                Err(_) => return,
            },
        }
    } else {
        match incoming.await {
            Ok(c) => c,
            Err(_) => return,
        }
    };
    connections.fetch_add(1, Relaxed);
    loop {
        tokio::select! {
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => { tokio::spawn(serve_bi(send, recv)); }
                Err(_) => break,
            },
            uni = conn.accept_uni() => match uni {
                Ok(recv) => { tokio::spawn(serve_events(recv, events.clone())); }
                Err(_) => break,
            },
        }
    }
    connections.fetch_sub(1, Relaxed);
}

async fn serve_bi(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Res<()> {
    let mut tag = [0u8; 1];
    recv.read_exact(&mut tag).await?;
    match tag[0] {
        TAG_ECHO => {
            let data = recv.read_to_end(MAX_ECHO).await?;
            send.write_chunk(Bytes::from(data)).await?;
        }
        TAG_SINK => {
            let mut n = 0u64;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                n += chunk.bytes.len() as u64;
            }
            send.write_all(&n.to_be_bytes()).await?;
        }
        other => return Err(format!("unknown stream tag {other}").into()),
    }
    // quinn 0.11 keeps sending a finished stream's data after it is dropped.
    send.finish()?;
    Ok(())
}

async fn serve_events(mut recv: quinn::RecvStream, events: Arc<EventSink>) -> Res<()> {
    // Sequence numbers may be split across chunks: `carry` holds a partial one.
    let mut carry = [0u8; 8];
    let mut have = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        let mut b = &chunk.bytes[..];
        while !b.is_empty() {
            let take = (8 - have).min(b.len());
            carry[have..have + take].copy_from_slice(&b[..take]);
            have += take;
            b = &b[take..];
            if have == 8 {
                events.on_event(u64::from_be_bytes(carry));
                have = 0;
            }
        }
    }
    Ok(())
}

/// Session resumption of a client configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// rustls's default (an in-memory session store, no early data).
    Default,
    /// No session store: every handshake is a full one.
    Never,
    /// Session store and early data (0-RTT).
    ZeroRtt,
}

/// A client configuration that pins `fingerprint`, with EchoStream's
/// transport settings.
pub(crate) fn client_config(fingerprint: Fingerprint, resume: Resume) -> Res<quinn::ClientConfig> {
    // The host key only matters for known-hosts trust.
    let (mut crypto, _report) = tls::client_crypto(&ClientTrust::Pinned(vec![fingerprint]), "localhost")?;
    match resume {
        Resume::Default => {}
        Resume::Never => crypto.resumption = rustls::client::Resumption::disabled(),
        Resume::ZeroRtt => crypto.enable_early_data = true,
    }
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto)?));
    config.transport_config(transport(&TransportOptions::default()));
    Ok(config)
}

/// Connects with a fresh configuration.
pub(crate) async fn connect(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    resume: Resume,
) -> Res<quinn::Connection> {
    let config = client_config(fingerprint, resume)?;
    Ok(ep.connect_with(config, addr, "localhost")?.await?)
}

/// One echo call: a new bidirectional stream, tag + payload, FIN, read to the end.
pub(crate) async fn echo(conn: &quinn::Connection, payload: &Bytes) -> Res<Bytes> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all_chunks(&mut [Bytes::from_static(&[TAG_ECHO]), payload.clone()])
        .await?;
    send.finish()?;
    Ok(Bytes::from(recv.read_to_end(MAX_ECHO).await?))
}
