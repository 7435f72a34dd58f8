//! Status codes of failed calls and connection close codes.

use bytes::Bytes;
use std::fmt;

/// A status code carried by an error response.
///
/// Codes below [`Code::APPLICATION`] are reserved for the framework; an
/// application picks its own codes at or above it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u32);

impl Code {
    /// An unexpected failure inside the framework or a handler.
    pub const INTERNAL: Code = Code(1);
    /// No handler is registered for the method.
    pub const UNKNOWN_METHOD: Code = Code(2);
    /// The payload did not decode into the handler's argument type, or the codec is unsupported.
    pub const BAD_PAYLOAD: Code = Code(3);
    /// The request's deadline passed before the handler finished.
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    /// The caller cancelled the request.
    pub const CANCELLED: Code = Code(5);
    /// The handler panicked.
    pub const HANDLER_PANICKED: Code = Code(6);
    /// The peer is shutting down and takes no new requests.
    pub const UNAVAILABLE: Code = Code(7);
    /// A limit was hit (concurrency, size).
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    /// Access control denied the call.
    pub const PERMISSION_DENIED: Code = Code(9);
    /// The caller is not authenticated.
    pub const UNAUTHENTICATED: Code = Code(10);
    /// A rate limit was hit; details say when to retry.
    pub const RATE_LIMITED: Code = Code(11);
    /// The response was larger than the caller accepts.
    pub const RESPONSE_TOO_LARGE: Code = Code(12);
    /// The call arrived as 0-RTT early data (before the server's TLS handshake completed) and
    /// its handler is not declared idempotent: it was refused without running, because early
    /// data can be replayed. The message names the method. A well-behaved client never causes
    /// this: it holds such calls until the handshake completes.
    pub const EARLY_DATA_REFUSED: Code = Code(13);
    /// Default code of an error returned by a handler; applications use codes from here up.
    pub const APPLICATION: Code = Code(1000);

    /// A short name for the code, for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Code::INTERNAL => "internal",
            Code::UNKNOWN_METHOD => "unknown method",
            Code::BAD_PAYLOAD => "bad payload",
            Code::DEADLINE_EXCEEDED => "deadline exceeded",
            Code::CANCELLED => "cancelled",
            Code::HANDLER_PANICKED => "handler panicked",
            Code::UNAVAILABLE => "unavailable",
            Code::RESOURCE_EXHAUSTED => "resource exhausted",
            Code::PERMISSION_DENIED => "permission denied",
            Code::UNAUTHENTICATED => "unauthenticated",
            Code::RATE_LIMITED => "rate limited",
            Code::RESPONSE_TOO_LARGE => "response too large",
            Code::EARLY_DATA_REFUSED => "early data refused",
            Code(c) if c >= Code::APPLICATION.0 => "application",
            _ => "reserved",
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({} {})", self.0, self.name())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// The wire form of a failed call: a code, a message and optional details.
///
/// A handler's error converts into a `Status` (see `From` impls); the caller
/// receives it inside its error type.
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    details: Bytes,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Bytes::new(),
        }
    }

    /// An application error with the default [`Code::APPLICATION`] code.
    pub fn application(message: impl Into<String>) -> Self {
        Self::new(Code::APPLICATION, message)
    }

    /// Attaches opaque details (for example an encoded error struct).
    pub fn with_details(mut self, details: impl Into<Bytes>) -> Self {
        self.details = details.into();
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details, empty when none were set.
    pub fn details(&self) -> &Bytes {
        &self.details
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("details_len", &self.details.len())
            .finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [code {}]", self.message, self.code)
    }
}

impl std::error::Error for Status {}

impl From<String> for Status {
    fn from(message: String) -> Self {
        Status::application(message)
    }
}

impl From<&str> for Status {
    fn from(message: &str) -> Self {
        Status::application(message)
    }
}

impl From<std::io::Error> for Status {
    fn from(e: std::io::Error) -> Self {
        Status::new(Code::INTERNAL, format!("I/O error: {e}"))
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for Status {
    fn from(e: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Status::application(e.to_string())
    }
}

/// QUIC application close codes used by EchoStream when it closes a connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u32);

impl CloseCode {
    /// Normal close by the application.
    pub const NORMAL: CloseCode = CloseCode(0);
    /// The peer broke the protocol (malformed frame, unknown frame type, bad sequence).
    pub const PROTOCOL_VIOLATION: CloseCode = CloseCode(1);
    /// The peer declared a frame larger than the limit.
    pub const FRAME_TOO_LARGE: CloseCode = CloseCode(2);
    /// The peers speak different protocol versions.
    pub const VERSION_MISMATCH: CloseCode = CloseCode(3);
    /// The endpoint is shutting down (sent after a go-away).
    pub const GOING_AWAY: CloseCode = CloseCode(4);
    /// The connection was refused by policy; the reason says why.
    pub const REJECTED: CloseCode = CloseCode(5);
    /// The hello did not arrive in time.
    pub const HELLO_TIMEOUT: CloseCode = CloseCode(6);
    /// An internal failure.
    pub const INTERNAL: CloseCode = CloseCode(7);
    /// The peer did not read what was sent to it fast enough (its queue stayed full).
    pub const SLOW_CONSUMER: CloseCode = CloseCode(8);

    /// A short name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::NORMAL => "normal close",
            CloseCode::PROTOCOL_VIOLATION => "protocol violation",
            CloseCode::FRAME_TOO_LARGE => "frame too large",
            CloseCode::VERSION_MISMATCH => "version mismatch",
            CloseCode::GOING_AWAY => "going away",
            CloseCode::REJECTED => "rejected",
            CloseCode::HELLO_TIMEOUT => "hello timeout",
            CloseCode::INTERNAL => "internal error",
            CloseCode::SLOW_CONSUMER => "slow consumer",
            _ => "unknown close code",
        }
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({} {})", self.0, self.name())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}
