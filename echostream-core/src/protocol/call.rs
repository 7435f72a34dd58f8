//! What [`Peer`]'s calls use besides its own methods: the guard that cancels a call whose
//! caller stopped waiting, a request answered where it was read, and the small conversions
//! of a call's payloads, deadline and failures.

use super::driver::Outgoing;
use super::{Payload, Peer};
use crate::Error;
use bytes::{Bytes, BytesMut};
use echostream_types::{CloseCode, Code, Codec, Frame, ResponseFrame, Status};
use serde::{de::DeserializeOwned, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A request answered where it was read.
pub(crate) struct Answer {
    pub(crate) id: u64,
    pub(crate) result: Result<Payload, Status>,
}

/// Removes a pending call and sends a cancel when the caller stops waiting.
pub(super) struct CancelGuard<'a> {
    peer: &'a Peer,
    id: u64,
    pub(super) armed: bool,
}

impl<'a> CancelGuard<'a> {
    /// Armed: dropped before the answer arrives, it cancels call `id`.
    pub(super) fn new(peer: &'a Peer, id: u64) -> Self {
        Self {
            peer,
            id,
            armed: true,
        }
    }

    pub(super) fn forget(&mut self) {
        self.peer.shared.state.remove_pending(self.id);
        self.armed = false;
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.peer.shared.state.remove_pending(self.id);
        let mut head = BytesMut::new();
        if (Frame::Cancel { id: self.id }).encode(&mut head).is_ok() {
            let out = Outgoing::Frame {
                head: head.freeze(),
                tail: Bytes::new(),
            };
            if let Err(mpsc::error::TrySendError::Full(out)) = self.peer.shared.out.try_send(out) {
                let tx = self.peer.shared.out.clone();
                tokio::spawn(async move {
                    let _ = tx.send(out).await;
                });
            }
        }
    }
}

/// What is left of timeout `t` of a call started at `started`, at least 1 ms.
pub(super) fn time_left(t: Duration, started: Instant) -> Duration {
    t.saturating_sub(started.elapsed()).max(Duration::from_millis(1))
}

/// Encodes a call's argument or an event's value (`what` says which, `name` names the
/// method or event).
pub(crate) fn encode_value<T: Serialize>(
    codec: Codec,
    value: &T,
    name: &str,
    what: &str,
) -> Result<Bytes, Error> {
    codec.encode(value).map_err(|e| Error::BadPayload {
        method: name.to_owned(),
        detail: format!("{what} did not encode ({}): {e}", codec.name()),
    })
}

/// Decodes the result of a call of `method` as `R`.
pub(crate) fn decode_result<R: DeserializeOwned>(
    codec: Codec,
    bytes: &[u8],
    method: &str,
) -> Result<R, Error> {
    codec.decode::<R>(bytes).map_err(|e| Error::BadPayload {
        method: method.to_owned(),
        detail: format!(
            "result did not decode as {} ({}): {e}",
            std::any::type_name::<R>(),
            codec.name()
        ),
    })
}

/// The error of a call of `method` whose answer was a failure: a status from the peer names
/// the method, and a deadline the peer saw pass is this call's timeout.
pub(super) fn call_error(method: &str, timeout: Option<Duration>, e: Error) -> Error {
    match e {
        Error::Status(status) => match status.code() {
            Code::DEADLINE_EXCEEDED => Error::Timeout {
                method: method.to_owned(),
                after: timeout.unwrap_or_default(),
            },
            _ => Error::from_remote(method, status),
        },
        e => e,
    }
}

/// The error of a call made after the peer at `remote` announced it is going away.
pub(super) fn going_away(remote: SocketAddr) -> Error {
    Error::ConnectionClosed {
        code: Some(CloseCode::GOING_AWAY),
        reason: format!("the peer at {remote} is shutting down and takes no new requests"),
    }
}

/// The answer sent instead of a result of `size` bytes, larger than the caller's frame `limit`.
pub(super) fn too_large_response(id: u64, size: u64, limit: u32) -> Frame {
    let msg = format!("the result is {size} bytes, larger than the caller's frame limit of {limit} bytes");
    Frame::Response(ResponseFrame {
        id,
        result: Err(Status::new(Code::RESPONSE_TOO_LARGE, msg)),
    })
}
