//! Failures as the tool reports them: a class with its exit code, a message that names the
//! thing, and a hint saying what to do.

use echostream::stream::StreamError;
use echostream::{Code, Error, Status};
use std::fmt;

/// The exit-code table printed by `echostream --help` (and repeated in the README).
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    other failure (local file, configuration, unexpected error)
  2    usage error (bad arguments)
  3    unreachable: no answer, nothing found by discovery, or the connection was lost
  4    trust: the server's certificate was not trusted (pin, known host, CA)
  5    rejected: the server refused the connection or the call (policy, authentication, rate limit)
  6    unknown method, event or stream
  7    bad payload: the JSON argument is malformed or does not fit the method
  8    remote error: the handler failed (its status is printed)
  9    timeout
  10   transfer failed: the receiver reported an error, or the checksums differ
  11   not serving: `health` found the service NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN
  130  interrupted (Ctrl-C)

Environment: ECHOSTREAM_HOME (identities and known_hosts), ECHOSTREAM_TOKEN (--token), RUST_LOG.";

/// What kind of failure, and so which exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Other,
    Usage,
    Unreachable,
    Trust,
    Rejected,
    UnknownMethod,
    BadPayload,
    Remote,
    Timeout,
    Transfer,
    NotServing,
    Interrupted,
}

impl Class {
    pub(crate) fn code(self) -> u8 {
        match self {
            Class::Other => 1,
            Class::Usage => 2,
            Class::Unreachable => 3,
            Class::Trust => 4,
            Class::Rejected => 5,
            Class::UnknownMethod => 6,
            Class::BadPayload => 7,
            Class::Remote => 8,
            Class::Timeout => 9,
            Class::Transfer => 10,
            Class::NotServing => 11,
            Class::Interrupted => 130,
        }
    }

    /// The class's name in JSON reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Other => "other",
            Class::Usage => "usage",
            Class::Unreachable => "unreachable",
            Class::Trust => "trust",
            Class::Rejected => "rejected",
            Class::UnknownMethod => "unknown_method",
            Class::BadPayload => "bad_payload",
            Class::Remote => "remote_error",
            Class::Timeout => "timeout",
            Class::Transfer => "transfer_failed",
            Class::NotServing => "not_serving",
            Class::Interrupted => "interrupted",
        }
    }
}

/// A failure of one command.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) class: Class,
    pub(crate) message: String,
    /// What the user can do about it.
    pub(crate) hint: Option<String>,
    /// The wire status, when the peer sent one.
    pub(crate) status: Option<Status>,
}

impl Failure {
    pub(crate) fn new(class: Class, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            hint: None,
            status: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// An error of the local machine (files, configuration).
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self::new(Class::Other, message)
    }

    /// The user pressed Ctrl-C; `progress` says how far the command got.
    pub(crate) fn interrupted(progress: impl Into<String>) -> Self {
        Self::new(Class::Interrupted, format!("interrupted: {}", progress.into()))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The class a wire status belongs to.
pub(crate) fn class_of_code(code: Code) -> Class {
    match code {
        Code::UNKNOWN_METHOD => Class::UnknownMethod,
        Code::BAD_PAYLOAD => Class::BadPayload,
        Code::DEADLINE_EXCEEDED => Class::Timeout,
        Code::PERMISSION_DENIED | Code::UNAUTHENTICATED | Code::RATE_LIMITED | Code::EARLY_DATA_REFUSED => {
            Class::Rejected
        }
        Code::UNAVAILABLE => Class::Unreachable,
        _ => Class::Remote,
    }
}

/// A status code as `NAME (n)`.
pub(crate) fn code_label(code: Code) -> String {
    format!("{} ({})", echostream::metrics::code_label(code), code.0)
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (class, hint, status) = match &e {
            Error::Connect { .. } | Error::ConnectionClosed { .. } => (
                Class::Unreachable,
                Some("check the address and port, that the server runs, and that UDP reaches it"),
                None,
            ),
            Error::DiscoveryTimeout { .. } | Error::Discovery(_) => (
                Class::Unreachable,
                Some("`echostream browse` lists what is announced on this network"),
                None,
            ),
            Error::IdentityRejected { .. } => (
                Class::Trust,
                Some(
                    "if the server's identity changed on purpose, run `echostream known-hosts forget HOST:PORT`, \
                     or pass the new fingerprint with --pin; otherwise do not connect",
                ),
                None,
            ),
            Error::Rejected { .. } => (
                Class::Rejected,
                Some("the server's reason is above; a token (--token) or client certificate (--cert/--key) may be needed"),
                None,
            ),
            Error::Unauthenticated { .. } => (Class::Rejected, Some("pass credentials with --token or --cert/--key"), None),
            Error::PermissionDenied { .. } | Error::RateLimited { .. } => (Class::Rejected, None, None),
            Error::UnknownMethod { .. } => (
                Class::UnknownMethod,
                Some("`echostream list TARGET` shows the methods the server offers"),
                None,
            ),
            Error::BadPayload { .. } => (
                Class::BadPayload,
                Some("`echostream describe TARGET METHOD` shows the argument type"),
                None,
            ),
            Error::Timeout { .. } => (Class::Timeout, Some("raise --timeout if the call is slow by nature"), None),
            Error::Remote { status, .. } | Error::Status(status) => (class_of_code(status.code()), None, Some(status.clone())),
            Error::FrameTooLarge { .. } => (Class::BadPayload, None, None),
            Error::Stream(s) => return Failure::from(s.clone()),
            _ => (Class::Other, None, None),
        };
        let mut failure = Failure::new(class, message);
        failure.hint = hint.map(str::to_owned);
        failure.status = status;
        failure
    }
}

impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Self {
        let class = match &e {
            StreamError::Remote { .. } => Class::Transfer,
            StreamError::ConnectionLost { .. } => Class::Unreachable,
            StreamError::NoAcceptor { .. } => Class::UnknownMethod,
            StreamError::Rejected { .. } | StreamError::Busy { .. } => Class::Rejected,
            StreamError::Timeout { .. } | StreamError::PairingTimeout { .. } => Class::Timeout,
            _ => Class::Other,
        };
        Failure::new(class, e.to_string())
    }
}
