//! Small calls before bulk data: a congestion-window limit that holds while calls are active.
//!
//! A small frame on the control stream (a request, an answer, an event) waits behind
//! whatever stream data its side already has in flight: on the receiving host those packets
//! are queued ahead of it and processed first. A bulk stream keeps up to its flow-control
//! window in flight, so on loopback a call waited 200-500 µs behind one, against 35-100 µs
//! alone. Stream priorities do not help there: they order what quinn sends next, not what is
//! already on the way.
//!
//! So while this side sends both control frames and stream data (each seen within
//! [`CallPriority::hold`]), its congestion window is limited, delay-based like TCP Vegas:
//! once per round trip the limit shrinks by a quarter if the smoothed round trip is more than
//! twice the least seen (data is queueing), and grows by an eighth otherwise, never below
//! [`CallPriority::min_window`] nor above the congestion controller's own window. Bulk
//! streams slow down while calls run and get their full speed back when calls stop. Control
//! frames are sent first within the window (the control stream has a higher quinn priority),
//! so they are never starved by the limit; and a control frame handed to quinn gets room for
//! one packet above the limit (`ROOM`, until the next packet goes out), so a call does not wait
//! for an acknowledgement to free room in a full window. That room is what lets the floor be
//! small: less bulk data queued ahead of each call. A limit on the send or receive *window* instead
//! (bytes not yet acknowledged or read) would be decided per write, and a bulk writer woken
//! with the control stream's writer can take all the room each time: that starved calls
//! (tried, a call timed out). Calls alone never start the limit: 64 callers of 32 KiB echoes
//! went from about 490 to 240 MB/s when they did.
//!
//! A call also waits for the CPU when both sides share few cores: a stream read that finds
//! data in quinn's buffers returns at once (quinn's reads do not count against tokio's
//! cooperative budget; the stream's lock counts one unit of 128), so a bulk reader held a
//! worker thread while the call's tasks waited behind it. So during the 256 stream reads
//! (`TURN_READS`) after this side sends a control frame, every 4th read (`YIELD_EVERY`) lets
//! other tasks run first (`CallActivity::read_yields`). Without calls no read yields.
//!
//! The state is sans-IO (`Limit`): quinn's controller callbacks pass the time in.

use quinn::congestion::{Controller, ControllerFactory};
use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the small-call priority (see [`TransportOptions::call_priority`]).
///
/// A longer hold suits calls or events that come at a slower pace than every 50 ms (the
/// limit should not lapse between them); a larger least window keeps more of a bulk
/// stream's speed on a path with a long round trip. It acts on the side that sends: calls
/// (or answers, or events) wait behind the bulk data of the side they leave from. While it
/// is on, stream reads also take turns with other tasks for a short while after each
/// control frame (see the module docs). `None` turns both off.
///
/// ```
/// use echostream_core::connection::{CallPriority, TransportOptions};
/// use std::time::Duration;
///
/// let opts = TransportOptions {
///     call_priority: Some(CallPriority {
///         hold: Duration::from_millis(200),
///         min_window: 64 * 1024,
///     }),
///     ..TransportOptions::default()
/// };
/// # let _ = opts;
/// ```
///
/// [`TransportOptions::call_priority`]: super::TransportOptions::call_priority
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallPriority {
    /// How long the limit holds after this side last sent a control frame (request,
    /// answer, event) or last wrote stream data: it applies while both are within it.
    pub hold: Duration,
    /// The least the limit lets through per round trip, in bytes: bulk data keeps moving at
    /// least at `min_window / round trip` while calls run.
    pub min_window: u32,
}

impl Default for CallPriority {
    /// 50 ms hold, 16 KiB least window. On loopback (`echostream-bench --only 1,9`, split
    /// layout, three runs each) the small calls' p99 during a bulk stream was 60-83 µs with
    /// 16 KiB against 88-209 µs with 32 KiB (bulk meanwhile 426-483 against 474-544 MB/s);
    /// below 32 KiB calls waited for room in the window until a waiting call frame got room of
    /// its own.
    fn default() -> Self {
        Self {
            hold: Duration::from_millis(50),
            min_window: 16 * 1024,
        }
    }
}

