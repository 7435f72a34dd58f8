//! The hello/welcome exchange that opens every connection's control stream.

use super::ProtocolConfig;
use crate::Error;
use bytes::BytesMut;
use echostream_types::{CloseCode, Frame, FrameDecoder, Hello, PROTOCOL_VERSION};

/// Largest hello or welcome accepted (they carry only metadata).
const MAX_HELLO: u32 = 64 * 1024;
/// Smallest frame limit a peer may announce: below it no call fits.
pub(crate) const MIN_PEER_FRAME: u32 = 1024;

/// A completed handshake: the control stream and what the peer said.
#[derive(Debug)]
pub(crate) struct HandshakeOutcome {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    /// Bytes read after the peer's hello/welcome (frames it pipelined).
    pub(crate) leftover: BytesMut,
    pub(crate) peer_hello: Hello,
}

/// Why a handshake failed, with the close code sent to the peer (if any).
#[derive(Debug)]
pub(crate) struct HandshakeError {
    pub(crate) close: Option<CloseCode>,
    pub(crate) reason: String,
    pub(crate) conn: Option<quinn::ConnectionError>,
}

impl HandshakeError {
    fn local(code: CloseCode, reason: String) -> Self {
        Self {
            close: Some(code),
            reason,
            conn: None,
        }
    }

    /// The connection went away under the handshake: nothing to send.
    fn lost(c: quinn::ConnectionError) -> Self {
        Self {
            close: None,
            reason: c.to_string(),
            conn: Some(c),
        }
    }

    fn write(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => Self::lost(c),
            other => Self::local(CloseCode::PROTOCOL_VIOLATION, format!("control stream: {other}")),
        }
    }
}

fn our_hello(config: &ProtocolConfig) -> Hello {
    let mut metadata = config.hello_metadata.clone();
    super::credit::EventCredit::announce(&mut metadata, config.event_queue);
    super::compress::announce(&mut metadata);
    Hello {
        version: PROTOCOL_VERSION,
        max_frame_size: config.max_frame_size,
        metadata,
    }
}

async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), HandshakeError> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf).map_err(|e| {
        HandshakeError::local(
            CloseCode::INTERNAL,
            format!("cannot encode {}: {e}", frame.kind()),
        )
    })?;
    send.write_all(&buf).await.map_err(HandshakeError::write)
}

/// How long a side that found the control stream finished before the hello waits for the
/// connection's close: a peer that refuses the connection finishes the stream, then closes
/// with its reason (`REJECTED` and why), which is what the caller should see.
const CLOSE_REASON_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn read_frame(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
) -> Result<Frame, HandshakeError> {
    let decoder = FrameDecoder::new(MAX_HELLO);
    loop {
        match decoder.decode(buf) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => {
                return Err(HandshakeError::local(
                    CloseCode::PROTOCOL_VIOLATION,
                    format!("bad hello: {e}"),
                ))
            }
        }
        match recv.read_chunk(MAX_HELLO as usize, true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) => {
                return Err(
                    match tokio::time::timeout(CLOSE_REASON_WAIT, conn.closed()).await {
                        Ok(closed) => HandshakeError::lost(closed),
                        Err(_) => HandshakeError::local(
                            CloseCode::PROTOCOL_VIOLATION,
                            "control stream ended before the hello".into(),
                        ),
                    },
                )
            }
            Err(quinn::ReadError::ConnectionLost(c)) => return Err(HandshakeError::lost(c)),
            Err(e) => {
                return Err(HandshakeError::local(
                    CloseCode::PROTOCOL_VIOLATION,
                    format!("control stream: {e}"),
                ))
            }
        }
    }
}

fn check_peer(h: &Hello, peer: &str) -> Result<(), HandshakeError> {
    if h.version != PROTOCOL_VERSION {
        return Err(HandshakeError::local(
            CloseCode::VERSION_MISMATCH,
            format!(
                "protocol version mismatch: the {peer} speaks version {}, this side speaks version {PROTOCOL_VERSION}",
                h.version
            ),
        ));
    }
    if h.max_frame_size < MIN_PEER_FRAME {
        return Err(HandshakeError::local(
            CloseCode::PROTOCOL_VIOLATION,
            format!(
                "the {peer} announced a frame limit of {} bytes, below the minimum of {MIN_PEER_FRAME}",
                h.max_frame_size
            ),
        ));
    }
    Ok(())
}

/// Client side: open the control stream, send the hello, read the welcome.
pub(crate) async fn client_handshake(
    conn: &quinn::Connection,
    config: &ProtocolConfig,
) -> Result<HandshakeOutcome, HandshakeError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(HandshakeError::lost)?;
    // The control stream goes ahead of bulk side streams.
    let _ = send.set_priority(1);
    write_frame(&mut send, &Frame::Hello(our_hello(config))).await?;
    let mut buf = BytesMut::new();
    let welcome = check_welcome(read_frame(conn, &mut recv, &mut buf).await?)?;
    Ok(HandshakeOutcome {
        send,
        recv,
        leftover: buf,
        peer_hello: welcome,
    })
}

