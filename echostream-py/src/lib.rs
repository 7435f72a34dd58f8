//! The native half of the `echostream` Python package: a thin front over the public Rust API
//! of the `echostream` crate (STYLE.md point 22). Every type here wraps one Rust type and adds
//! conversion only: JSON text in and out (the Python half encodes and decodes values with the
//! `json` module), `bytes` for streams, and exceptions for [`echostream::Error`].
//!
//! Every network operation returns an asyncio awaitable (pyo3-async-runtimes on a tokio runtime
//! of its own); the GIL is not held while Rust waits, and cancelling the awaitable drops the Rust
//! future.

mod client;
#[cfg(unix)]
mod completion;
mod errors;
mod server;
mod stream;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::time::Duration;

/// Seconds from Python as a [`Duration`]; `name` is the parameter named in the `ValueError`.
fn seconds(value: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "{name}={value} is not a positive number of seconds"
            ))
        })
}

/// A count from Python that must be at least 1; `name` is the parameter named in the
/// `ValueError`.
fn positive(n: usize, name: &str) -> PyResult<usize> {
    if n == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{name}=0: must be at least 1"
        )));
    }
    Ok(n)
}

/// Stream limits and timeouts from Python (`stream_options={"max_read_to_end": ...}`), keyed by
/// the names of [`StreamOptions`](echostream::stream::StreamOptions)' fields; times in seconds.
fn stream_options(
    map: std::collections::HashMap<String, f64>,
) -> PyResult<echostream::stream::StreamOptions> {
    let mut o = echostream::stream::StreamOptions::default();
    for (key, value) in map {
        let count = || -> PyResult<usize> {
            if value.fract() == 0.0 && value >= 1.0 && value <= usize::MAX as f64 {
                Ok(value as usize)
            } else {
                Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "stream_options `{key}`={value} is not a positive whole number"
                )))
            }
        };
        let name = format!("stream_options `{key}`");
        match key.as_str() {
            "accept_queue" => o.accept_queue = count()?,
            "decision_queue" => o.decision_queue = count()?,
            "pairing_timeout" => o.pairing_timeout = seconds(value, &name)?,
            "open_timeout" => o.open_timeout = seconds(value, &name)?,
            "decision_timeout" => o.decision_timeout = seconds(value, &name)?,
            "max_error_size" => o.max_error_size = count()?,
            "max_message_size" => o.max_message_size = count()?,
            "max_read_to_end" => o.max_read_to_end = count()?,
            "max_streams_per_connection" => o.max_streams_per_connection = count()?,
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "stream_options: unknown option `{key}` (known: accept_queue, decision_queue, \
                     pairing_timeout, open_timeout, decision_timeout, max_error_size, \
                     max_message_size, max_read_to_end, max_streams_per_connection)"
                )))
            }
        }
    }
    Ok(o)
}

