//! Control-stream frames and their byte encoding.
//!
//! Every frame is `length: u32 | type: u8 | body`, big-endian, where `length`
//! counts the type byte and the body (not itself). [`FrameDecoder`] reads the
//! length first and refuses anything above the limit before buffering more;
//! only then does it parse. The full layout of each body is in
//! `ARCHITECTURE.md`.

use crate::cursor::{
    get_metadata, get_str, get_u16, get_u32, get_u64, get_u8, put_metadata, put_str, CursorError,
};
use crate::{metadata::Metadata, status::CloseCode, Code, Codec, Status};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Duration;

/// Frame type bytes.
mod ty {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const WELCOME: u8 = 0x02;
    pub(super) const REQUEST: u8 = 0x03;
    pub(super) const RESPONSE_OK: u8 = 0x04;
    pub(super) const RESPONSE_ERR: u8 = 0x05;
    pub(super) const EVENT: u8 = 0x06;
    pub(super) const CANCEL: u8 = 0x07;
    pub(super) const PING: u8 = 0x08;
    pub(super) const PONG: u8 = 0x09;
    pub(super) const GOAWAY: u8 = 0x0A;
    pub(super) const TIME_REQUEST: u8 = 0x0B;
    pub(super) const TIME_RESPONSE: u8 = 0x0C;
}

/// Flag bits in request and event frames.
const FLAG_DEADLINE: u8 = 0x01;
const FLAG_METADATA: u8 = 0x02;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// The hello a client sends first, and the welcome a server answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the sender.
    pub version: u16,
    /// The largest frame (length prefix excluded) the sender accepts.
    pub max_frame_size: u32,
    /// Application metadata (credentials, client name, ...).
    pub metadata: Metadata,
}

/// A request: call `method` with `payload`, answer with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFrame {
    /// Request id: even when the client (connection opener) calls, odd when the server calls.
    pub id: u64,
    /// Method name.
    pub method: String,
    /// Codec of the payload; the response uses the same one.
    pub codec: Codec,
    /// Time the caller will wait, relative to when the frame was sent.
    pub deadline: Option<Duration>,
    /// Request metadata.
    pub metadata: Metadata,
    /// The encoded argument.
    pub payload: Bytes,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub id: u64,
    /// Encoded result, or the error status.
    pub result: Result<(Codec, Bytes), Status>,
}

/// A one-way event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFrame {
    /// Event name.
    pub name: String,
    /// Codec of the payload.
    pub codec: Codec,
    /// Event metadata.
    pub metadata: Metadata,
    /// The encoded value.
    pub payload: Bytes,
}

/// A control-stream frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// First frame from the client.
    Hello(Hello),
    /// The server's answer to a compatible hello.
    Welcome(Hello),
    /// A call.
    Request(RequestFrame),
    /// The answer to a call.
    Response(ResponseFrame),
    /// A one-way event.
    Event(EventFrame),
    /// The caller gave up on request `id`.
    Cancel {
        /// The request to cancel.
        id: u64,
    },
    /// Liveness probe; answered with a pong carrying the same nonce.
    Ping(u64),
    /// Answer to a ping.
    Pong(u64),
    /// Clock-sync probe: `t1` is the sender's clock when it was written
    /// (nanoseconds since the UNIX epoch, sender's clock).
    TimeRequest {
        /// Send time on the requester's clock.
        t1: u64,
    },
    /// Answer to a clock-sync probe: the request's `t1`, the responder's
    /// receive time `t2` and transmit time `t3` (responder's clock, same unit).
    TimeResponse {
        /// Echoed send time of the request.
        t1: u64,
        /// When the responder received the request.
        t2: u64,
        /// When the responder sent this answer.
        t3: u64,
    },
    /// The sender takes no new requests; requests in flight still complete.
    GoAway {
        /// Why (a [`CloseCode`]).
        code: CloseCode,
        /// Human-readable reason.
        reason: String,
    },
}