/// Client side with 0-RTT: open the control stream and write the hello as early data, without
/// waiting for the welcome (the connection's reader task reads it, see [`check_welcome`]).
/// Returns the stream halves and the hello's encoded bytes, to be sent again on a new control
/// stream if the server rejects the early data.
pub(crate) async fn client_send_hello(
    conn: &quinn::Connection,
    config: &ProtocolConfig,
) -> Result<(quinn::SendStream, quinn::RecvStream, bytes::Bytes), HandshakeError> {
    let (mut send, recv) = conn.open_bi().await.map_err(HandshakeError::lost)?;
    let _ = send.set_priority(1);
    let mut buf = BytesMut::new();
    Frame::Hello(our_hello(config))
        .encode(&mut buf)
        .map_err(|e| HandshakeError::local(CloseCode::INTERNAL, format!("cannot encode hello: {e}")))?;
    let hello = buf.freeze();
    match send.write_all(&hello).await {
        Ok(()) => {}
        // Rejected before the write: the writer task sends the hello again.
        Err(quinn::WriteError::ZeroRttRejected) => {}
        Err(e) => return Err(HandshakeError::write(e)),
    }
    Ok((send, recv, hello))
}

/// Checks the first frame the server sent on a control stream opened by
/// [`client_send_hello`]: it must be an acceptable welcome.
pub(crate) fn check_welcome(frame: Frame) -> Result<Hello, HandshakeError> {
    let welcome = match frame {
        Frame::Welcome(w) => w,
        other => {
            return Err(HandshakeError::local(
                CloseCode::PROTOCOL_VIOLATION,
                format!("expected a welcome, got a {} frame", other.kind()),
            ))
        }
    };
    check_peer(&welcome, "server")?;
    Ok(welcome)
}

/// Server side, first half: accept the control stream and read the hello.
/// The caller decides whether to admit the client, then calls
/// [`server_send_welcome`].
pub(crate) async fn server_read_hello(
    conn: &quinn::Connection,
) -> Result<(quinn::SendStream, quinn::RecvStream, BytesMut, Hello), HandshakeError> {
    let (send, mut recv) = conn.accept_bi().await.map_err(HandshakeError::lost)?;
    let _ = send.set_priority(1);
    let mut buf = BytesMut::new();
    let hello = match read_frame(conn, &mut recv, &mut buf).await? {
        Frame::Hello(h) => h,
        other => {
            return Err(HandshakeError::local(
                CloseCode::PROTOCOL_VIOLATION,
                format!("expected a hello, got a {} frame", other.kind()),
            ))
        }
    };
    check_peer(&hello, "client")?;
    Ok((send, recv, buf, hello))
}

/// Server side, second half: answer an admitted hello.
pub(crate) async fn server_send_welcome(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    leftover: BytesMut,
    hello: Hello,
    config: &ProtocolConfig,
) -> Result<HandshakeOutcome, HandshakeError> {
    write_frame(&mut send, &Frame::Welcome(our_hello(config))).await?;
    Ok(HandshakeOutcome {
        send,
        recv,
        leftover,
        peer_hello: hello,
    })
}

/// Maps a failed client handshake to the public error, first closing the
/// connection with the code the failure calls for (if any).
pub(crate) fn client_error(conn: &quinn::Connection, addr: &str, e: HandshakeError) -> Error {
    // Tell the server why, when the failure was ours to report.
    if let Some(code) = e.close {
        conn.close(code.0.into(), e.reason.as_bytes());
    }
    if let Some(c) = &e.conn {
        // A TLS alert from the server right after our Finished: in TLS 1.3 the server checks
        // the client's certificate last, so a missing or untrusted one surfaces here.
        if let quinn::ConnectionError::ConnectionClosed(closed) = c {
            let raw = u64::from(closed.error_code);
            if (0x100..0x200).contains(&raw) {
                return Error::Rejected {
                    addr: addr.to_owned(),
                    reason: format!(
                        "the server refused this client's TLS credentials (TLS alert {}: {}); a server \
                         that requires a client certificate needs one it trusts \
                         (ClientBuilder::client_identity)",
                        raw - 0x100,
                        String::from_utf8_lossy(&closed.reason)
                    ),
                };
            }
        }
        let (code, reason) = super::describe_close(c);
        return match code {
            Some(CloseCode::REJECTED) => Error::Rejected {
                addr: addr.to_owned(),
                reason: reason_text(c).unwrap_or(reason),
            },
            _ => Error::ConnectionClosed { code, reason },
        };
    }
    Error::ConnectionClosed {
        code: e.close,
        reason: e.reason,
    }
}

/// The reason string the peer put in its application close, if any.
fn reason_text(c: &quinn::ConnectionError) -> Option<String> {
    match c {
        quinn::ConnectionError::ApplicationClosed(a) => Some(String::from_utf8_lossy(&a.reason).into_owned()),
        _ => None,
    }
}
