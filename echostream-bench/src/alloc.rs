//! A counting global allocator that attributes every allocation to a side.
//!
//! Each runtime thread marks itself (`on_thread_start`) as server, client or
//! shared; the allocator reads that thread-local marker on every call. In the
//! split layout the two sides share no memory (they talk over loopback
//! sockets only), so per-side live bytes are exact; in the shared layout only
//! the totals mean anything.
//!
//! Counting is off unless a case turns it on ([`set_counting`]): the atomic
//! updates would otherwise slow down the latency cases a little, and
//! unevenly (in proportion to each system's allocation count).
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this module only forwards to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Which side of a benchmark a thread works for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The main thread and anything not started by a benchmark runtime.
    Other = 0,
    /// A thread of the server's runtime (split layout).
    Server = 1,
    /// A thread of the client's runtime (split layout).
    Client = 2,
    /// A thread of the one runtime both sides share (shared layout).
    Shared = 3,
}

const SIDES: usize = 4;

thread_local! {
    // `const` and without a destructor: safe to read from inside the
    // allocator, even while the thread is being torn down.
    static SIDE: Cell<u8> = const { Cell::new(Side::Other as u8) };
}

/// Marks the calling thread as working for `side`.
pub(crate) fn set_thread_side(side: Side) {
    SIDE.with(|s| s.set(side as u8));
}

fn thread_side() -> usize {
    SIDE.try_with(|s| s.get() as usize).unwrap_or(0)
}

/// One cache line per side, so that two sides counting at once do not
/// contend on the same line.
#[repr(align(64))]
struct Counters {
    allocs: AtomicU64,
    bytes: AtomicU64,
    live: AtomicI64,
    peak: AtomicI64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            allocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            live: AtomicI64::new(0),
            peak: AtomicI64::new(0),
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static PER_SIDE: [Counters; SIDES] = [const { Counters::new() }; SIDES];
/// Live bytes of the whole process (all sides), for peaks of the sum.
static TOTAL: Counters = Counters::new();

/// The process's global allocator: `System`, counted.
#[derive(Debug)]
pub(crate) struct CountingAlloc;

fn on_alloc(size: usize) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    let c = &PER_SIDE[thread_side()];
    c.allocs.fetch_add(1, Relaxed);
    c.bytes.fetch_add(size as u64, Relaxed);
    let live = c.live.fetch_add(size as i64, Relaxed) + size as i64;
    c.peak.fetch_max(live, Relaxed);
    let total = TOTAL.live.fetch_add(size as i64, Relaxed) + size as i64;
    TOTAL.peak.fetch_max(total, Relaxed);
}

fn on_free(size: usize) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    PER_SIDE[thread_side()].live.fetch_sub(size as i64, Relaxed);
    TOTAL.live.fetch_sub(size as i64, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the bookkeeping around it neither allocates nor touches the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        on_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a new allocation of the new size replacing the old one.
            on_free(layout.size());
            on_alloc(new_size);
        }
        p
    }
}

/// Turns counting on or off (see the module documentation).
pub(crate) fn set_counting(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Counters of one side at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SideCount {
    /// Allocations so far (reallocations count as one).
    pub(crate) allocs: u64,
    /// Bytes requested so far.
    pub(crate) bytes: u64,
    /// Bytes allocated and not yet freed by this side's threads.
    pub(crate) live: i64,
}

/// The counters of `side` now.
pub(crate) fn side(side: Side) -> SideCount {
    let c = &PER_SIDE[side as usize];
    SideCount {
        allocs: c.allocs.load(Relaxed),
        bytes: c.bytes.load(Relaxed),
        live: c.live.load(Relaxed),
    }
}

/// Starts a new peak measurement at the current level; returns that level.
pub(crate) fn reset_peak() -> i64 {
    let now = TOTAL.live.load(Relaxed);
    TOTAL.peak.store(now, Relaxed);
    now
}

/// Highest total live bytes since [`reset_peak`].
pub(crate) fn total_peak() -> i64 {
    TOTAL.peak.load(Relaxed)
}
