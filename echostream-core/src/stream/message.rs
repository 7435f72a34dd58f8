//! Typed-message framing over an [`XStream`]: writing one message, reading the next, and ending
//! a stream both sides see as failed after a bad message. Shared by every typed endpoint.
//!
//! A message is framed as `len: u32` (big-endian, counts what follows),
//! `codec: u8` (the payload codec tag, as in requests), then the payload.
//! The receiver checks `len` against its `max_message_size` before it
//! buffers the message.
//!
//! A timestamped message (`send_with_timestamp`) sets bit 7 of the codec
//! byte ([`TIMED_FLAG`]) and puts the sender's timestamp (`u64` big-endian,
//! nanoseconds since the UNIX epoch on the sender's clock) between the codec
//! byte and the payload; `len` counts it. A plain receiver ignores the
//! timestamp; a [`TimedReceiver`](super::TimedReceiver) maps it to the local clock and plays the
//! message out through a [`JitterBuffer`](super::JitterBuffer).

use super::wire::{self, code};
use super::{Side, StreamError, XStream};
use crate::protocol::timesync::Timestamp;
use crate::Error;
use bytes::{Buf, BytesMut};
use echostream_types::{Code, Codec, Status};
use serde::{de::DeserializeOwned, Serialize};

const PREFIX: usize = 4;

/// Bit 7 of the codec byte: an 8-byte timestamp follows it.
pub const TIMED_FLAG: u8 = 0x80;

/// Converts a stream error into the crate error, turning an error block
/// written by a typed acceptor into `Error::Remote` with its status.
pub(super) fn typed_error(e: StreamError) -> Error {
    match e {
        StreamError::Remote { stream, data } => Error::Remote {
            method: stream,
            status: wire::decode_status(&data),
        },
        other => Error::Stream(other),
    }
}

/// Encodes and writes one message.
pub(super) async fn send_message<M: Serialize>(
    stream: &XStream,
    codec: Codec,
    max: usize,
    msg: &M,
    ts: Option<Timestamp>,
) -> Result<(), Error> {
    let payload = codec.encode(msg).map_err(|e| {
        Error::Stream(StreamError::BadMessage {
            stream: stream.name().to_owned(),
            detail: format!("message did not encode ({}): {e}", codec.name()),
        })
    })?;
    let extra = if ts.is_some() { 9 } else { 1 };
    if payload.len() + extra > max {
        let e = StreamError::TooLarge {
            stream: stream.name().to_owned(),
            what: "message",
            size: (payload.len() + extra) as u64,
            limit: max as u64,
        };
        // The stream ends on both sides: the receiver sees the code.
        stream.abort(code::MESSAGE_TOO_LARGE).await;
        return Err(Error::Stream(e));
    }
    let mut head = BytesMut::with_capacity(PREFIX + extra);
    head.extend_from_slice(&((payload.len() + extra) as u32).to_be_bytes());
    match ts {
        Some(ts) => {
            head.extend_from_slice(&[codec.tag() | TIMED_FLAG]);
            head.extend_from_slice(&ts.0.to_be_bytes());
        }
        None => head.extend_from_slice(&[codec.tag()]),
    }
    stream
        .write_chunks(&mut [head.freeze(), payload])
        .await
        .map_err(typed_error)
}

/// Reads framed messages from an [`XStream`].
pub(super) struct MessageReader {
    buf: BytesMut,
    count: u64,
}

impl MessageReader {
    pub(super) fn new() -> Self {
        MessageReader {
            buf: BytesMut::new(),
            count: 0,
        }
    }

    /// Fills the buffer to `n` bytes; false at a clean end.
    async fn fill(&mut self, stream: &XStream, n: usize) -> Result<bool, StreamError> {
        while self.buf.len() < n {
            match stream.read_chunk().await? {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    pub(super) async fn next<T: DeserializeOwned>(
        &mut self,
        stream: &XStream,
    ) -> Result<Option<T>, StreamError> {
        Ok(self.next_timed(stream).await?.map(|(m, _)| m))
    }

    /// The next message and its timestamp, if it carried one.
    pub(super) async fn next_timed<T: DeserializeOwned>(
        &mut self,
        stream: &XStream,
    ) -> Result<Option<(T, Option<Timestamp>)>, StreamError> {
        let name = || stream.name().to_owned();
        if !self.fill(stream, PREFIX).await? {
            if self.buf.is_empty() {
                return Ok(None);
            }
            return Err(StreamError::BadMessage {
                stream: name(),
                detail: "the stream ended inside a message".into(),
            });
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let max = stream.options().max_message_size;
        if len > max {
            return Err(StreamError::TooLarge {
                stream: name(),
                what: "incoming message",
                size: len as u64,
                limit: max as u64,
            });
        }
        if len == 0 {
            return Err(StreamError::BadMessage {
                stream: name(),
                detail: "message without a codec byte".into(),
            });
        }
        if !self.fill(stream, PREFIX + len).await? {
            return Err(StreamError::BadMessage {
                stream: name(),
                detail: "the stream ended inside a message".into(),
            });
        }
        self.buf.advance(PREFIX);
        let msg = self.buf.split_to(len);
        let (codec, ts, body) = if msg[0] & TIMED_FLAG != 0 {
            if msg.len() < 9 {
                return Err(StreamError::BadMessage {
                    stream: name(),
                    detail: "timestamped message shorter than its timestamp".into(),
                });
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&msg[1..9]);
            (
                Codec::from_tag(msg[0] & !TIMED_FLAG),
                Some(Timestamp(u64::from_be_bytes(b))),
                &msg[9..],
            )
        } else {
            (Codec::from_tag(msg[0]), None, &msg[1..])
        };
        self.count += 1;
        codec
            .decode::<T>(body)
            .map(|m| Some((m, ts)))
            .map_err(|e| StreamError::BadMessage {
                stream: name(),
                detail: format!(
                    "message {} did not decode as {} ({}): {e}",
                    self.count,
                    std::any::type_name::<T>(),
                    codec.name()
                ),
            })
    }
}

/// Ends a stream after a bad incoming message, so both sides know: the
/// acceptor writes the error on the error half; the opener aborts the
/// stream with a code the acceptor reports.
pub(super) async fn end_after_bad_message(stream: &XStream, e: &StreamError) {
    let (status_code, abort_code) = match e {
        StreamError::TooLarge { .. } => (Code::RESOURCE_EXHAUSTED, code::MESSAGE_TOO_LARGE),
        _ => (Code::BAD_PAYLOAD, code::BAD_MESSAGE),
    };
    match stream.side() {
        Side::Acceptor => {
            let status = Status::new(status_code, e.to_string());
            let _ = stream.error_write(&wire::encode_status(&status), false).await;
        }
        Side::Opener => stream.abort(abort_code).await,
    }
}

pub(super) fn is_bad_message(e: &StreamError) -> bool {
    matches!(e, StreamError::TooLarge { .. } | StreamError::BadMessage { .. })
}

/// Writes `status` on the error half after the data already written: how a
/// receiver ends a typed stream with an error the sender sees as `Error::Remote`.
pub(super) async fn fail_with(stream: &XStream, status: &Status) -> Result<(), Error> {
    stream
        .error_write(&wire::encode_status(status), true)
        .await
        .map_err(Error::Stream)
}
