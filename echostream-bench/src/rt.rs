//! Runtime layouts. Sequential latency depends mostly on which worker threads
//! the client and server tasks land on, so every system runs under the same
//! layout and every figure names its layout.

use crate::alloc::{set_thread_side, Side};
use crate::cpu;
use std::future::Future;
use tokio::runtime::{Builder, Handle, Runtime};

/// How the two sides share threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One multi-thread runtime with 2 workers for both sides.
    Shared,
    /// One runtime per side, 1 worker each (the machine has 2 cores).
    Split,
}

impl Layout {
    /// The name used in the table and the JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Layout::Shared => "shared 2-worker",
            Layout::Split => "split 1+1",
        }
    }
}

/// The runtimes of one layout. Dropping it shuts them down, and with them
/// every server and client started on them.
#[derive(Debug)]
pub(crate) struct Runtimes {
    // Options only so that `Drop` can shut them down with a time limit.
    server: Option<Runtime>,
    client: Option<Runtime>,
}

fn runtime(name: &str, workers: usize, side: Side) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .on_thread_start(move || {
            set_thread_side(side);
            cpu::register_thread(side);
        })
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

impl Runtimes {
    /// Starts the runtimes of `layout`.
    pub(crate) fn new(layout: Layout) -> Self {
        match layout {
            Layout::Shared => Self {
                server: Some(runtime("bench-shared", 2, Side::Shared)),
                client: None,
            },
            Layout::Split => Self {
                server: Some(runtime("bench-server", 1, Side::Server)),
                client: Some(runtime("bench-client", 1, Side::Client)),
            },
        }
    }

    /// Where servers run.
    pub(crate) fn server(&self) -> &Handle {
        self.server.as_ref().expect("runtime present until drop").handle()
    }

    /// Where clients and the measuring tasks run.
    pub(crate) fn client(&self) -> &Handle {
        match &self.client {
            Some(c) => c.handle(),
            None => self.server(),
        }
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        for rt in [self.client.take(), self.server.take()].into_iter().flatten() {
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
        cpu::clear();
    }
}

/// Runs `fut` as a task of `handle`'s runtime and waits for it from this
/// (non-runtime) thread. Spawning, rather than `block_on`, keeps the
/// measured work on the runtime's workers, not on the main thread.
pub(crate) fn run_on<F>(handle: &Handle, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match handle.block_on(handle.spawn(fut)) {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("benchmark task failed: {e}"),
    }
}