impl Frame {
    /// A short name of the frame type, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Request(_) => "request",
            Frame::Response(_) => "response",
            Frame::Event(_) => "event",
            Frame::Cancel { .. } => "cancel",
            Frame::Ping(_) => "ping",
            Frame::Pong(_) => "pong",
            Frame::TimeRequest { .. } => "time request",
            Frame::TimeResponse { .. } => "time response",
            Frame::GoAway { .. } => "go-away",
        }
    }

    /// Encodes the frame, length prefix included, into `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        let tail = self.encode_split(dst)?;
        dst.extend_from_slice(&tail);
        Ok(())
    }

    /// Encodes everything but the trailing payload into `dst` and returns the
    /// payload, which must be written right after it. The length prefix
    /// already counts the payload. This lets a writer send large payloads
    /// without copying them.
    pub fn encode_split(&self, dst: &mut BytesMut) -> Result<Bytes, FrameError> {
        self.encode_split_ref(dst).cloned()
    }

    /// [`Frame::encode_split`] returning the payload by reference, for a writer that copies a
    /// small one (cloning a `Bytes` made from a `Vec` allocates).
    pub fn encode_split_ref(&self, dst: &mut BytesMut) -> Result<&Bytes, FrameError> {
        static EMPTY: Bytes = Bytes::new();
        let start = dst.len();
        dst.put_u32(0); // length, patched below
        let tail = match self {
            Frame::Hello(h) | Frame::Welcome(h) => {
                dst.put_u8(if matches!(self, Frame::Hello(_)) {
                    ty::HELLO
                } else {
                    ty::WELCOME
                });
                dst.put_u16(h.version);
                dst.put_u32(h.max_frame_size);
                put_metadata(dst, &h.metadata)?;
                &EMPTY
            }
            Frame::Request(r) => {
                RequestRef::from(r).put_body(dst)?;
                &r.payload
            }
            Frame::Response(r) => match &r.result {
                Ok((codec, payload)) => {
                    dst.put_u8(ty::RESPONSE_OK);
                    dst.put_u64(r.id);
                    dst.put_u8(codec.tag());
                    payload
                }
                Err(status) => {
                    dst.put_u8(ty::RESPONSE_ERR);
                    dst.put_u64(r.id);
                    dst.put_u32(status.code().0);
                    put_str(dst, "message", status.message())?;
                    status.details()
                }
            },
            Frame::Event(e) => {
                dst.put_u8(ty::EVENT);
                let flags = if e.metadata.is_empty() { 0 } else { FLAG_METADATA };
                dst.put_u8(flags);
                put_str(dst, "event name", &e.name)?;
                dst.put_u8(e.codec.tag());
                if !e.metadata.is_empty() {
                    put_metadata(dst, &e.metadata)?;
                }
                &e.payload
            }
            Frame::Cancel { id } => {
                dst.put_u8(ty::CANCEL);
                dst.put_u64(*id);
                &EMPTY
            }
            Frame::Ping(n) => {
                dst.put_u8(ty::PING);
                dst.put_u64(*n);
                &EMPTY
            }
            Frame::Pong(n) => {
                dst.put_u8(ty::PONG);
                dst.put_u64(*n);
                &EMPTY
            }
            Frame::TimeRequest { t1 } => {
                dst.put_u8(ty::TIME_REQUEST);
                dst.put_u64(*t1);
                &EMPTY
            }
            Frame::TimeResponse { t1, t2, t3 } => {
                dst.put_u8(ty::TIME_RESPONSE);
                dst.put_u64(*t1);
                dst.put_u64(*t2);
                dst.put_u64(*t3);
                &EMPTY
            }
            Frame::GoAway { code, reason } => {
                dst.put_u8(ty::GOAWAY);
                dst.put_u32(code.0);
                put_str(dst, "reason", reason)?;
                &EMPTY
            }
        };
        patch_length(dst, start, tail.len())?;
        Ok(tail)
    }

    /// Size of the encoded frame, length prefix included.
    pub fn encoded_len(&self) -> Result<usize, FrameError> {
        let mut buf = BytesMut::new();
        let tail = self.encode_split(&mut buf)?;
        Ok(buf.len() + tail.len())
    }

    /// Parses one complete frame body (type byte + body, no length prefix).
    /// Payload fields are slices of `body`: nothing is copied.
    pub fn decode_body(mut body: Bytes) -> Result<Frame, FrameError> {
        let t = get_u8(&mut body, "frame type")?;
        let frame = match t {
            ty::HELLO | ty::WELCOME => {
                let version = get_u16(&mut body, "version")?;
                let max_frame_size = get_u32(&mut body, "max frame size")?;
                let metadata = get_metadata(&mut body)?;
                let h = Hello {
                    version,
                    max_frame_size,
                    metadata,
                };
                expect_end(&body, "hello")?;
                if t == ty::HELLO {
                    Frame::Hello(h)
                } else {
                    Frame::Welcome(h)
                }
            }
            ty::REQUEST => {
                let id = get_u64(&mut body, "request id")?;
                let flags = get_u8(&mut body, "request flags")?;
                if flags & !(FLAG_DEADLINE | FLAG_METADATA) != 0 {
                    return Err(FrameError::Malformed(format!(
                        "unknown request flags {flags:#04x}"
                    )));
                }
                let method = get_str(&mut body, "method")?;
                let codec = Codec::from_tag(get_u8(&mut body, "codec")?);
                let deadline = if flags & FLAG_DEADLINE != 0 {
                    Some(Duration::from_micros(get_u64(&mut body, "deadline")?))
                } else {
                    None
                };
                let metadata = if flags & FLAG_METADATA != 0 {
                    get_metadata(&mut body)?
                } else {
                    Metadata::new()
                };
                Frame::Request(RequestFrame {
                    id,
                    method,
                    codec,
                    deadline,
                    metadata,
                    payload: body,
                })
            }
            ty::RESPONSE_OK => {
                let id = get_u64(&mut body, "response id")?;
                let codec = Codec::from_tag(get_u8(&mut body, "codec")?);
                Frame::Response(ResponseFrame {
                    id,
                    result: Ok((codec, body)),
                })
            }
            ty::RESPONSE_ERR => {
                let id = get_u64(&mut body, "response id")?;
                let code = Code(get_u32(&mut body, "status code")?);
                let message = get_str(&mut body, "message")?;
                Frame::Response(ResponseFrame {
                    id,
                    result: Err(Status::new(code, message).with_details(body)),
                })
            }
            ty::EVENT => {
                let flags = get_u8(&mut body, "event flags")?;
                if flags & !FLAG_METADATA != 0 {
                    return Err(FrameError::Malformed(format!("unknown event flags {flags:#04x}")));
                }
                let name = get_str(&mut body, "event name")?;
                let codec = Codec::from_tag(get_u8(&mut body, "codec")?);
                let metadata = if flags & FLAG_METADATA != 0 {
                    get_metadata(&mut body)?
                } else {
                    Metadata::new()
                };
                Frame::Event(EventFrame {
                    name,
                    codec,
                    metadata,
                    payload: body,
                })
            }
            ty::CANCEL | ty::PING | ty::PONG => {
                let n = get_u64(&mut body, "id")?;
                expect_end(&body, "cancel/ping/pong")?;
                match t {
                    ty::CANCEL => Frame::Cancel { id: n },
                    ty::PING => Frame::Ping(n),
                    _ => Frame::Pong(n),
                }
            }
            ty::TIME_REQUEST => {
                let t1 = get_u64(&mut body, "t1")?;
                expect_end(&body, "time request")?;
                Frame::TimeRequest { t1 }
            }
            ty::TIME_RESPONSE => {
                let t1 = get_u64(&mut body, "t1")?;
                let t2 = get_u64(&mut body, "t2")?;
                let t3 = get_u64(&mut body, "t3")?;
                expect_end(&body, "time response")?;
                Frame::TimeResponse { t1, t2, t3 }
            }
            ty::GOAWAY => {
                let code = CloseCode(get_u32(&mut body, "go-away code")?);
                let reason = get_str(&mut body, "reason")?;
                expect_end(&body, "go-away")?;
                Frame::GoAway { code, reason }
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok(frame)
    }
}

/// Incremental decoder for a byte stream of frames.
///
/// Feed it the bytes received so far; it returns complete frames and leaves
/// partial ones in the buffer. A declared length above the limit is an error
/// as soon as the four length bytes are in, before the body is buffered.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame_size: u32,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame_size` bytes (length prefix excluded).
    pub fn new(max_frame_size: u32) -> Self {
        Self { max_frame_size }
    }

    /// The limit.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Checks whether `buf` starts with a complete frame, without parsing it.
    /// Returns the total length (prefix included) when complete, `None` when
    /// more bytes are needed.
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if buf.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 {
            return Err(FrameError::Malformed("frame of length 0".into()));
        }
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                declared: u64::from(len),
                limit: self.max_frame_size,
            });
        }
        let total = LENGTH_PREFIX + len as usize;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Removes and parses the first complete frame in `buf`, if there is one.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.check(buf)? {
            None => Ok(None),
            Some(total) => {
                let mut frame = buf.split_to(total).freeze();
                frame.advance(LENGTH_PREFIX);
                Frame::decode_body(frame).map(Some)
            }
        }
    }
}

