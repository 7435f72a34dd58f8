//! [`echostream::Error`] as the exceptions of `echostream._errors` (defined in Python, where a
//! class can also derive from `TimeoutError` or `ConnectionError`). The message is the Rust
//! error's `Display`, which names the method, address or limit.

use echostream::{Error, StreamError};
use pyo3::prelude::*;

/// The class in `echostream._errors` an error maps to, and for remote failures the status code.
fn class_of(e: &Error) -> (&'static str, Option<(u32, String)>) {
    match e {
        Error::Connect { .. } => ("ConnectError", None),
        Error::IdentityRejected { .. } | Error::Tls(_) => ("TrustError", None),
        Error::Rejected { .. } => ("RejectedError", None),
        Error::Timeout { .. } => ("TimeoutError", None),
        Error::DiscoveryTimeout { .. } => ("DiscoveryTimeoutError", None),
        Error::Cancelled { .. } => ("CancelledError", None),
        Error::UnknownMethod { .. } => ("UnknownMethodError", None),
        Error::BadPayload { .. } => ("BadPayloadError", None),
        Error::RateLimited { .. } => ("RateLimitedError", None),
        Error::PermissionDenied { .. } => ("PermissionDeniedError", None),
        Error::Unauthenticated { .. } => ("UnauthenticatedError", None),
        Error::Remote { status, .. } | Error::Status(status) => (
            "RemoteError",
            Some((status.code().0, status.message().to_owned())),
        ),
        Error::ConnectionClosed { .. } => ("ConnectionClosedError", None),
        Error::FrameTooLarge { .. } => ("FrameTooLargeError", None),
        Error::Protocol(_) => ("ProtocolError", None),
        Error::Config(_) => ("ConfigError", None),
        Error::Stream(s) => stream_class(s),
        Error::Io(_) => ("TransportError", None),
        Error::Discovery(_) => ("DiscoveryError", None),
        _ => ("EchoStreamError", None),
    }
}

fn stream_class(e: &StreamError) -> (&'static str, Option<(u32, String)>) {
    match e {
        StreamError::ConnectionLost { .. } => ("StreamClosedError", None),
        StreamError::Timeout { .. } | StreamError::PairingTimeout { .. } => ("StreamTimeoutError", None),
        _ => ("StreamError", None),
    }
}

/// The method a call error names, if any.
fn method_of(e: &Error) -> Option<String> {
    match e {
        Error::Timeout { method, .. }
        | Error::Cancelled { method }
        | Error::UnknownMethod { method }
        | Error::BadPayload { method, .. }
        | Error::RateLimited { method, .. }
        | Error::PermissionDenied { method, .. }
        | Error::Unauthenticated { method, .. }
        | Error::Remote { method, .. } => Some(method.clone()),
        _ => None,
    }
}

/// Builds the exception; if the Python half cannot be imported (a broken install), a
/// `RuntimeError` with the same message.
fn build(
    py: Python<'_>,
    class: &str,
    message: String,
    code: Option<(u32, String)>,
    method: Option<String>,
) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let cls = py.import("echostream._errors")?.getattr(class)?;
        let value = match code {
            Some((code, status_message)) => cls.call1((code, status_message, method.clone(), &message))?,
            None => cls.call1((&message,))?,
        };
        if let Some(method) = method {
            value.setattr("method", method)?;
        }
        Ok(PyErr::from_value(value))
    })();
    made.unwrap_or_else(|_| pyo3::exceptions::PyRuntimeError::new_err(message))
}

/// An [`echostream::Error`] as its Python exception.
pub(crate) fn to_py(e: Error) -> PyErr {
    let (class, code) = class_of(&e);
    let method = method_of(&e);
    let message = e.to_string();
    Python::attach(|py| build(py, class, message, code, method))
}

/// A [`StreamError`] as its Python exception.
pub(crate) fn stream_to_py(e: StreamError) -> PyErr {
    let (class, _) = stream_class(&e);
    let message = e.to_string();
    Python::attach(|py| build(py, class, message, None, None))
}

/// The exception for a value that is not JSON (named `what`).
pub(crate) fn bad_json(what: &str, e: serde_json::Error) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(format!("{what} is not valid JSON: {e}"))
}
