//! `XStream` for Python: every operation an awaitable taking or returning `bytes`.

use crate::errors::stream_to_py;
use crate::Buf;
use echostream::XStream;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3_async_runtimes::tokio::future_into_py;
use std::sync::Arc;

/// One stream pair with its error half (`XStream`).
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct Stream {
    inner: Arc<XStream>,
}

impl Stream {
    pub(crate) fn new(s: XStream) -> Self {
        Stream { inner: Arc::new(s) }
    }
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
    /// Up to `n` bytes; `b""` at the end of the data.
    #[pyo3(signature = (n=65536))]
    fn read<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let n = read_size(n)?;
        let s = self.inner.clone();
        future_into_py(py, async move {
            let mut buf = vec![0u8; n];
            let got = s.read(&mut buf).await.map_err(stream_to_py)?;
            buf.truncate(got);
            Ok(Buf(buf.into()))
        })
    }

    /// The next chunk as it arrived, or `None` at the end of the data.
    fn read_chunk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move {
            let chunk = s.read_chunk().await.map_err(stream_to_py)?;
            Ok(chunk.map(Buf))
        })
    }

    /// Exactly `n` bytes (an error if the data ends first).
    fn read_exact<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let n = read_size(n)?;
        let s = self.inner.clone();
        future_into_py(py, async move {
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).await.map_err(stream_to_py)?;
            Ok(Buf(buf.into()))
        })
    }

    /// Everything up to the end of the data (bounded by the stream options' `max_read_to_end`).
    fn read_to_end<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move {
            let all = s.read_to_end().await.map_err(stream_to_py)?;
            Ok(Buf(all.into()))
        })
    }

    /// Writes some of `data`; resolves to how many bytes were taken.
    fn write<'py>(&self, py: Python<'py>, data: PyBackedBytes) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move { s.write(&data).await.map_err(stream_to_py) })
    }

    /// Writes all of `data`.
    fn write_all<'py>(&self, py: Python<'py>, data: PyBackedBytes) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move { s.write_all(&data).await.map_err(stream_to_py) })
    }

    /// Waits until what was written has left.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move { s.flush().await.map_err(stream_to_py) })
    }

    /// Ends this side's data (the peer reads the end); reading goes on.
    fn write_eof<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move { s.write_eof().await.map_err(stream_to_py) })
    }

    /// Closes both directions.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move { s.close().await.map_err(stream_to_py) })
    }

    /// Writes `data` on the error half; with `with_data_flush` the data written so far is
    /// delivered first.
    #[pyo3(signature = (data, with_data_flush=true))]
    fn error_write<'py>(
        &self,
        py: Python<'py>,
        data: PyBackedBytes,
        with_data_flush: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move {
            s.error_write(&data, with_data_flush).await.map_err(stream_to_py)
        })
    }

    /// Waits for the peer's error message and returns it.
    fn error_read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        future_into_py(py, async move {
            let e = s.error_read().await.map_err(stream_to_py)?;
            Ok(Buf(e.into()))
        })
    }

    /// `"open"`, `"write-closed"`, `"read-closed"`, `"closed"` or `"error"`.
    #[getter]
    fn state(&self) -> &'static str {
        match self.inner.state() {
            echostream::StreamState::Open => "open",
            echostream::StreamState::WriteClosed => "write-closed",
            echostream::StreamState::ReadClosed => "read-closed",
            echostream::StreamState::Closed => "closed",
            _ => "error",
        }
    }

    /// The stream name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// The metadata the opener sent.
    #[getter]
    fn metadata(&self) -> Vec<(String, String)> {
        crate::metadata_pairs(self.inner.metadata())
    }

    /// The connection the stream belongs to.
    #[getter]
    fn peer(&self) -> crate::client::PeerHandle {
        crate::client::PeerHandle {
            inner: self.inner.peer().clone(),
        }
    }
}
