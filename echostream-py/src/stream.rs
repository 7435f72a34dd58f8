//! `XStream` for Python: every operation an awaitable taking or returning `bytes`.

use crate::errors::{stream_to_py, to_py};
use crate::Buf;
use echostream::{Code, Codec, Status, StreamDuplex, XStream};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use pyo3_async_runtimes::tokio::future_into_py;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};

/// One stream pair with its error half (`XStream`). `None` once it became a message stream.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct Stream {
    inner: Mutex<Option<Arc<XStream>>>,
}

impl Stream {
    pub(crate) fn new(s: XStream) -> Self {
        Stream {
            inner: Mutex::new(Some(Arc::new(s))),
        }
    }

    /// The stream, or the error of one that became a message stream.
    fn get(&self) -> PyResult<Arc<XStream>> {
        self.inner
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| PyRuntimeError::new_err("this stream became a message stream (messages())"))
    }
}

/// Bytes to write: `bytes` (kept without a copy), `bytearray` or `memoryview` (copied once,
/// since the abi3 API before 3.11 has no buffer protocol).
struct Data(PyBackedBytes);

impl<'a, 'py> FromPyObject<'a, 'py> for Data {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> Result<Self, Self::Error> {
        if let Ok(b) = obj.extract::<PyBackedBytes>() {
            return Ok(Data(b));
        }
        if obj.is_instance_of::<pyo3::types::PyMemoryView>() {
            let copied = obj.call_method0("tobytes")?;
            return Ok(Data(copied.extract::<PyBackedBytes>().map_err(PyErr::from)?));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "expected bytes, bytearray or memoryview, not {}",
            obj.get_type().name()?
        )))
    }
}

impl std::ops::Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Chunks handed to Python as one `bytes` object, built once: one copy, and no zeroed buffer
/// before it.
struct Joined(Vec<bytes::Bytes>);

impl<'py> IntoPyObject<'py> for Joined {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        joined(py, &self.0)
    }
}

/// `chunks` as one `bytes` object.
pub(crate) fn joined<'py>(py: Python<'py>, chunks: &[bytes::Bytes]) -> PyResult<Bound<'py, PyBytes>> {
    if let [one] = chunks {
        return Ok(PyBytes::new(py, one));
    }
    let len = chunks.iter().map(bytes::Bytes::len).sum();
    PyBytes::new_with(py, len, |out| {
        let mut at = 0;
        for c in chunks {
            out[at..at + c.len()].copy_from_slice(c);
            at += c.len();
        }
        Ok(())
    })
}

/// A read size from Python, bounded so a typo cannot allocate without end.
fn read_size(n: usize) -> PyResult<usize> {
    const MAX: usize = 64 << 20;
    if n > MAX {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "n={n} is larger than one read may ask for ({MAX} bytes); read in pieces or use read_to_end()"
        )));
    }
    Ok(n)
}

