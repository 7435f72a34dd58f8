//! A cheaper way to hand finished calls (requests, stream reads, `write_all`) to asyncio than
//! one `future_into_py` each, and to start Python handlers.
//!
//! `future_into_py` completes each awaitable from a tokio thread that takes the GIL and calls
//! `loop.call_soon_threadsafe`, which writes to the loop's self-pipe: with many calls in flight
//! the tokio threads queue for the GIL the loop thread holds, and every call costs a wake-up
//! (profiled: README, "Where the time goes"). Here a finished call only pushes its result, as
//! Rust data, onto a queue, and the first result of a batch writes one byte to a socket the loop
//! watches (`loop.add_reader`); the loop then takes the whole batch at once (`take`), turning
//! the results into Python objects on its own thread, with the GIL it already holds. A tokio
//! thread never takes the GIL for a call made this way.
//!
//! The Python half (`_Completions` in `__init__.py`) keeps one `Completions` per event loop and
//! a future per call id; cancelling that future aborts the Rust task (dropping the call, which
//! sends CANCEL). The queue holds at most one entry per call in flight, which the application
//! started: nothing a peer sends makes it grow.
//!
//! The same queue works the other way round for Python handlers (`server.rs`): a call from the
//! peer pushes a job that starts the handler's coroutine as a task of the loop, and the loop runs
//! the jobs when it drains; the result comes back through the task's done callback, on the loop's
//! thread. One job per call (and one to cancel it) the core admitted, under its limits on
//! requests, events and streams in flight.

use crate::errors::to_py;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a call ended with, kept as Rust data until the loop takes it.
pub(crate) enum Outcome {
    /// A request's JSON text.
    Done(String),
    /// A stream read's chunks, handed to Python as one `bytes`.
    Chunks(Vec<bytes::Bytes>),
    /// Done, with nothing to return (`None`).
    Unit,
    Failed(echostream::Error),
    StreamFailed(echostream::StreamError),
    Panicked,
}

/// The most jobs waiting for the loop; beyond it new Python calls fail at once.
const MAX_JOBS: usize = 65_536;

/// Work for the loop's thread, run with the GIL it holds and given the loop.
pub(crate) type LoopJob = Box<dyn for<'py> FnOnce(Python<'py>, &Bound<'py, PyAny>) + Send>;

pub(crate) struct Shared {
    /// Finished calls not taken by the loop yet.
    done: Mutex<Vec<(u64, Outcome)>>,
    /// Jobs for the loop's thread not run yet, at most [`MAX_JOBS`].
    jobs: Mutex<Vec<LoopJob>>,
    /// The `Completions` is gone: nothing will run jobs any more.
    closed: std::sync::atomic::AtomicBool,
    /// Calls running, to abort when Python cancels them.
    running: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    /// Written (one byte) when `done` goes from empty to not empty.
    wake: UnixStream,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn push(&self, id: u64, outcome: Outcome) {
        let first = {
            let mut done = lock(&self.done);
            done.push((id, outcome));
            done.len() == 1
        };
        if first {
            self.wake();
        }
    }

    /// Has the loop run `job` on its thread (with the GIL) when it next drains. `Err` with a
    /// reason when it will not: the `Completions` is gone, or the loop has not drained for so
    /// long that [`MAX_JOBS`] wait (a closed or stuck loop: the calls fail instead of piling up).
    pub(crate) fn push_job(&self, job: LoopJob) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("the asyncio loop that registered the handlers is gone".into());
        }
        let first = {
            let mut jobs = lock(&self.jobs);
            if jobs.len() >= MAX_JOBS {
                return Err(format!(
                    "the asyncio loop that registered the handlers is not taking work ({MAX_JOBS} \
                     calls wait for it: is it closed or blocked?)"
                ));
            }
            jobs.push(job);
            jobs.len() == 1
        };
        if first {
            self.wake();
        }
        Ok(())
    }

    fn wake(&self) {
        // A full socket buffer means a wake-up is already pending: nothing is lost.
        let _ = (&self.wake).write(&[1]);
    }
}

/// The calls of one event loop whose results the loop takes in batches.
#[pyclass(frozen, module = "echostream._echostream")]
pub(crate) struct Completions {
    shared: Arc<Shared>,
    /// The end the loop watches; kept open for as long as this object lives.
    watched: UnixStream,
    next_id: AtomicU64,
}