/// What this side sent since the controller last looked: control frames (set by the
/// connection's outbox) and bulk data (set by stream and side-stream writes), read and
/// cleared by the controller on each batch of acknowledgements; and the turns the
/// connection's stream reads take after a control frame (`read_yields`).
#[derive(Debug, Default)]
pub(crate) struct CallActivity {
    calls: AtomicBool,
    bulk: AtomicBool,
    /// Set with `calls`, taken by stream reads (the controller does not touch it).
    recent: AtomicBool,
    /// Stream reads left that take turns with other tasks since a control frame was last
    /// seen (shared by the connection's streams; races only shift a turn).
    turns: AtomicU32,
    /// A control frame is waiting to be sent: the limit leaves it room (`Limit::window`);
    /// cleared by the controller when the next packet goes out.
    waiting: AtomicBool,
}

impl CallActivity {
    /// Records that a control frame is being sent.
    pub(crate) fn mark(&self) {
        set(&self.calls);
        set(&self.recent);
        set(&self.waiting);
    }

    /// Records that control-stream data was just handed to quinn: the next packet carries it
    /// (the control stream goes first), so the limit leaves room for that packet. Set again
    /// after the write because a bulk packet sent meanwhile (from another thread) may have
    /// taken the room that `mark` made.
    pub(crate) fn written(&self) {
        set(&self.waiting);
    }

    /// Whether a stream read should let other tasks run first: every
    /// [`YIELD_EVERY`]th read within [`TURN_READS`] reads after a control frame.
    pub(crate) fn read_yields(&self) -> bool {
        if take(&self.recent) {
            self.turns.store(TURN_READS, Relaxed);
        }
        let left = self.turns.load(Relaxed);
        if left == 0 {
            return false;
        }
        self.turns.store(left - 1, Relaxed);
        left.is_multiple_of(YIELD_EVERY)
    }

    /// Records that stream data (an XStream's or a side stream's) is being written.
    pub(crate) fn mark_bulk(&self) {
        set(&self.bulk);
    }

    /// (calls, bulk) seen since the last look.
    fn take(&self) -> (bool, bool) {
        (take(&self.calls), take(&self.bulk))
    }
}

/// How many stream reads after a control frame take turns (about 300 KB of packet-sized
/// chunks, a millisecond of a fast bulk stream).
const TURN_READS: u32 = 256;

/// One read in this many takes a turn while calls run: on loopback (`echostream-bench --only
/// 1,9`, shared runtime) every 4th read halved the small calls' p50 and took their p99 from
/// about 280 to 180 µs without slowing the bulk stream; every 2nd or every read cost it a
/// sixth to a third of its speed, every 8th helped little.
const YIELD_EVERY: u32 = 4;

/// Runs the stream write `fut`, marking bulk data at every poll: one write can take longer
/// than the hold (10 MB at 100 MB/s), and marking only when it starts let the limit lapse
/// in the middle of it. Polls come as quinn takes data, so the mark follows the data.
pub(crate) async fn marking_bulk<F: Future>(activity: Option<&CallActivity>, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Some(a) = activity {
            a.mark_bulk();
        }
        fut.as_mut().poll(cx)
    })
    .await
}

fn set(flag: &AtomicBool) {
    // Load first: storing into a line the driver's core also writes costs more.
    if !flag.load(Relaxed) {
        flag.store(true, Relaxed);
    }
}

fn take(flag: &AtomicBool) -> bool {
    flag.load(Relaxed) && flag.swap(false, Relaxed)
}

/// The call activity of a connection built with [`CallPriority`] on (`None` otherwise).
pub(crate) fn activity_of(conn: &quinn::Connection) -> Option<Arc<CallActivity>> {
    conn.congestion_state()
        .into_any()
        .downcast::<PriorityController>()
        .ok()
        .map(|c| c.activity.clone())
}

/// The limit, without quinn: fed the time, round trips and the inner controller's window.
#[derive(Clone, Debug)]
pub(crate) struct Limit {
    cfg: CallPriority,
    /// Until when the last control frame and the last bulk write keep the limit on: it
    /// applies while both do (calls alone are not held back: they are what it protects).
    calls_until: Option<Instant>,
    bulk_until: Option<Instant>,
    active: bool,
    /// The current limit in bytes.
    window: u64,
    /// When the limit may next change (once per round trip).
    next_change: Instant,
}

