//! CPU time per side: every runtime thread registers its kernel thread id,
//! and the time each has spent on a CPU is read from
//! `/proc/self/task/TID/schedstat` (nanoseconds, unlike the 10 ms ticks of
//! `stat`). Threads that already exited are not counted, which is why the
//! benchmark runtimes keep their worker threads for their whole life.

use crate::alloc::Side;
use std::sync::Mutex;

static THREADS: Mutex<Vec<(Side, u32)>> = Mutex::new(Vec::new());

/// Records the calling thread as working for `side`.
pub(crate) fn register_thread(side: Side) {
    let tid = std::fs::read_link("/proc/thread-self").ok().and_then(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
    });
    if let Some(tid) = tid {
        THREADS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((side, tid));
    }
}

/// Nanoseconds on a CPU of the live threads registered for `side`.
pub(crate) fn cpu_ns(side: Side) -> u64 {
    let threads = THREADS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    threads
        .iter()
        .filter(|(s, _)| *s == side)
        .filter_map(|(_, tid)| std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// Nanoseconds on a CPU of every live registered thread, whatever its side.
pub(crate) fn all_ns() -> u64 {
    [Side::Server, Side::Client, Side::Shared]
        .into_iter()
        .map(cpu_ns)
        .sum()
}

/// Forgets every registered thread (between cases, after the runtimes shut down).
pub(crate) fn clear() {
    THREADS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
