//! The XStream pairing protocol, sans-IO: the data half's header, the acceptor's answer, the
//! error half's header and its one error block, and the stream reset codes. Every decoder
//! checks a length against what is present or the limit before it allocates.
//!
//! An XStream is a QUIC bidirectional stream (the data half, opened by the opener) paired with
//! a unidirectional stream from the acceptor (the error half):
//!
//! - data half: `0x02` ([`DATA_HALF`]), `body_len: u16`, then the [`DataHeader`] body: `id: u64`,
//!   `name: str`, metadata (`count: u16`, per entry `key: str`, `len: u32`, value). Strings are
//!   `len: u16` and UTF-8.
//! - answer on the data half: [`ANSWER_ACCEPTED`] then data, or [`ANSWER_REFUSED`], `code: u8`
//!   ([`Refusal`]), `reason: str`, FIN.
//! - error half: `0x03` ([`ERROR_HALF`]), `id: u64`, then at most one error block: `flags: u8`,
//!   `len: u32`, data, EOF.
//!
//! The byte layout is also described in the repository's protocol documentation ("Streams").

use crate::cursor::{get_metadata, get_str_max, get_u64, put_metadata, put_str, truncate_str, CursorError};
use crate::Metadata;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// First byte of a bidirectional stream that is an XStream data half.
pub const DATA_HALF: u8 = 0x02;
/// First byte of a unidirectional stream that is an XStream error half.
pub const ERROR_HALF: u8 = 0x03;

/// Largest data-half header accepted (name + metadata), in bytes.
pub const MAX_HEADER: usize = 64 * 1024;
/// Longest stream name, in bytes.
pub const MAX_NAME: usize = 1024;
/// Longest refusal reason sent or accepted, in bytes.
pub const MAX_REASON: usize = 4096;

/// Answer byte: the acceptor took the stream; data follows.
pub const ANSWER_ACCEPTED: u8 = 0x00;
/// Answer byte: the acceptor refused; `code: u8`, `reason: str` follow, then FIN.
pub const ANSWER_REFUSED: u8 = 0x01;

/// Error-block flag: the acceptor finished the data half before writing the
/// error (`with_data_flush`): the opener delivers the data first.
pub const FLAG_DATA_FLUSHED: u8 = 0x01;

/// Why an acceptor refused a stream (the `code` of a refused answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
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
    /// The refusal a code byte stands for; `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<Refusal> {
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
pub mod code {
    /// The stream type is not supported (kept from protocol v1).
    pub const REFUSED: u32 = 1;
    /// The application dropped the stream without closing it.
    pub const PEER_DROPPED: u32 = 0x10;
    /// The acceptor wrote an error without flushing data: read the error half.
    pub const ERROR_SENT: u32 = 0x11;
    /// The other half did not arrive within the pairing timeout.
    pub const PAIRING_TIMEOUT: u32 = 0x12;
    /// The application closed the stream; nothing more is read.
    pub const CLOSED: u32 = 0x13;
    /// The peer broke the stream protocol (bad header, bad error block).
    pub const PROTOCOL: u32 = 0x14;
    /// Nobody accepts the stream's name (queued streams of an acceptor that went away).
    pub const NO_ACCEPTOR: u32 = 0x15;
    /// A typed message was larger than the receiver's limit.
    pub const MESSAGE_TOO_LARGE: u32 = 0x16;
    /// A typed message did not decode.
    pub const BAD_MESSAGE: u32 = 0x17;
    /// The connection holds `max_streams_per_connection` streams already.
    pub const STREAM_LIMIT: u32 = 0x18;
}

/// A malformed or oversized header, answer or error block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The input ended inside this field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A field longer than its limit.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A string field that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Bytes after the last field of a header.
    #[error("{0} bytes after the end of the header")]
    Trailing(usize),
    /// Error-block flags this version does not know.
    #[error("unknown error-block flags {0:#04x}")]
    UnknownFlags(u8),
    /// A header with an empty stream name.
    #[error("empty stream name")]
    EmptyName,
}

impl From<CursorError> for PairingError {
    fn from(e: CursorError) -> Self {
        match e {
            CursorError::Truncated(what) => PairingError::Truncated(what),
            CursorError::Utf8(what) => PairingError::Utf8(what),
            CursorError::TooLong { what, len, limit } => PairingError::TooLong { what, len, limit },
        }
    }
}

/// What an opener says about the stream it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHeader {
    /// Pairs this data half with its error half; chosen by the opener,
    /// unique among the streams it opened on this connection.
    pub id: u64,
    /// The stream name the acceptor routes on (1 to [`MAX_NAME`] bytes).
    pub name: String,
    /// The opener's metadata.
    pub metadata: Metadata,
}