#[pymethods]
impl Stream {
    /// Up to `n` bytes; `b""` at the end of the data. One read waits for the first bytes, then
    /// takes everything else that has already arrived, up to `n`: for bulk data a large `n`
    /// (1 MiB) means fewer awaits.
    #[pyo3(signature = (n=65536))]
    fn read<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let n = read_size(n)?;
        let s = self.get()?;
        // Through the loop's completion queue where it has one: no GIL taken on a tokio thread
        // to finish the read (`completion.rs`).
        #[cfg(unix)]
        if let Some((python_half, native)) = crate::completion::Completions::current(py)? {
            let id = native.get().spawn_outcome(async move {
                let mut chunks = Vec::new();
                match s.read_chunks(n, &mut chunks).await {
                    Ok(_) => crate::completion::Outcome::Chunks(chunks),
                    Err(e) => crate::completion::Outcome::StreamFailed(e),
                }
            });
            return python_half.call_method1("future", (id,));
        }
        future_into_py(py, async move {
            // The chunks as quinn received them, copied once, into the `bytes` object.
            let mut chunks = Vec::new();
            s.read_chunks(n, &mut chunks).await.map_err(stream_to_py)?;
            Ok(Joined(chunks))
        })
    }

    /// The next chunk as it arrived (often one packet's worth), or `None` at the end of the
    /// data.
    fn read_chunk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move {
            let chunk = s.read_chunk().await.map_err(stream_to_py)?;
            Ok(chunk.map(Buf))
        })
    }

    /// Exactly `n` bytes (an error if the data ends first).
    fn read_exact<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let n = read_size(n)?;
        let s = self.get()?;
        future_into_py(py, async move {
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).await.map_err(stream_to_py)?;
            Ok(Buf(buf.into()))
        })
    }

    /// Everything up to the end of the data (bounded by the stream options' `max_read_to_end`).
    fn read_to_end<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move {
            let all = s.read_to_end().await.map_err(stream_to_py)?;
            Ok(Buf(all.into()))
        })
    }

    /// Writes some of `data`; resolves to how many bytes were taken.
    fn write<'py>(&self, py: Python<'py>, data: Data) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move { s.write(&data).await.map_err(stream_to_py) })
    }

    /// Writes all of `data`.
    fn write_all<'py>(&self, py: Python<'py>, data: Data) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        // The Python object is the chunk's owner: `bytes` reach QUIC without a copy.
        let chunk = bytes::Bytes::from_owner(data.0);
        #[cfg(unix)]
        if let Some((python_half, native)) = crate::completion::Completions::current(py)? {
            let id = native.get().spawn_outcome(async move {
                match s.write_chunk(chunk).await {
                    Ok(()) => crate::completion::Outcome::Unit,
                    Err(e) => crate::completion::Outcome::StreamFailed(e),
                }
            });
            return python_half.call_method1("future", (id,));
        }
        future_into_py(
            py,
            async move { s.write_chunk(chunk).await.map_err(stream_to_py) },
        )
    }

    /// Waits until what was written has left.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move { s.flush().await.map_err(stream_to_py) })
    }

    /// Ends this side's data (the peer reads the end); reading goes on.
    fn write_eof<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move { s.write_eof().await.map_err(stream_to_py) })
    }

    /// Closes both directions.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move { s.close().await.map_err(stream_to_py) })
    }

    /// Writes `data` on the error half; with `with_data_flush` the data written so far is
    /// delivered first.
    #[pyo3(signature = (data, with_data_flush=true))]
    fn error_write<'py>(
        &self,
        py: Python<'py>,
        data: Data,
        with_data_flush: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move {
            s.error_write(&data, with_data_flush).await.map_err(stream_to_py)
        })
    }

    /// Waits for the peer's error message and returns it.
    fn error_read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        future_into_py(py, async move {
            let e = s.error_read().await.map_err(stream_to_py)?;
            Ok(Buf(e.into()))
        })
    }

    /// `"open"`, `"write-closed"`, `"read-closed"`, `"closed"` or `"error"`.
    #[getter]
    fn state(&self) -> PyResult<&'static str> {
        Ok(match self.get()?.state() {
            echostream::StreamState::Open => "open",
            echostream::StreamState::WriteClosed => "write-closed",
            echostream::StreamState::ReadClosed => "read-closed",
            echostream::StreamState::Closed => "closed",
            _ => "error",
        })
    }

    /// The stream name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.get()?.name().to_owned())
    }

    /// The metadata the opener sent.
    #[getter]
    fn metadata(&self) -> PyResult<Vec<(String, String)>> {
        Ok(crate::metadata_pairs(self.get()?.metadata()))
    }

    /// The connection the stream belongs to.
    #[getter]
    fn peer(&self) -> PyResult<crate::client::PeerHandle> {
        Ok(crate::client::PeerHandle {
            inner: self.get()?.peer().clone(),
        })
    }

    /// This stream as a stream of JSON messages both ways (`StreamDuplex`); the byte
    /// operations are gone from then on. Fails while a byte operation is still pending.
    fn messages(&self) -> PyResult<MessageStream> {
        let mut slot = self
            .inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the stream's lock is poisoned"))?;
        let Some(arc) = slot.take() else {
            return Err(PyRuntimeError::new_err("this stream is already a message stream"));
        };
        match Arc::try_unwrap(arc) {
            Ok(x) => Ok(MessageStream {
                inner: Arc::new(StreamDuplex::new(x, Codec::Json)),
            }),
            Err(arc) => {
                *slot = Some(arc);
                Err(PyRuntimeError::new_err(
                    "a read or write on this stream is still pending; await it before messages()",
                ))
            }
        }
    }
}

/// A stream of JSON messages both ways (`StreamDuplex` with the JSON codec): the framing of the
/// Rust typed streams, so a Rust `StreamReceiver<T>`/`StreamSender` is the other end.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct MessageStream {
    inner: Arc<StreamDuplex<Box<RawValue>>>,
}

#[pymethods]
impl MessageStream {
    /// Sends one message (JSON text).
    fn send<'py>(&self, py: Python<'py>, value: String) -> PyResult<Bound<'py, PyAny>> {
        let value = crate::client::raw_json(value, "the message")?;
        let s = self.inner.clone();
        future_into_py(py, async move { s.send(&*value).await.map_err(to_py) })
    }

    /// The next message's JSON text, or `None` at the end of the peer's messages.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move {
            let m = s.try_recv().await.map_err(to_py)?;
            Ok(m.map(|v| v.get().to_owned()))
        })
    }

    /// Ends this side's messages; receiving goes on.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move { s.finish_sending().await.map_err(to_py) })
    }

    /// Fails the stream with a status (acceptor: written on the error half).
    fn fail<'py>(&self, py: Python<'py>, code: u32, message: String) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move {
            s.fail(Status::new(Code(code), message)).await.map_err(to_py)
        })
    }
}
