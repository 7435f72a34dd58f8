//! Typed messages over an [`XStream`]: writing one, reading the next, and ending a stream both
//! sides see as failed after a bad message. Shared by every typed endpoint.
//!
//! The bytes (the framing, the timestamp, the status written as error data) are
//! `echostream_types::message`; this module drives them over an XStream.

use super::{Side, StreamError, XStream};
use crate::protocol::timesync::Timestamp;
use crate::Error;
use bytes::BytesMut;
use echostream_types::message::{self, decode_status, encode_status, MessageDecoder, MessageError};
use echostream_types::pairing::code;
use echostream_types::{Code, Codec, Status};
use serde::{de::DeserializeOwned, Serialize};

/// Converts a stream error into the crate error, turning an error block
/// written by a typed acceptor into `Error::Remote` with its status.
pub(super) fn typed_error(e: StreamError) -> Error {
    match e {
        StreamError::Remote { stream, data } => Error::Remote {
            method: stream,
            status: decode_status(&data),
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
    let bad = |detail: String| {
        Error::Stream(StreamError::BadMessage {
            stream: stream.name().to_owned(),
            detail,
        })
    };
    let payload = codec
        .encode(msg)
        .map_err(|e| bad(format!("message did not encode ({}): {e}", codec.name())))?;
    let timestamp = ts.map(|ts| ts.0);
    let len = message::framed_len(payload.len(), timestamp);
    if len > max {
        let e = StreamError::TooLarge {
            stream: stream.name().to_owned(),
            what: "message",
            size: len as u64,
            limit: max as u64,
        };
        // The stream ends on both sides: the receiver sees the code.
        stream.abort(code::MESSAGE_TOO_LARGE).await;
        return Err(Error::Stream(e));
    }
    let head = message::encode_head(codec, timestamp, payload.len()).map_err(|e| bad(e.to_string()))?;
    stream
        .write_chunks(&mut [head, payload])
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

    pub(super) async fn next<T: DeserializeOwned>(&mut self, stream: &XStream) -> Result<Option<T>, Error> {
        Ok(self.next_timed(stream).await?.map(|(m, _)| m))
    }

    /// The next message and its timestamp, if it carried one. A message over the size limit,
    /// or one that does not decode, ends the stream on both sides with that error.
    pub(super) async fn next_timed<T: DeserializeOwned>(
        &mut self,
        stream: &XStream,
    ) -> Result<Option<(T, Option<Timestamp>)>, Error> {
        match self.read::<T>(stream).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if matches!(e, StreamError::TooLarge { .. } | StreamError::BadMessage { .. }) {
                    end_after_bad_message(stream, &e).await;
                }
                Err(typed_error(e))
            }
        }
    }

    async fn read<T: DeserializeOwned>(
        &mut self,
        stream: &XStream,
    ) -> Result<Option<(T, Option<Timestamp>)>, StreamError> {
        let name = || stream.name().to_owned();
        let decoder = MessageDecoder::new(stream.options().max_message_size);
        let framed = loop {
            let decoded = decoder.decode(&mut self.buf).map_err(|e| match e {
                MessageError::TooLarge { len, limit } => StreamError::TooLarge {
                    stream: name(),
                    what: "incoming message",
                    size: len,
                    limit,
                },
                other => StreamError::BadMessage {
                    stream: name(),
                    detail: other.to_string(),
                },
            })?;
            if let Some(framed) = decoded {
                break framed;
            }
            match stream.read_chunk().await? {
                Some(c) => self.buf.extend_from_slice(&c),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(StreamError::BadMessage {
                        stream: name(),
                        detail: "the stream ended inside a message".into(),
                    })
                }
            }
        };
        self.count += 1;
        let codec = framed.codec;
        codec
            .decode::<T>(&framed.payload)
            .map(|m| Some((m, framed.timestamp.map(Timestamp))))
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
async fn end_after_bad_message(stream: &XStream, e: &StreamError) {
    let (status_code, abort_code) = match e {
        StreamError::TooLarge { .. } => (Code::RESOURCE_EXHAUSTED, code::MESSAGE_TOO_LARGE),
        _ => (Code::BAD_PAYLOAD, code::BAD_MESSAGE),
    };
    match stream.side() {
        Side::Acceptor => {
            let status = Status::new(status_code, e.to_string());
            let _ = stream.error_write(&encode_status(&status), false).await;
        }
        Side::Opener => stream.abort(abort_code).await,
    }
}

/// Writes `status` on the error half after the data already written: how a
/// receiver ends a typed stream with an error the sender sees as `Error::Remote`.
pub(super) async fn fail_with(stream: &XStream, status: &Status) -> Result<(), Error> {
    stream
        .error_write(&encode_status(status), true)
        .await
        .map_err(Error::Stream)
}