impl DataHeader {
    /// `0x02`, `body_len: u16`, then the body: `id: u64`, `name: str`, `metadata`.
    pub fn encode(&self) -> Result<Bytes, PairingError> {
        if self.name.is_empty() {
            return Err(PairingError::EmptyName);
        }
        if self.name.len() > MAX_NAME {
            return Err(PairingError::TooLong {
                what: "stream name",
                len: self.name.len(),
                limit: MAX_NAME,
            });
        }
        let mut body = BytesMut::with_capacity(64);
        body.put_u64(self.id);
        put_str(&mut body, "stream name", &self.name)?;
        put_metadata(&mut body, &self.metadata)?;
        if body.len() > MAX_HEADER {
            return Err(PairingError::TooLong {
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
    pub fn decode_body(mut b: Bytes) -> Result<DataHeader, PairingError> {
        let id = get_u64(&mut b, "stream id")?;
        let name = get_str_max(&mut b, "stream name", MAX_NAME)?;
        if name.is_empty() {
            return Err(PairingError::EmptyName);
        }
        let metadata = get_metadata(&mut b)?;
        if b.has_remaining() {
            return Err(PairingError::Trailing(b.remaining()));
        }
        Ok(DataHeader { id, name, metadata })
    }
}

/// The acceptor's refusal on the data half; the reason is cut to [`MAX_REASON`] bytes.
pub fn encode_refusal(refusal: Refusal, reason: &str) -> Bytes {
    let reason = truncate_str(reason, MAX_REASON);
    let mut b = BytesMut::with_capacity(4 + reason.len());
    b.put_u8(ANSWER_REFUSED);
    b.put_u8(refusal as u8);
    b.put_u16(reason.len() as u16);
    b.extend_from_slice(reason.as_bytes());
    b.freeze()
}

/// Checks the 3 bytes after [`ANSWER_REFUSED`]: returns the refusal (`None` for an unknown
/// code) and the reason's length, checked against [`MAX_REASON`] before the caller reads it.
pub fn decode_refusal_prefix(prefix: [u8; 3]) -> Result<(Option<Refusal>, usize), PairingError> {
    let len = u16::from_be_bytes([prefix[1], prefix[2]]) as usize;
    if len > MAX_REASON {
        return Err(PairingError::TooLong {
            what: "refusal reason",
            len,
            limit: MAX_REASON,
        });
    }
    Ok((Refusal::from_code(prefix[0]), len))
}

/// `0x03`, `id: u64`: the start of an error half.
pub fn encode_error_header(id: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(ERROR_HALF);
    b.put_u64(id);
    b.freeze()
}

/// The one error block: `flags: u8`, `len: u32`, `data`. EOF follows.
pub fn encode_error_block(flushed: bool, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_u8(if flushed { FLAG_DATA_FLUSHED } else { 0 });
    b.put_u32(data.len() as u32);
    b.extend_from_slice(data);
    b.freeze()
}

/// Checks the 5-byte prefix of an error block: returns (flushed, data length).
pub fn decode_error_prefix(prefix: [u8; 5], limit: usize) -> Result<(bool, usize), PairingError> {
    let flags = prefix[0];
    if flags & !FLAG_DATA_FLUSHED != 0 {
        return Err(PairingError::UnknownFlags(flags));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > limit {
        return Err(PairingError::TooLong {
            what: "error block",
            len,
            limit,
        });
    }
    Ok((flags & FLAG_DATA_FLUSHED != 0, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> DataHeader {
        DataHeader {
            id: 7,
            name: "audio.stream".into(),
            metadata: Metadata::new().with("codec", "opus").with("rate", vec![0u8, 1]),
        }
    }

    /// The body of an encoded header, after checking its type byte and length.
    fn body_of(mut bytes: Bytes) -> Bytes {
        assert_eq!(bytes[0], DATA_HALF);
        let len = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
        bytes.advance(3);
        assert_eq!(bytes.len(), len);
        bytes
    }

    #[test]
    fn data_header_round_trips() {
        let h = header();
        assert_eq!(DataHeader::decode_body(body_of(h.encode().unwrap())).unwrap(), h);
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
        put_str(&mut b, "name", "x").unwrap();
        b.put_u16(u16::MAX);
        assert_eq!(
            DataHeader::decode_body(b.freeze()),
            Err(PairingError::Truncated("metadata"))
        );
    }

    #[test]
    fn empty_and_long_names_are_refused() {
        let mut h = header();
        h.name.clear();
        assert_eq!(h.encode(), Err(PairingError::EmptyName));
        h.name = "n".repeat(MAX_NAME + 1);
        assert!(matches!(h.encode(), Err(PairingError::TooLong { .. })));
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
    fn refusal_reason_over_the_limit_is_refused_from_its_length() {
        let len = (MAX_REASON as u16 + 1).to_be_bytes();
        assert!(matches!(
            decode_refusal_prefix([Refusal::Busy as u8, len[0], len[1]]),
            Err(PairingError::TooLong { .. })
        ));
        assert_eq!(decode_refusal_prefix([9, 0, 0]), Ok((None, 0)));
    }

    fn arb_header() -> impl Strategy<Value = DataHeader> {
        let metadata =
            proptest::collection::vec((".{0,8}", proptest::collection::vec(any::<u8>(), 0..8)), 0..4)
                .prop_map(|v| v.into_iter().collect::<Metadata>());
        (any::<u64>(), ".{1,32}", metadata).prop_map(|(id, name, metadata)| DataHeader { id, name, metadata })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(h in arb_header()) {
            prop_assert_eq!(DataHeader::decode_body(body_of(h.encode().unwrap())).unwrap(), h);
        }

        #[test]
        fn random_bodies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = DataHeader::decode_body(Bytes::from(data));
        }

        #[test]
        fn a_refusal_decodes_to_what_was_sent(code in 1u8..=4, reason in ".{0,64}") {
            let refusal = Refusal::from_code(code).unwrap();
            let bytes = encode_refusal(refusal, &reason);
            prop_assert_eq!(bytes[0], ANSWER_REFUSED);
            let (decoded, len) = decode_refusal_prefix([bytes[1], bytes[2], bytes[3]]).unwrap();
            prop_assert_eq!(decoded, Some(refusal));
            prop_assert_eq!(&bytes[4..], reason.as_bytes());
            prop_assert_eq!(len, reason.len());
        }

        #[test]
        fn an_error_block_decodes_to_what_was_sent(
            flushed in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let block = encode_error_block(flushed, &data);
            let prefix: [u8; 5] = block[..5].try_into().unwrap();
            prop_assert_eq!(decode_error_prefix(prefix, 64), Ok((flushed, data.len())));
            prop_assert_eq!(&block[5..], &data[..]);
        }
    }
}