/// A frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length exceeds the limit.
    #[error("frame of {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared (or actual) length.
        declared: u64,
        /// The limit in force.
        limit: u32,
    },
    /// The frame type byte is not known.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The frame ended before a field was complete.
    #[error("frame truncated: {0} is incomplete")]
    Truncated(&'static str),
    /// A string field is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A field is too long to encode.
    #[error("{field} is {len} bytes, the limit is {limit}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Any other malformation.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl From<CursorError> for FrameError {
    fn from(e: CursorError) -> Self {
        match e {
            CursorError::Truncated(what) => FrameError::Truncated(what),
            CursorError::Utf8(what) => FrameError::InvalidUtf8(what),
            CursorError::TooLong { what, len, limit } => FrameError::FieldTooLong {
                field: what,
                len,
                limit,
            },
        }
    }
}

/// Writes the length of the frame that starts at `start` in `dst` (its prefix reserved as zero),
/// counting a payload of `tail` bytes still to follow.
fn patch_length(dst: &mut BytesMut, start: usize, tail: usize) -> Result<(), FrameError> {
    let len = dst.len() - start - LENGTH_PREFIX + tail;
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        declared: len as u64,
        limit: u32::MAX,
    })?;
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A request frame that borrows its method name, metadata and payload: the caller encodes it
/// without building a [`RequestFrame`] (whose `String` method would be an allocation per call).
/// Encodes exactly as `Frame::Request`.
#[derive(Debug, Clone, Copy)]
pub struct RequestRef<'a> {
    /// Request id (see [`RequestFrame::id`]).
    pub id: u64,
    /// Method name.
    pub method: &'a str,
    /// Codec of the payload.
    pub codec: Codec,
    /// Time the caller will wait, relative to when the frame was sent.
    pub deadline: Option<Duration>,
    /// Call metadata.
    pub metadata: &'a Metadata,
    /// Encoded arguments.
    pub payload: &'a Bytes,
}