impl Completions {
    /// The queues, for handlers that start their coroutines through them.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Runs `call` on the runtime; its result goes to the queue under the returned id.
    pub(crate) fn spawn<F>(&self, call: F) -> u64
    where
        F: std::future::Future<Output = Result<String, echostream::Error>> + Send + 'static,
    {
        use futures::FutureExt;
        self.spawn_outcome(call.map(|r| match r {
            Ok(text) => Outcome::Done(text),
            Err(e) => Outcome::Failed(e),
        }))
    }

    /// The running loop's `Completions` (the Python half's `_completions()`), if it has one.
    pub(crate) fn current(py: Python<'_>) -> PyResult<Option<(Bound<'_, PyAny>, Py<Completions>)>> {
        let c = py.import("echostream")?.getattr("_completions")?.call0()?;
        if c.is_none() {
            return Ok(None);
        }
        let native = c.getattr("_native")?.cast_into::<Completions>()?.unbind();
        Ok(Some((c, native)))
    }

    /// Runs `call` on the runtime; what it ends with goes to the queue under the returned id.
    pub(crate) fn spawn_outcome<F>(&self, call: F) -> u64
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        use futures::FutureExt;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        // Registered before the task can finish (and remove itself): the task waits for this
        // lock if it is that quick.
        let mut running = lock(&self.shared.running);
        let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let outcome = std::panic::AssertUnwindSafe(call)
                .catch_unwind()
                .await
                .unwrap_or(Outcome::Panicked);
            lock(&shared.running).remove(&id);
            shared.push(id, outcome);
        });
        running.insert(id, task.abort_handle());
        id
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        lock(&self.shared.jobs).clear();
    }
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        let (watched, wake) = UnixStream::pair()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot make the completion socket pair: {e}")))?;
        for s in [&watched, &wake] {
            s.set_nonblocking(true).map_err(|e| {
                PyRuntimeError::new_err(format!("cannot make the completion sockets non-blocking: {e}"))
            })?;
        }
        Ok(Completions {
            shared: Arc::new(Shared {
                done: Mutex::default(),
                jobs: Mutex::default(),
                closed: Default::default(),
                running: Mutex::default(),
                wake,
            }),
            watched,
            next_id: AtomicU64::new(1),
        })
    }

    /// The file descriptor the loop watches for readability.
    fn fileno(&self) -> i32 {
        self.watched.as_raw_fd()
    }

    /// Runs the jobs pushed since the last drain (starting handlers' coroutines on `event_loop`),
    /// then returns the finished calls: `(id, value, ok)`, the value being the JSON text of the
    /// result or the exception to raise. Called by the loop when the socket is readable.
    fn drain<'py>(&self, py: Python<'py>, event_loop: &Bound<'py, PyAny>) -> Vec<(u64, Py<PyAny>, bool)> {
        // The wake-up bytes first: anything pushed after this writes a new one.
        let mut sink = [0u8; 256];
        while matches!((&self.watched).read(&mut sink), Ok(n) if n > 0) {}
        let jobs = std::mem::take(&mut *lock(&self.shared.jobs));
        for job in jobs {
            job(py, event_loop);
        }
        let done = std::mem::take(&mut *lock(&self.shared.done));
        done.into_iter()
            .map(|(id, outcome)| match outcome {
                Outcome::Done(text) => (
                    id,
                    pyo3::types::PyString::new(py, &text).into_any().unbind(),
                    true,
                ),
                Outcome::Chunks(chunks) => match crate::stream::joined(py, &chunks) {
                    Ok(b) => (id, b.into_any().unbind(), true),
                    Err(e) => (id, e.into_value(py).into_any(), false),
                },
                Outcome::Unit => (id, py.None(), true),
                Outcome::Failed(e) => (id, to_py(e).into_value(py).into_any(), false),
                Outcome::StreamFailed(e) => (
                    id,
                    crate::errors::stream_to_py(e).into_value(py).into_any(),
                    false,
                ),
                Outcome::Panicked => (
                    id,
                    PyRuntimeError::new_err("the call panicked in the Rust core (a bug: please report it)")
                        .into_value(py)
                        .into_any(),
                    false,
                ),
            })
            .collect()
    }

    /// Aborts call `id` (its Python future was cancelled): the call is dropped, which cancels
    /// it on the peer too.
    fn cancel(&self, id: u64) {
        if let Some(task) = lock(&self.shared.running).remove(&id) {
            task.abort();
        }
    }
}