/// What a batch of acknowledgements tells the [`Limit`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Acks {
    pub(crate) now: Instant,
    /// Control frames sent since the last batch.
    pub(crate) calls: bool,
    /// Stream data written since the last batch.
    pub(crate) bulk: bool,
    pub(crate) srtt: Duration,
    pub(crate) min_rtt: Duration,
    /// Bytes unacknowledged now.
    pub(crate) in_flight: u64,
    /// The congestion controller's own window.
    pub(crate) inner: u64,
}

impl Limit {
    pub(crate) fn new(cfg: CallPriority, now: Instant) -> Self {
        Self {
            cfg,
            calls_until: None,
            bulk_until: None,
            active: false,
            window: u64::from(cfg.min_window),
            next_change: now,
        }
    }

    /// After a batch of acknowledgements.
    pub(crate) fn on_acks(&mut self, a: Acks) {
        let Acks {
            now,
            srtt,
            min_rtt,
            in_flight,
            inner,
            ..
        } = a;
        let floor = u64::from(self.cfg.min_window);
        if a.calls {
            self.calls_until = Some(after(now, self.cfg.hold));
        }
        if a.bulk {
            self.bulk_until = Some(after(now, self.cfg.hold));
        }
        let live = |t: Option<Instant>| t.is_some_and(|t| now < t);
        if !(live(self.calls_until) && live(self.bulk_until)) {
            self.active = false;
            return;
        }
        if !self.active {
            // Start from what is in flight: shrinking from there takes a few round trips at
            // most, and a LAN's larger window is kept if the round trip allows it.
            self.active = true;
            self.window = in_flight.clamp(floor, inner.max(floor));
            self.next_change = now;
        }
        if now < self.next_change {
            return;
        }
        self.next_change = after(now, srtt);
        self.window = if srtt > min_rtt.saturating_mul(2) {
            self.window - self.window / 4
        } else {
            self.window.saturating_add(self.window / 8)
        }
        .clamp(floor, inner.max(floor));
    }

    /// The window to use given the controller's own, and whether a control frame waits to be
    /// sent (then the limit leaves [`ROOM`] more, never above the controller's own window).
    pub(crate) fn window(&self, inner: u64, waiting: bool) -> u64 {
        if !self.active {
            return inner;
        }
        let room = if waiting { ROOM } else { 0 };
        inner.min(self.window.saturating_add(room))
    }
}

/// Room above the limit for the packet that carries a waiting control frame, so that a call
/// does not wait for an acknowledgement to free room in a full window (about 3 packets: the
/// limit can sit a little below what is in flight). The flag is cleared by the next packet
/// sent, so the room lets one packet through, which carries the control frame: the control
/// stream goes first.
const ROOM: u64 = 4 * 1024;

/// `now + d`, or `now` if that is past what an `Instant` holds: this runs in quinn's
/// connection driver, where a panic would end the connection (a configured hold or a round
/// trip can be any `Duration`).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// A congestion controller wrapped with the [`Limit`].
struct PriorityController {
    inner: Box<dyn Controller>,
    activity: Arc<CallActivity>,
    limit: Limit,
    /// Round trips of the last acknowledgement (`on_end_acks` does not get them).
    srtt: Duration,
    min_rtt: Duration,
}

