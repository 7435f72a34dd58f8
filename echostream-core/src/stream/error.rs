//! Errors of stream operations.

use super::StreamState;
use bytes::Bytes;
use std::time::Duration;

/// What went wrong with a stream. Every variant names the stream; a refused
/// operation also names the state that refused it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The operation is not allowed in the stream's current state.
    #[error("stream `{stream}`: cannot {op}: the stream is {state}")]
    InvalidState {
        /// The stream's name.
        stream: String,
        /// The refused operation (`"read"`, `"write"`, `"error_write"`, ...).
        op: &'static str,
        /// The state that refused it.
        state: StreamState,
    },
    /// The accepting side wrote an error on the error half.
    #[error("stream `{stream}`: the peer reported an error: {}", String::from_utf8_lossy(.data))]
    Remote {
        /// The stream's name.
        stream: String,
        /// The error bytes, exactly as written.
        data: Bytes,
    },
    /// `error_write` was called a second time; the error half carries one block.
    #[error("stream `{stream}`: an error was already written (the error half carries one block)")]
    ErrorAlreadyWritten {
        /// The stream's name.
        stream: String,
    },
    /// Only the accepting side writes errors, and only the opening side reads them.
    #[error("stream `{stream}`: {op} is for the {side} side of a stream")]
    WrongSide {
        /// The stream's name.
        stream: String,
        /// The operation.
        op: &'static str,
        /// The side it belongs to (`"accepting"` or `"opening"`).
        side: &'static str,
    },
    /// The connection ended while the stream was open.
    #[error("stream `{stream}`: connection lost: {reason}")]
    ConnectionLost {
        /// The stream's name.
        stream: String,
        /// Why the connection ended.
        reason: String,
    },
    /// The peer dropped its end without closing it.
    #[error("stream `{stream}`: peer dropped the stream")]
    PeerDropped {
        /// The stream's name.
        stream: String,
    },
    /// The peer closed its end; it reads nothing more.
    #[error("stream `{stream}`: the peer closed the stream")]
    PeerClosed {
        /// The stream's name.
        stream: String,
    },
    /// The peer aborted a half with a code this side gives no meaning to.
    #[error("stream `{stream}`: the peer aborted the stream ({what}, code {code})")]
    PeerAborted {
        /// The stream's name.
        stream: String,
        /// What the code means, as far as known.
        what: &'static str,
        /// The QUIC application error code.
        code: u64,
    },
    /// The partner half did not arrive within the pairing timeout.
    #[error("stream `{stream}`: the {missing} did not arrive within the pairing timeout of {after:?}")]
    PairingTimeout {
        /// The stream's name.
        stream: String,
        /// Which half was missing.
        missing: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The peer has no acceptor registered for the name.
    #[error("no acceptor for `{stream}` on the peer")]
    NoAcceptor {
        /// The stream's name.
        stream: String,
    },
    /// The peer's acceptor has too many streams waiting, or a per-connection
    /// stream limit is reached (the peer's, or this side's for a local
    /// open: the reason says which); try later.
    #[error("stream `{stream}` refused as busy: {reason}")]
    Busy {
        /// The stream's name.
        stream: String,
        /// The explanation, naming the limit.
        reason: String,
    },
    /// The peer's decision policy rejected the stream.
    #[error("stream `{stream}` rejected by the peer: {reason}")]
    Rejected {
        /// The stream's name.
        stream: String,
        /// The reason the peer's application gave.
        reason: String,
    },
    /// `accept` was called for a name that already has an acceptor here.
    #[error("stream name `{stream}` already has an acceptor registered")]
    AlreadyRegistered {
        /// The stream's name.
        stream: String,
    },
    /// The peer did not answer the open in time.
    #[error("stream `{stream}`: no answer from the peer within {after:?}")]
    Timeout {
        /// The stream's name.
        stream: String,
        /// The time waited.
        after: Duration,
    },
    /// The data ended before `read_exact` filled its buffer.
    #[error("stream `{stream}`: the data ended after {got} of {wanted} bytes")]
    UnexpectedEof {
        /// The stream's name.
        stream: String,
        /// Bytes read.
        got: usize,
        /// Bytes wanted.
        wanted: usize,
    },
    /// A message or error block is larger than the limit.
    #[error("stream `{stream}`: {what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The stream's name.
        stream: String,
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A typed message could not be encoded or decoded.
    #[error("stream `{stream}`: {detail}")]
    BadMessage {
        /// The stream's name.
        stream: String,
        /// What failed.
        detail: String,
    },
    /// The peer broke the stream protocol.
    #[error("stream `{stream}`: protocol violation: {detail}")]
    Protocol {
        /// The stream's name (or `?` before the header was read).
        stream: String,
        /// What was wrong.
        detail: String,
    },
    /// A local argument is invalid (empty or too long name, ...).
    #[error("stream `{stream}`: {detail}")]
    Invalid {
        /// The stream's name.
        stream: String,
        /// What was wrong.
        detail: String,
    },
}

impl StreamError {
    /// The name of the stream concerned.
    pub fn stream(&self) -> &str {
        use StreamError::*;
        match self {
            InvalidState { stream, .. }
            | Remote { stream, .. }
            | ErrorAlreadyWritten { stream }
            | WrongSide { stream, .. }
            | ConnectionLost { stream, .. }
            | PeerDropped { stream }
            | PeerClosed { stream }
            | PeerAborted { stream, .. }
            | PairingTimeout { stream, .. }
            | NoAcceptor { stream }
            | Busy { stream, .. }
            | Rejected { stream, .. }
            | AlreadyRegistered { stream }
            | Timeout { stream, .. }
            | UnexpectedEof { stream, .. }
            | TooLarge { stream, .. }
            | BadMessage { stream, .. }
            | Protocol { stream, .. }
            | Invalid { stream, .. } => stream,
        }
    }

    /// True when the connection itself ended.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, StreamError::ConnectionLost { .. })
    }
}

impl From<StreamError> for std::io::Error {
    fn from(e: StreamError) -> Self {
        use std::io::ErrorKind;
        let kind = match &e {
            StreamError::ConnectionLost { .. } => ErrorKind::ConnectionAborted,
            StreamError::PeerDropped { .. } | StreamError::PeerAborted { .. } => ErrorKind::ConnectionReset,
            StreamError::PeerClosed { .. } => ErrorKind::BrokenPipe,
            StreamError::PairingTimeout { .. } | StreamError::Timeout { .. } => ErrorKind::TimedOut,
            StreamError::NoAcceptor { .. } | StreamError::Busy { .. } | StreamError::Rejected { .. } => {
                ErrorKind::ConnectionRefused
            }
            StreamError::AlreadyRegistered { .. } => ErrorKind::AddrInUse,
            StreamError::UnexpectedEof { .. } => ErrorKind::UnexpectedEof,
            StreamError::TooLarge { .. } | StreamError::BadMessage { .. } | StreamError::Protocol { .. } => {
                ErrorKind::InvalidData
            }
            StreamError::Invalid { .. } => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// A stream handler may return `Result<(), StreamError>`: the opener then
/// receives the error's text with code `INTERNAL`.
impl From<StreamError> for echostream_types::Status {
    fn from(e: StreamError) -> Self {
        echostream_types::Status::new(echostream_types::Code::INTERNAL, e.to_string())
    }
}
