//! Side streams: one large request or response on a unidirectional QUIC stream of its own.
//!
//! Layout: [`SIDE_FRAME`] (the stream type byte), then exactly one frame in the control-stream
//! encoding ([`crate::frame`]), then FIN. A receiver reads the first [`HEAD_LEN`] bytes of the
//! frame with [`CallHead::parse`] to learn how large it is and which call it belongs to
//! *before* it buffers the rest, so it can check the length against its limit and budget and
//! drop a response that nobody waits for without reading it.
//!
//! Either side may end a side stream early with one of the stream error codes in [`code`]
//! (QUIC `RESET_STREAM` from the sender, `STOP_SENDING` from the receiver); such an ending
//! concerns that one call, never the connection.

use crate::frame::{FrameError, LENGTH_PREFIX};

/// First byte of a unidirectional stream that carries one large frame.
pub const SIDE_FRAME: u8 = 0x01;

/// Bytes of a frame needed to know its length, type and call id: the length prefix, the type
/// byte and the `u64` id that requests and responses start with. Every valid request or
/// response frame is longer than this.
pub const HEAD_LEN: usize = LENGTH_PREFIX + 1 + 8;

/// Stream error codes that end a side stream early (the QUIC application error code of a
/// `RESET_STREAM` or `STOP_SENDING`).
pub mod code {
    /// Sender → receiver (reset): the call was cancelled or timed out while its request or
    /// response was being sent. The receiver forgets the partial frame.
    pub const CANCELLED: u32 = 0x20;
    /// Receiver → sender (stop): the receiver is assembling as many large frames as its byte
    /// budget allows and as many more wait as it lets wait. Nothing of the frame was
    /// processed: the sender may send it again later.
    pub const BUSY: u32 = 0x21;
    /// Receiver → sender (stop): no data arrived on the side stream for the receiver's
    /// assembly timeout; the frame was dropped.
    pub const STALLED: u32 = 0x22;
    /// Receiver → sender (stop): a response to a call that nobody waits for any more
    /// (timed out or cancelled on the caller's side).
    pub const UNWANTED: u32 = 0x23;
}

/// Whether a side stream carries a request or a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A `REQUEST` frame.
    Request,
    /// A `RESPONSE_OK` or `RESPONSE_ERR` frame.
    Response,
}

/// The start of the frame on a side stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallHead {
    /// The frame's declared length (type byte and body, without the prefix).
    pub len: u32,
    /// Request or response.
    pub kind: CallKind,
    /// The call's request id.
    pub id: u64,
}

impl CallHead {
    /// Parses the first [`HEAD_LEN`] bytes of a side stream's frame (after the stream type
    /// byte). `limit` is the receiver's largest frame: a longer declared length is
    /// [`FrameError::TooLarge`], found before anything else is buffered.
    pub fn parse(head: &[u8; HEAD_LEN], limit: u32) -> Result<CallHead, FrameError> {
        let [a, b, c, d, kind, id @ ..] = *head;
        let len = u32::from_be_bytes([a, b, c, d]);
        if len > limit {
            return Err(FrameError::TooLarge {
                declared: len.into(),
                limit,
            });
        }
        if (len as usize) < HEAD_LEN - LENGTH_PREFIX {
            return Err(FrameError::Malformed(format!(
                "a {len}-byte frame is too short for a side stream"
            )));
        }
        let kind = match kind {
            0x03 => CallKind::Request,
            0x04 | 0x05 => CallKind::Response,
            other => {
                return Err(FrameError::Malformed(format!(
                    "frame type {other:#04x} on a side stream (only requests and responses travel there)"
                )))
            }
        };
        Ok(CallHead {
            len,
            kind,
            id: u64::from_be_bytes(id),
        })
    }

    /// The whole frame's size on the stream, length prefix included.
    pub fn frame_bytes(&self) -> usize {
        LENGTH_PREFIX + self.len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Frame, Metadata, RequestFrame, ResponseFrame, Status};
    use bytes::BytesMut;

    fn head_of(frame: &Frame) -> [u8; HEAD_LEN] {
        let mut b = BytesMut::new();
        frame.encode(&mut b).unwrap();
        b[..HEAD_LEN].try_into().unwrap()
    }

    #[test]
    fn request_head_gives_length_kind_and_id() {
        let f = Frame::Request(RequestFrame {
            id: 42,
            method: "m".into(),
            codec: Codec::Json,
            deadline: None,
            metadata: Metadata::new(),
            payload: vec![0u8; 1000].into(),
        });
        let mut full = BytesMut::new();
        f.encode(&mut full).unwrap();
        let h = CallHead::parse(&head_of(&f), 1 << 20).unwrap();
        assert_eq!(h.kind, CallKind::Request);
        assert_eq!(h.id, 42);
        assert_eq!(h.frame_bytes(), full.len());
    }

    #[test]
    fn ok_and_error_responses_are_responses() {
        let ok = Frame::Response(ResponseFrame {
            id: 7,
            result: Ok((Codec::Bincode, vec![1u8; 10].into())),
        });
        let err = Frame::Response(ResponseFrame {
            id: 9,
            result: Err(Status::new(crate::Code::INTERNAL, "boom")),
        });
        assert_eq!(CallHead::parse(&head_of(&ok), 1 << 20).unwrap().id, 7);
        let h = CallHead::parse(&head_of(&err), 1 << 20).unwrap();
        assert_eq!((h.kind, h.id), (CallKind::Response, 9));
    }

    #[test]
    fn declared_length_over_the_limit_is_too_large() {
        let mut head = [0u8; HEAD_LEN];
        head[..4].copy_from_slice(&(64u32 << 20).to_be_bytes());
        head[4] = 0x03;
        assert!(matches!(
            CallHead::parse(&head, 32 << 20),
            Err(FrameError::TooLarge { limit, .. }) if limit == 32 << 20
        ));
    }

    #[test]
    fn other_frame_types_and_short_frames_are_malformed() {
        let mut head = [0u8; HEAD_LEN];
        head[..4].copy_from_slice(&100u32.to_be_bytes());
        head[4] = 0x06; // EVENT
        assert!(matches!(
            CallHead::parse(&head, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
        head[..4].copy_from_slice(&3u32.to_be_bytes());
        head[4] = 0x03;
        assert!(matches!(
            CallHead::parse(&head, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
    }
}