impl<'a> From<&'a RequestFrame> for RequestRef<'a> {
    fn from(r: &'a RequestFrame) -> Self {
        RequestRef {
            id: r.id,
            method: &r.method,
            codec: r.codec,
            deadline: r.deadline,
            metadata: &r.metadata,
            payload: &r.payload,
        }
    }
}

impl<'a> RequestRef<'a> {
    /// [`Frame::encode_split_ref`] for this request: everything but the payload into `dst`,
    /// and the payload to write right after it.
    pub fn encode_split_ref(&self, dst: &mut BytesMut) -> Result<&'a Bytes, FrameError> {
        let start = dst.len();
        dst.put_u32(0); // length, patched below
        self.put_body(dst)?;
        patch_length(dst, start, self.payload.len())?;
        Ok(self.payload)
    }

    /// Type byte and body up to the payload.
    fn put_body(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.put_u8(ty::REQUEST);
        dst.put_u64(self.id);
        let mut flags = 0;
        if self.deadline.is_some() {
            flags |= FLAG_DEADLINE;
        }
        if !self.metadata.is_empty() {
            flags |= FLAG_METADATA;
        }
        dst.put_u8(flags);
        put_str(dst, "method", self.method)?;
        dst.put_u8(self.codec.tag());
        if let Some(d) = self.deadline {
            dst.put_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
        if !self.metadata.is_empty() {
            put_metadata(dst, self.metadata)?;
        }
        Ok(())
    }
}

fn expect_end(b: &Bytes, frame: &'static str) -> Result<(), FrameError> {
    if b.has_remaining() {
        return Err(FrameError::Malformed(format!(
            "{} unexpected bytes at the end of a {frame} frame",
            b.remaining()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
