//! The one public error type.

use echostream_types::{CloseCode, Code, Status};
use std::time::Duration;

/// Result alias with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in EchoStream, as variants a caller can match.
///
/// Messages name the thing involved: the method, the address, the limit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The QUIC connection could not be established.
    #[error("could not connect to {addr}: {reason}")]
    Connect {
        /// The address connected to.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The peer's TLS identity was not trusted (pin mismatch, changed known host, bad chain).
    #[error("identity of {addr} rejected: {reason}")]
    IdentityRejected {
        /// The address connected to.
        addr: String,
        /// Why, with the fingerprints and files involved.
        reason: String,
    },
    /// The peer refused the connection (decision policy, authentication, limits).
    #[error("connection to {addr} rejected by the peer: {reason}")]
    Rejected {
        /// The address connected to.
        addr: String,
        /// The peer's reason.
        reason: String,
    },
    /// The call's deadline passed.
    #[error("request `{method}` timed out after {after:?}")]
    Timeout {
        /// The method called.
        method: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The call was cancelled.
    #[error("request `{method}` was cancelled")]
    Cancelled {
        /// The method called.
        method: String,
    },
    /// The peer has no handler for the method.
    #[error("unknown method `{method}`: the peer has no handler registered under that name")]
    UnknownMethod {
        /// The method called.
        method: String,
    },
    /// A payload did not encode or decode (argument on the peer, or result here).
    #[error("bad payload for `{method}`: {detail}")]
    BadPayload {
        /// The method or event involved.
        method: String,
        /// What failed to decode, and why.
        detail: String,
    },
    /// The peer's rate limit refused the call; the connection stays usable.
    #[error("`{method}` was rate limited by the peer: {message}")]
    RateLimited {
        /// The method called.
        method: String,
        /// When to try again, as the peer said (`None` if it did not say).
        retry_after: Option<Duration>,
        /// The peer's message, naming the limit.
        message: String,
    },
    /// The peer's access control refused the call: the caller is known but not allowed.
    #[error("`{method}` was denied by the peer: {reason}")]
    PermissionDenied {
        /// The method called.
        method: String,
        /// The peer's reason.
        reason: String,
    },
    /// The peer's access control refused the call: the caller did not authenticate.
    #[error("`{method}` requires authentication: {reason}")]
    Unauthenticated {
        /// The method called.
        method: String,
        /// The peer's reason.
        reason: String,
    },
    /// The remote handler returned an error.
    #[error("`{method}` failed on the peer: {status}")]
    Remote {
        /// The method called.
        method: String,
        /// Code, message and details set by the handler.
        status: Status,
    },
    /// An error status raised by application code (return it from a handler to
    /// choose the code the caller sees).
    #[error("{0}")]
    Status(Status),
    /// The connection is closed or was lost.
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// The close code, when the peer (or we) closed with one.
        code: Option<CloseCode>,
        /// The reason, as given by whoever closed it.
        reason: String,
    },
    /// A frame would exceed the receiver's limit.
    #[error("{what} of {size} bytes exceeds the peer's frame limit of {limit} bytes")]
    FrameTooLarge {
        /// What was being sent (for example "request `upload`").
        what: String,
        /// Its encoded size.
        size: u64,
        /// The limit.
        limit: u32,
    },
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A builder or configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// TLS setup failed (identity files, certificates).
    #[error("TLS setup failed: {0}")]
    Tls(#[from] crate::connection::tls::TlsError),
    /// A stream operation failed (names the stream and, for a refused
    /// operation, the state that refused it).
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
    /// A local I/O error (binding a socket, ...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Discovery found no usable instance of a service in time.
    #[error("{}", discovery_timeout_message(.name, .interfaces, .waited, .other_names, .failures))]
    DiscoveryTimeout {
        /// The service name looked for.
        name: String,
        /// The interfaces browsed, in words.
        interfaces: String,
        /// How long discovery waited.
        waited: Duration,
        /// Instance names of other services seen meanwhile.
        other_names: Vec<String>,
        /// Instances of this name that were found but not usable, each with why
        /// (connection failed, identity rejected, no fingerprint announced).
        failures: Vec<String>,
    },
    /// Discovery could not run: mDNS daemon failure, invalid service name or TXT entry.
    #[error("discovery failed: {0}")]
    Discovery(String),
}

fn discovery_timeout_message(
    name: &str,
    interfaces: &str,
    waited: &Duration,
    other_names: &[String],
    failures: &[String],
) -> String {
    let mut m = format!(
        "no usable instance of `{name}` discovered on {interfaces} within {waited:?}; \
         {} instance(s) of other names seen",
        other_names.len()
    );
    if !other_names.is_empty() {
        let shown: Vec<String> = other_names.iter().take(5).map(|n| format!("`{n}`")).collect();
        m.push_str(&format!(
            " ({}{})",
            shown.join(", "),
            if other_names.len() > 5 { ", ..." } else { "" }
        ));
    }
    if !failures.is_empty() {
        m.push_str(&format!(
            "; {} instance(s) of `{name}` found but unusable: {}",
            failures.len(),
            failures.join("; ")
        ));
    }
    m
}

impl Error {
    /// An application error with [`Code::APPLICATION`], for handlers.
    pub fn handler(message: impl Into<String>) -> Self {
        Error::Status(Status::application(message))
    }

    /// An application error with a chosen code, for handlers.
    pub fn with_code(code: Code, message: impl Into<String>) -> Self {
        Error::Status(Status::new(code, message))
    }

    /// True for errors after which the connection is unusable.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, Error::ConnectionClosed { .. } | Error::Protocol(_))
    }

    /// Maps a status received for a call of `method` to the matching variant.
    pub(crate) fn from_remote(method: &str, status: Status) -> Self {
        let method = method.to_owned();
        match status.code() {
            Code::UNKNOWN_METHOD => Error::UnknownMethod { method },
            Code::BAD_PAYLOAD => Error::BadPayload {
                method,
                detail: format!("the peer could not decode the argument: {}", status.message()),
            },
            Code::CANCELLED => Error::Cancelled { method },
            Code::RATE_LIMITED => Error::RateLimited {
                method,
                retry_after: retry_after(&status),
                message: status.message().to_owned(),
            },
            Code::PERMISSION_DENIED => Error::PermissionDenied {
                method,
                reason: status.message().to_owned(),
            },
            Code::UNAUTHENTICATED => Error::Unauthenticated {
                method,
                reason: status.message().to_owned(),
            },
            _ => Error::Remote { method, status },
        }
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::Status(s)
    }
}

