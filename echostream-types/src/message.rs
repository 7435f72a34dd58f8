//! Typed-message framing on an XStream, sans-IO, and the error data typed streams write on
//! the error half.
//!
//! A message is framed as `len: u32` (big-endian, counts what follows),
//! `codec: u8` (the payload codec tag, as in requests), then the payload.
//! The receiver checks `len` against its limit before it buffers the message
//! ([`MessageDecoder`]).
//!
//! A timestamped message sets bit 7 of the codec byte ([`TIMED_FLAG`]) and
//! puts the sender's timestamp (`u64` big-endian, nanoseconds since the UNIX
//! epoch on the sender's clock) between the codec byte and the payload; `len`
//! counts it. A receiver that does not play messages out in time ignores it.
//!
//! A typed stream that fails writes a [`Status`] as its error block:
//! `code: u32`, then the UTF-8 message ([`encode_status`]).

use crate::cursor::truncate_str;
use crate::{Code, Codec, Status};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bit 7 of the codec byte: an 8-byte timestamp follows it.
pub const TIMED_FLAG: u8 = 0x80;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Bytes of the timestamp of a timestamped message.
const TIMESTAMP_LEN: usize = 8;

/// Longest status message written as error data, in bytes: the block stays under the default
/// 64 KiB error-block limit.
const MAX_STATUS_MESSAGE: usize = 60 * 1024;

/// One framed message: its codec, the sender's timestamp if it carried one, and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload codec named by the codec byte.
    pub codec: Codec,
    /// Nanoseconds since the UNIX epoch on the sender's clock, for a timestamped message.
    pub timestamp: Option<u64>,
    /// The encoded payload, uncopied from the receive buffer.
    pub payload: Bytes,
}

/// A message that cannot be framed or was framed wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The declared (or, when sending, actual) length exceeds the limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What the length prefix counts.
        len: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A length prefix of zero: not even the codec byte.
    #[error("message without a codec byte")]
    NoCodec,
    /// The timed flag is set but the message is shorter than its timestamp.
    #[error("timestamped message shorter than its timestamp")]
    ShortTimestamp,
}

/// What the length prefix of a message with `payload_len` payload bytes counts.
pub fn framed_len(payload_len: usize, timestamp: Option<u64>) -> usize {
    let head = if timestamp.is_some() { 1 + TIMESTAMP_LEN } else { 1 };
    payload_len + head
}

/// Everything before the payload: `len: u32`, the codec byte (with [`TIMED_FLAG`] when
/// `timestamp` is set) and the timestamp. The payload is written after it uncopied.
pub fn encode_head(codec: Codec, timestamp: Option<u64>, payload_len: usize) -> Result<Bytes, MessageError> {
    let len = framed_len(payload_len, timestamp);
    let len = u32::try_from(len).map_err(|_| MessageError::TooLarge {
        len: len as u64,
        limit: u64::from(u32::MAX),
    })?;
    let mut head = BytesMut::with_capacity(LENGTH_PREFIX + 1 + TIMESTAMP_LEN);
    head.put_u32(len);
    match timestamp {
        Some(ts) => {
            head.put_u8(codec.tag() | TIMED_FLAG);
            head.put_u64(ts);
        }
        None => head.put_u8(codec.tag()),
    }
    Ok(head.freeze())
}

/// Incremental decoder of framed messages.
///
/// Feed it the bytes received so far; it returns complete messages and leaves a partial one
/// in the buffer. A declared length above the limit is an error as soon as the four length
/// bytes are in, before the message is buffered.
#[derive(Debug, Clone, Copy)]
pub struct MessageDecoder {
    max_message_size: usize,
}

impl MessageDecoder {
    /// A decoder refusing messages whose length prefix counts more than `max_message_size`.
    pub fn new(max_message_size: usize) -> Self {
        Self { max_message_size }
    }

