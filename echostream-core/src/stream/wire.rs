//! The bytes of the stream pairing protocol, sans-IO: headers, the
//! acceptor's answer and the error block. Every decoder checks a length
//! against what is present or the limit before it allocates.
//!
//! The layout is specified in `ARCHITECTURE.md` ("Streams").

use bytes::{Buf, BufMut, Bytes, BytesMut};
use echostream_types::Metadata;

/// First byte of a bidirectional stream that is an XStream data half.
pub(crate) const DATA_HALF: u8 = 0x02;
/// First byte of a unidirectional stream that is an XStream error half.
pub(crate) const ERROR_HALF: u8 = 0x03;

/// Largest data-half header accepted (name + metadata), in bytes.
pub(crate) const MAX_HEADER: usize = 64 * 1024;
/// Longest stream name, in bytes.
pub(crate) const MAX_NAME: usize = 1024;
/// Longest refusal reason sent or accepted, in bytes.
pub(crate) const MAX_REASON: usize = 4096;

/// Answer byte: the acceptor took the stream; data follows.
pub(crate) const ANSWER_ACCEPTED: u8 = 0x00;
/// Answer byte: the acceptor refused; `code: u8`, `reason: str` follow, then FIN.
pub(crate) const ANSWER_REFUSED: u8 = 0x01;

/// Error-block flag: the acceptor finished the data half before writing the
/// error (`with_data_flush`): the opener delivers the data first.
pub(crate) const FLAG_DATA_FLUSHED: u8 = 0x01;

/// Why an acceptor refused a stream (the `code` of a refused answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Nobody accepts this name.
    NoAcceptor = 1,
    /// The acceptor's queue is full.
    Busy = 2,
    /// The decision policy said no.
    Rejected = 3,
    /// The header was malformed.
    BadHeader = 4,
}

impl Refusal {
    pub(crate) fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            1 => Refusal::NoAcceptor,
            2 => Refusal::Busy,
            3 => Refusal::Rejected,
            4 => Refusal::BadHeader,
            _ => return None,
        })
    }
}

/// Stream reset / stop-sending codes used by XStreams (QUIC application
/// error codes on one stream, not on the connection).
pub(crate) mod code {
    /// The stream type is not supported (kept from protocol v1).
    pub(crate) const REFUSED: u32 = 1;
    /// The application dropped the stream without closing it.
    pub(crate) const PEER_DROPPED: u32 = 0x10;
    /// The acceptor wrote an error without flushing data: read the error half.
    pub(crate) const ERROR_SENT: u32 = 0x11;
    /// The other half did not arrive within the pairing timeout.
    pub(crate) const PAIRING_TIMEOUT: u32 = 0x12;
    /// The application closed the stream; nothing more is read.
    pub(crate) const CLOSED: u32 = 0x13;
    /// The peer broke the stream protocol (bad header, bad error block).
    pub(crate) const PROTOCOL: u32 = 0x14;
    /// Nobody accepts the stream's name (queued streams of an acceptor that went away).
    pub(crate) const NO_ACCEPTOR: u32 = 0x15;
    /// A typed message was larger than the receiver's limit.
    pub(crate) const MESSAGE_TOO_LARGE: u32 = 0x16;
    /// A typed message did not decode.
    pub(crate) const BAD_MESSAGE: u32 = 0x17;
    /// The connection holds `max_streams_per_connection` streams already.
    pub(crate) const STREAM_LIMIT: u32 = 0x18;
}

/// A malformed or oversized header, answer or error block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("{0} bytes after the end of the header")]
    Trailing(usize),
    #[error("unknown error-block flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("empty stream name")]
    EmptyName,
}

/// What an opener says about the stream it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataHeader {
    /// Pairs this data half with its error half; chosen by the opener,
    /// unique among the streams it opened on this connection.
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) metadata: Metadata,
}