/// Converts a handler's error into the status sent to the caller.
impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Status(s) => s,
            // Propagate a downstream failure's code and message unchanged.
            Error::Remote { status, .. } => status,
            Error::Timeout { .. } => Status::new(Code::DEADLINE_EXCEEDED, e.to_string()),
            Error::RateLimited {
                retry_after, message, ..
            } => {
                let ms = retry_after.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                Status::new(Code::RATE_LIMITED, message).with_details(ms.to_be_bytes().to_vec())
            }
            Error::PermissionDenied { reason, .. } => Status::new(Code::PERMISSION_DENIED, reason),
            Error::Unauthenticated { reason, .. } => Status::new(Code::UNAUTHENTICATED, reason),
            other => Status::new(Code::INTERNAL, other.to_string()),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind;
        let kind = match &e {
            Error::Timeout { .. } | Error::DiscoveryTimeout { .. } => ErrorKind::TimedOut,
            Error::ConnectionClosed { .. } => ErrorKind::ConnectionAborted,
            Error::Connect { .. } => ErrorKind::ConnectionRefused,
            Error::Io(io) => io.kind(),
            _ => ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The retry delay carried by a `RATE_LIMITED` status, if it has one (milliseconds, big-endian,
/// in the status details).
pub fn retry_after(status: &Status) -> Option<Duration> {
    if status.code() != Code::RATE_LIMITED {
        return None;
    }
    let bytes: [u8; 8] = status.details().get(..8)?.try_into().ok()?;
    Some(Duration::from_millis(u64::from_be_bytes(bytes)))
}