    /// The next message in `buf`, `Ok(None)` while it is incomplete (`buf` then holds a prefix
    /// of it, untouched), or the error that ends the stream.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, MessageError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > self.max_message_size {
            return Err(MessageError::TooLarge {
                len: len as u64,
                limit: self.max_message_size as u64,
            });
        }
        if len == 0 {
            return Err(MessageError::NoCodec);
        }
        if buf.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX);
        let mut msg = buf.split_to(len).freeze();
        let tag = msg.get_u8();
        if tag & TIMED_FLAG == 0 {
            return Ok(Some(Message {
                codec: Codec::from_tag(tag),
                timestamp: None,
                payload: msg,
            }));
        }
        if msg.remaining() < TIMESTAMP_LEN {
            return Err(MessageError::ShortTimestamp);
        }
        let timestamp = msg.get_u64();
        Ok(Some(Message {
            codec: Codec::from_tag(tag & !TIMED_FLAG),
            timestamp: Some(timestamp),
            payload: msg,
        }))
    }
}

/// Encodes a [`Status`] as error data for typed streams: `code: u32`, then the UTF-8 message
/// (cut to 60 KiB).
pub fn encode_status(status: &Status) -> Vec<u8> {
    let msg = truncate_str(status.message(), MAX_STATUS_MESSAGE);
    let mut v = Vec::with_capacity(4 + msg.len());
    v.extend_from_slice(&status.code().0.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v
}

/// Decodes error data written by [`encode_status`]; other bytes become an
/// application status carrying them as (lossy) text.
pub fn decode_status(data: &[u8]) -> Status {
    if data.len() >= 4 {
        if let Ok(msg) = std::str::from_utf8(&data[4..]) {
            let code = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            return Status::new(Code(code), msg);
        }
    }
    Status::new(Code::APPLICATION, String::from_utf8_lossy(data).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(codec: Codec, timestamp: Option<u64>, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::from(&encode_head(codec, timestamp, payload.len()).unwrap()[..]);
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn plain_and_timestamped_messages_round_trip() {
        let dec = MessageDecoder::new(1024);
        let mut buf = framed(Codec::Json, None, b"[1]");
        buf.extend_from_slice(&framed(Codec::Bincode, Some(42), b"xy"));
        let first = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (first.codec, first.timestamp, &first.payload[..]),
            (Codec::Json, None, &b"[1]"[..])
        );
        let second = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (second.codec, second.timestamp, &second.payload[..]),
            (Codec::Bincode, Some(42), &b"xy"[..])
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn every_truncation_is_incomplete_and_leaves_the_buffer() {
        let whole = framed(Codec::Bincode, Some(7), b"payload");
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(
                MessageDecoder::new(1024).decode(&mut buf),
                Ok(None),
                "cut at {cut}"
            );
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        let mut buf = BytesMut::from(&1_000_000u32.to_be_bytes()[..]);
        assert_eq!(
            MessageDecoder::new(1024).decode(&mut buf),
            Err(MessageError::TooLarge {
                len: 1_000_000,
                limit: 1024
            })
        );
    }

    #[test]
    fn empty_and_short_timestamped_messages_are_errors() {
        let dec = MessageDecoder::new(1024);
        assert_eq!(
            dec.decode(&mut BytesMut::from(&[0u8, 0, 0, 0][..])),
            Err(MessageError::NoCodec)
        );
        let mut short = BytesMut::from(&[0u8, 0, 0, 3, TIMED_FLAG, 1, 2][..]);
        assert_eq!(dec.decode(&mut short), Err(MessageError::ShortTimestamp));
    }

    #[test]
    fn status_round_trips_and_raw_bytes_become_application_status() {
        let s = Status::new(Code(1234), "nope");
        let d = decode_status(&encode_status(&s));
        assert_eq!((d.code(), d.message()), (s.code(), "nope"));
        let raw = decode_status(b"ab");
        assert_eq!(raw.code(), Code::APPLICATION);
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            tag in any::<u8>(),
            timestamp in proptest::option::of(any::<u64>()),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let codec = Codec::from_tag(tag & !TIMED_FLAG);
            let mut buf = framed(codec, timestamp, &payload);
            let msg = MessageDecoder::new(1024).decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(msg.codec, codec);
            prop_assert_eq!(msg.timestamp, timestamp);
            prop_assert_eq!(&msg.payload[..], &payload[..]);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let dec = MessageDecoder::new(64);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }

        #[test]
        fn random_error_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_status(&data);
        }
    }
}