impl DataHeader {
    /// `0x02`, `body_len: u16`, then the body: `id: u64`, `name: str`, `metadata`.
    pub(crate) fn encode(&self) -> Result<Bytes, WireError> {
        if self.name.is_empty() {
            return Err(WireError::EmptyName);
        }
        if self.name.len() > MAX_NAME {
            return Err(WireError::TooLong {
                what: "stream name",
                len: self.name.len(),
                limit: MAX_NAME,
            });
        }
        let mut body = BytesMut::with_capacity(64);
        body.put_u64(self.id);
        put_str(&mut body, &self.name);
        body.put_u16(
            u16::try_from(self.metadata.len()).map_err(|_| WireError::TooLong {
                what: "metadata entry count",
                len: self.metadata.len(),
                limit: u16::MAX as usize,
            })?,
        );
        for (k, v) in self.metadata.iter() {
            if k.len() > u16::MAX as usize {
                return Err(WireError::TooLong {
                    what: "metadata key",
                    len: k.len(),
                    limit: u16::MAX as usize,
                });
            }
            put_str(&mut body, k);
            body.put_u32(v.len() as u32);
            body.extend_from_slice(v);
        }
        if body.len() > MAX_HEADER {
            return Err(WireError::TooLong {
                what: "stream header",
                len: body.len(),
                limit: MAX_HEADER,
            });
        }
        let mut out = BytesMut::with_capacity(3 + body.len());
        out.put_u8(DATA_HALF);
        out.put_u16(body.len() as u16);
        out.extend_from_slice(&body);
        Ok(out.freeze())
    }