/// QUIC transport settings from Python (`transport={"stream_receive_window": 4 << 20, ...}`),
/// keyed by the names of [`TransportOptions`](echostream::connection::TransportOptions)' fields,
/// over its defaults; times in seconds, `congestion` one of `"cubic"`, `"newreno"`, `"bbr"`,
/// `keep_alive` and `call_priority` also `None`/`False` for off.
fn transport_options(
    map: std::collections::HashMap<String, Bound<'_, PyAny>>,
) -> PyResult<echostream::connection::TransportOptions> {
    use echostream::connection::Congestion;
    use pyo3::exceptions::PyValueError;
    let mut t = echostream::connection::TransportOptions::default();
    for (key, value) in map {
        let name = format!("transport `{key}`");
        let bad = |what: &str| PyValueError::new_err(format!("{name}={value}: expected {what}"));
        let count = || -> PyResult<u32> {
            match value.extract::<u32>() {
                Ok(n) if n > 0 && !value.is_instance_of::<pyo3::types::PyBool>() => Ok(n),
                _ => Err(bad("a whole number from 1 to 2**32-1")),
            }
        };
        let secs = || -> PyResult<std::time::Duration> {
            let v = value.extract::<f64>().map_err(|_| bad("seconds"))?;
            seconds(v, &name)
        };
        let off = value.is_none() || value.extract::<bool>().is_ok_and(|b| !b);
        match key.as_str() {
            "idle_timeout" => t.idle_timeout = secs()?,
            "keep_alive" => t.keep_alive = if off { None } else { Some(secs()?) },
            "max_bidi_streams" => t.max_bidi_streams = count()?,
            "max_uni_streams" => t.max_uni_streams = count()?,
            "socket_buffer" => t.socket_buffer = count()? as usize,
            "stream_receive_window" => t.stream_receive_window = Some(count()?),
            "receive_window" => t.receive_window = Some(count()?),
            "reordering_threshold" => t.reordering_threshold = count()?,
            "loss_time_threshold" => {
                t.loss_time_threshold = match value.extract::<f32>() {
                    Ok(v) if v >= 9.0 / 8.0 && v.is_finite() => v,
                    _ => return Err(bad("a number of round trips, at least 1.125")),
                }
            }
            "congestion" => {
                t.congestion = match value.extract::<String>().as_deref() {
                    Ok("cubic") => Congestion::Cubic,
                    Ok("newreno") => Congestion::NewReno,
                    Ok("bbr") => Congestion::Bbr,
                    _ => return Err(bad("\"cubic\", \"newreno\" or \"bbr\"")),
                }
            }
            "call_priority" => {
                t.call_priority = match value.extract::<bool>() {
                    Ok(true) => Some(Default::default()),
                    Ok(false) => None,
                    Err(_) => return Err(bad("True or False")),
                }
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "transport: unknown option `{key}` (known: idle_timeout, keep_alive, \
                     max_bidi_streams, max_uni_streams, socket_buffer, stream_receive_window, \
                     receive_window, reordering_threshold, loss_time_threshold, congestion, \
                     call_priority)"
                )))
            }
        }
    }
    Ok(t)
}

/// `(key, value)` pairs from Python as call metadata.
fn metadata(pairs: Option<Vec<(String, String)>>) -> echostream::Metadata {
    let mut md = echostream::Metadata::new();
    for (k, v) in pairs.unwrap_or_default() {
        md.insert(k, v.into_bytes());
    }
    md
}

/// Metadata as `(key, value)` pairs for Python (values that are not UTF-8 are decoded lossily).
fn metadata_pairs(md: &echostream::Metadata) -> Vec<(String, String)> {
    md.iter()
        .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// Runs `f` inside the runtime's context: core calls that start a task (a clock's sync loop,
/// a subscription) need one, and Python calls them from the loop's thread, outside tokio.
fn in_runtime<R>(f: impl FnOnce() -> R) -> R {
    let _entered = pyo3_async_runtimes::tokio::get_runtime().enter();
    f()
}

/// Where mDNS runs, from Python: `"all"` (the default), `"loopback"`, or a list of interface
/// names.
#[derive(FromPyObject)]
enum InterfacesArg {
    Word(String),
    Names(Vec<String>),
}

fn interfaces(arg: InterfacesArg) -> PyResult<echostream::discovery::Interfaces> {
    use echostream::discovery::Interfaces;
    match arg {
        InterfacesArg::Word(w) if w == "all" => Ok(Interfaces::All),
        InterfacesArg::Word(w) if w == "loopback" => Ok(Interfaces::Loopback),
        InterfacesArg::Word(w) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "interfaces=`{w}`: expected \"all\", \"loopback\" or a list of interface names"
        ))),
        InterfacesArg::Names(names) => Ok(Interfaces::named(names)),
    }
}

/// Bytes handed to Python as a `bytes` object.
struct Buf(bytes::Bytes);

impl<'py> IntoPyObject<'py> for Buf {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

/// The native module `echostream._echostream`.
#[pymodule]
fn _echostream(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(client::connect, m)?)?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::PeerHandle>()?;
    m.add_class::<client::EventStream>()?;
    m.add_class::<client::ClientEventStream>()?;
    m.add_class::<client::Clock>()?;
    m.add_class::<server::NativeServer>()?;
    m.add_class::<server::CallContext>()?;
    m.add_class::<server::StreamAcceptor>()?;
    m.add_class::<server::ConnectionEventStream>()?;
    m.add_class::<server::ConnectionRequestStream>()?;
    m.add_class::<server::PendingConnection>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<stream::MessageStream>()?;
    #[cfg(unix)]
    m.add_class::<completion::Completions>()?;
    m.add_function(wrap_pyfunction!(server::start_server, m)?)?;
    m.add_function(wrap_pyfunction!(server::identity_fingerprint, m)?)?;
    Ok(())
}