impl Controller for PriorityController {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
        take(&self.activity.waiting);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.srtt = rtt.get();
        self.min_rtt = rtt.min();
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
        let (calls, bulk) = self.activity.take();
        self.limit.on_acks(Acks {
            now,
            calls,
            bulk,
            srtt: self.srtt,
            min_rtt: self.min_rtt,
            in_flight,
            inner: self.inner.window(),
        });
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.limit
            .window(self.inner.window(), self.activity.waiting.load(Relaxed))
    }

    fn metrics(&self) -> quinn::congestion::ControllerMetrics {
        let mut m = self.inner.metrics();
        m.congestion_window = self.limit.window(self.inner.window(), false);
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        // Shares the activity flag: `activity_of` reads it through a clone.
        Box::new(PriorityController {
            inner: self.inner.clone_box(),
            activity: self.activity.clone(),
            limit: self.limit.clone(),
            srtt: self.srtt,
            min_rtt: self.min_rtt,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Builds a [`PriorityController`] around the controller `inner` builds.
pub(crate) struct PriorityFactory {
    pub(crate) inner: Arc<dyn ControllerFactory + Send + Sync>,
    pub(crate) cfg: CallPriority,
}

impl ControllerFactory for PriorityFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(PriorityController {
            inner: self.inner.clone().build(now, current_mtu),
            activity: Arc::new(CallActivity::default()),
            limit: Limit::new(self.cfg, now),
            srtt: Duration::ZERO,
            min_rtt: Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const BIG: u64 = 10 << 20;

    /// A limit with a 32 KiB floor (the figures below assume it, whatever the default).
    fn limit() -> (Limit, Instant) {
        let now = Instant::now();
        let cfg = CallPriority {
            min_window: 32 << 10,
            ..CallPriority::default()
        };
        (Limit::new(cfg, now), now)
    }

    /// Calls and bulk data both seen, round trips `srtt` over a least of `min`.
    fn both(now: Instant, srtt: Duration, min: Duration, in_flight: u64) -> Acks {
        Acks {
            now,
            calls: true,
            bulk: true,
            srtt,
            min_rtt: min,
            in_flight,
            inner: BIG,
        }
    }

    #[test]
    fn without_calls_the_controllers_window_is_untouched() {
        let (mut l, now) = limit();
        l.on_acks(Acks {
            calls: false,
            ..both(now, 10 * MS, MS, 256 << 10)
        });
        assert_eq!(l.window(BIG, false), BIG);
    }

    #[test]
    fn calls_alone_are_not_held_back() {
        let (mut l, now) = limit();
        l.on_acks(Acks {
            bulk: false,
            ..both(now, 10 * MS, MS, 256 << 10)
        });
        assert_eq!(l.window(BIG, false), BIG);
    }

    #[test]
    fn calls_and_bulk_within_one_hold_start_the_limit() {
        let (mut l, now) = limit();
        l.on_acks(Acks {
            bulk: false,
            ..both(now, MS, MS, 256 << 10)
        });
        l.on_acks(Acks {
            calls: false,
            ..both(now + 40 * MS, MS, MS, 256 << 10)
        });
        assert!(l.window(BIG, false) < BIG);
    }

    #[test]
    fn calls_start_the_limit_at_what_is_in_flight_and_queueing_shrinks_it_to_the_floor() {
        let (mut l, mut now) = limit();
        l.on_acks(both(now, 10 * MS, MS, 256 << 10));
        assert_eq!(
            l.window(BIG, false),
            192 << 10,
            "a quarter less at once: srtt is 10 × min"
        );
        for _ in 0..20 {
            now += 10 * MS;
            l.on_acks(both(now, 10 * MS, MS, 64 << 10));
        }
        assert_eq!(l.window(BIG, false), 32 << 10);
        assert_eq!(
            l.window(16 << 10, false),
            16 << 10,
            "never above the controller's own"
        );
    }

    #[test]
    fn the_limit_grows_while_the_round_trip_stays_near_its_least() {
        let (mut l, mut now) = limit();
        l.on_acks(both(now, MS, MS, 0));
        let first = l.window(BIG, false);
        assert_eq!(first, (32 << 10) + (4 << 10));
        for _ in 0..5 {
            now += MS;
            l.on_acks(both(now, MS, MS, 0));
        }
        assert!(l.window(BIG, false) > first);
    }

    #[test]
    fn the_limit_changes_at_most_once_per_round_trip() {
        let (mut l, now) = limit();
        l.on_acks(both(now, 10 * MS, MS, 256 << 10));
        let w = l.window(BIG, false);
        l.on_acks(both(now + 5 * MS, 10 * MS, MS, 256 << 10));
        assert_eq!(l.window(BIG, false), w);
        l.on_acks(both(now + 10 * MS, 10 * MS, MS, 256 << 10));
        assert!(l.window(BIG, false) < w);
    }

    #[test]
    fn the_limit_ends_a_hold_after_the_last_call() {
        let (mut l, now) = limit();
        l.on_acks(both(now, 10 * MS, MS, 256 << 10));
        let quiet = |t| Acks {
            calls: false,
            ..both(t, 10 * MS, MS, 64 << 10)
        };
        l.on_acks(quiet(now + 49 * MS));
        assert!(l.window(BIG, false) < BIG, "still within the hold");
        l.on_acks(quiet(now + 50 * MS));
        assert_eq!(l.window(BIG, false), BIG);
    }

    #[test]
    fn a_new_hold_starts_again_from_what_is_in_flight() {
        let (mut l, now) = limit();
        l.on_acks(both(now, 10 * MS, MS, 32 << 10));
        l.on_acks(Acks {
            calls: false,
            ..both(now + 60 * MS, 10 * MS, MS, 0)
        });
        l.on_acks(both(now + 70 * MS, 10 * MS, MS, 512 << 10));
        assert_eq!(l.window(BIG, false), 384 << 10);
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let now = Instant::now();
        let mut l = Limit::new(
            CallPriority {
                hold: Duration::MAX,
                min_window: 32 << 10,
            },
            now,
        );
        l.on_acks(both(now, Duration::MAX, Duration::MAX, u64::MAX));
        assert!(l.window(u64::MAX, false) >= 32 << 10);
    }

    #[test]
    fn a_waiting_control_frame_gets_room_above_the_limit_only() {
        let (mut l, mut now) = limit();
        assert_eq!(l.window(BIG, true), BIG, "no limit, nothing to add");
        for _ in 0..20 {
            now += 10 * MS;
            l.on_acks(both(now, 10 * MS, MS, 64 << 10));
        }
        assert_eq!(l.window(BIG, false), 32 << 10);
        assert_eq!(l.window(BIG, true), (32 << 10) + ROOM);
        assert_eq!(
            l.window(34 << 10, true),
            34 << 10,
            "never above the controller's own"
        );
    }

    #[test]
    fn the_room_lasts_until_the_next_packet_is_sent() {
        let now = Instant::now();
        let cfg = CallPriority {
            hold: Duration::from_millis(50),
            min_window: 4 << 10,
        };
        let factory = Arc::new(PriorityFactory {
            inner: Arc::new(quinn::congestion::NewRenoConfig::default()),
            cfg,
        });
        let mut c = factory.build(now, 1452);
        // NewReno's own window (12,000 bytes at first) stays above the 4 KiB floor and its room.
        let own = c.initial_window();
        let activity = c
            .clone_box()
            .into_any()
            .downcast::<PriorityController>()
            .map(|p| p.activity.clone())
            .expect("a PriorityController");
        // Calls and bulk data start the limit near its floor (nothing in flight).
        activity.mark();
        activity.mark_bulk();
        c.on_end_acks(now, 0, false, None);
        c.on_sent(now, 1452, 1);
        let limit = c.window();
        assert!(limit + ROOM < own, "the limit holds, below NewReno's own");
        activity.written();
        assert_eq!(c.window(), limit + ROOM, "room for the waiting frame");
        c.on_sent(now, 1452, 2);
        assert_eq!(c.window(), limit, "the packet took it");
        activity.mark();
        assert_eq!(c.window(), limit + ROOM, "a frame being sent waits too");
    }

    #[test]
    fn activity_is_taken_once() {
        let a = CallActivity::default();
        assert_eq!(a.take(), (false, false));
        a.mark();
        a.mark();
        a.mark_bulk();
        assert_eq!(a.take(), (true, true));
        assert_eq!(a.take(), (false, false));
    }

    #[test]
    fn stream_reads_take_turns_only_after_control_frames() {
        let a = CallActivity::default();
        assert!((0..1000).all(|_| !a.read_yields()), "no calls: no turns");
        a.mark_bulk();
        assert!(!a.read_yields(), "bulk data is not a call");
        a.mark();
        let turns = (0..1000).filter(|_| a.read_yields()).count();
        assert_eq!(turns as u32, TURN_READS / YIELD_EVERY);
        // The controller taking its flags does not end the turns a new frame starts.
        a.mark();
        assert_eq!(a.take(), (true, true));
        assert_eq!((0..1000).filter(|_| a.read_yields()).count(), turns);
    }

    #[test]
    fn a_long_write_marks_bulk_at_every_poll() {
        let a = CallActivity::default();
        let mut left = 3;
        let write = std::future::poll_fn(|cx| {
            if left == 0 {
                return std::task::Poll::Ready(());
            }
            left -= 1;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        });
        let mut fut = std::pin::pin!(marking_bulk(Some(&a), write));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..3 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(a.take(), (false, true), "marked while the write waits");
        }
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(a.take(), (false, true));
    }
}