    /// Decodes the body (after the type byte and the length, which the
    /// caller checked against [`MAX_HEADER`] before reading it).
    pub(crate) fn decode_body(mut b: Bytes) -> Result<DataHeader, WireError> {
        let id = get_u64(&mut b, "stream id")?;
        let name = get_str(&mut b, "stream name", MAX_NAME)?;
        if name.is_empty() {
            return Err(WireError::EmptyName);
        }
        let count = get_u16(&mut b, "metadata count")? as usize;
        // Each entry takes at least 6 bytes: refuse a count the body cannot hold.
        if count * 6 > b.remaining() {
            return Err(WireError::Truncated("metadata"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = get_str(&mut b, "metadata key", u16::MAX as usize)?;
            let len = get_u32(&mut b, "metadata value length")? as usize;
            if len > b.remaining() {
                return Err(WireError::Truncated("metadata value"));
            }
            entries.push((key, b.split_to(len)));
        }
        if b.has_remaining() {
            return Err(WireError::Trailing(b.remaining()));
        }
        Ok(DataHeader {
            id,
            name,
            metadata: entries.into_iter().collect(),
        })
    }
}

/// The acceptor's answer on the data half.
pub(crate) fn encode_refusal(refusal: Refusal, reason: &str) -> Bytes {
    let reason = truncate(reason, MAX_REASON);
    let mut b = BytesMut::with_capacity(4 + reason.len());
    b.put_u8(ANSWER_REFUSED);
    b.put_u8(refusal as u8);
    put_str(&mut b, reason);
    b.freeze()
}

/// `0x03`, `id: u64`: the start of an error half.
pub(crate) fn encode_error_header(id: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(ERROR_HALF);
    b.put_u64(id);
    b.freeze()
}

/// The one error block: `flags: u8`, `len: u32`, `data`. EOF follows.
pub(crate) fn encode_error_block(flushed: bool, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_u8(if flushed { FLAG_DATA_FLUSHED } else { 0 });
    b.put_u32(data.len() as u32);
    b.extend_from_slice(data);
    b.freeze()
}

/// Checks the 5-byte prefix of an error block: returns (flushed, data length).
pub(crate) fn decode_error_prefix(prefix: [u8; 5], limit: usize) -> Result<(bool, usize), WireError> {
    let flags = prefix[0];
    if flags & !FLAG_DATA_FLUSHED != 0 {
        return Err(WireError::UnknownFlags(flags));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > limit {
        return Err(WireError::TooLong {
            what: "error block",
            len,
            limit,
        });
    }
    Ok((flags & FLAG_DATA_FLUSHED != 0, len))
}

/// Encodes a [`echostream_types::Status`] as error data for typed streams:
/// `code: u32`, then the UTF-8 message.
pub(crate) fn encode_status(status: &echostream_types::Status) -> Vec<u8> {
    let msg = truncate(status.message(), 60 * 1024);
    let mut v = Vec::with_capacity(4 + msg.len());
    v.extend_from_slice(&status.code().0.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v
}

/// Decodes error data written by [`encode_status`]; other bytes become an
/// application status carrying them as (lossy) text.
pub(crate) fn decode_status(data: &[u8]) -> echostream_types::Status {
    use echostream_types::{Code, Status};
    if data.len() >= 4 {
        if let Ok(msg) = std::str::from_utf8(&data[4..]) {
            let code = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            return Status::new(Code(code), msg);
        }
    }
    Status::new(Code::APPLICATION, String::from_utf8_lossy(data).into_owned())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str(b: &mut BytesMut, s: &str) {
    let s = truncate(s, u16::MAX as usize);
    b.put_u16(s.len() as u16);
    b.extend_from_slice(s.as_bytes());
}

fn get_u16(b: &mut Bytes, what: &'static str) -> Result<u16, WireError> {
    if b.remaining() < 2 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u16())
}

fn get_u32(b: &mut Bytes, what: &'static str) -> Result<u32, WireError> {
    if b.remaining() < 4 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    if b.remaining() < 8 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u64())
}

pub(crate) fn get_str(b: &mut Bytes, what: &'static str, limit: usize) -> Result<String, WireError> {
    let len = get_u16(b, what)? as usize;
    if len > limit {
        return Err(WireError::TooLong { what, len, limit });
    }
    if len > b.remaining() {
        return Err(WireError::Truncated(what));
    }
    let raw = b.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| WireError::Utf8(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> DataHeader {
        DataHeader {
            id: 7,
            name: "audio.stream".into(),
            metadata: Metadata::new().with("codec", "opus").with("rate", vec![0u8, 1]),
        }
    }

    #[test]
    fn data_header_round_trips() {
        let h = header();
        let mut bytes = h.encode().unwrap();
        assert_eq!(bytes[0], DATA_HALF);
        let len = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
        bytes.advance(3);
        assert_eq!(bytes.len(), len);
        assert_eq!(DataHeader::decode_body(bytes).unwrap(), h);
    }

    #[test]
    fn truncated_header_is_refused_at_every_length() {
        let bytes = header().encode().unwrap().slice(3..);
        for cut in 0..bytes.len() {
            assert!(
                DataHeader::decode_body(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn huge_metadata_count_is_refused_before_allocating() {
        let mut b = BytesMut::new();
        b.put_u64(1);
        put_str(&mut b, "x");
        b.put_u16(u16::MAX);
        assert_eq!(
            DataHeader::decode_body(b.freeze()),
            Err(WireError::Truncated("metadata"))
        );
    }

    #[test]
    fn empty_and_long_names_are_refused() {
        let mut h = header();
        h.name.clear();
        assert_eq!(h.encode(), Err(WireError::EmptyName));
        h.name = "n".repeat(MAX_NAME + 1);
        assert!(matches!(h.encode(), Err(WireError::TooLong { .. })));
    }

    #[test]
    fn error_prefix_checks_flags_and_limit() {
        let block = encode_error_block(true, b"disk full");
        let prefix: [u8; 5] = block[..5].try_into().unwrap();
        assert_eq!(decode_error_prefix(prefix, 100), Ok((true, 9)));
        assert!(decode_error_prefix(prefix, 3).is_err());
        assert!(decode_error_prefix([0x80, 0, 0, 0, 0], 100).is_err());
    }

    #[test]
    fn status_round_trips_and_raw_bytes_become_application_status() {
        let s = echostream_types::Status::new(echostream_types::Code(1234), "nope");
        let d = decode_status(&encode_status(&s));
        assert_eq!((d.code(), d.message()), (s.code(), "nope"));
        let raw = decode_status(b"ab");
        assert_eq!(raw.code(), echostream_types::Code::APPLICATION);
    }
}
