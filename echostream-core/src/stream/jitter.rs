//! A sans-IO jitter buffer: frames with an aligned timestamp (already on the
//! local clock) go in with their arrival time; [`JitterBuffer::poll`]
//! releases them in timestamp order at `aligned time + playout delay`.
//!
//! Rules:
//! - a frame is never released before `aligned + delay` (the delay in force
//!   at release time);
//! - frames come out in timestamp order (ties: arrival order);
//! - a frame that arrives after its playout time (`arrival > aligned +
//!   delay`), or whose timestamp is before one already released, is dropped
//!   and counted as late;
//! - at most `max_frames` are buffered: when full, the incoming frame is
//!   dropped and counted as overflow (tail drop: frames already scheduled
//!   keep their slots);
//! - every pushed frame is exactly one of: released, late, overflow, or still
//!   buffered.
//!
//! The playout delay is fixed, or adaptive within `[min, max]`: the delay is
//! the 99th percentile of the recent transit times (`arrival − aligned`, the
//! one-way delay including clock error) plus a margin, clamped. It is
//! recomputed every [`ADAPT_EVERY`] frames and at once after a late frame.
//! It grows at once, but after its first estimate shrinks by at most
//! [`MAX_SHRINK`] per recomputation: a sudden shrink would make every
//! buffered frame due at once and release them in a burst, a glitch a player
//! hears, while a slow one is absorbed (one frame shorter now and then).
//! Network jitter is also estimated as in RFC 3550 (§6.4.1, `J += (|D| − J)/16`).

use crate::protocol::timesync::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Frames between two recomputations of an adaptive delay.
pub const ADAPT_EVERY: u64 = 25;
/// Most an adaptive delay shrinks per recomputation.
pub const MAX_SHRINK: Duration = Duration::from_millis(2);
/// Transit samples kept for the adaptive delay.
const TRANSIT_WINDOW: usize = 500;
/// Transit samples needed before an adaptive delay moves from its start value.
const MIN_SAMPLES: usize = 20;

/// How the playout delay is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayoutDelay {
    /// Always this delay.
    Fixed(Duration),
    /// The 99th percentile of observed transit times plus `margin`, within
    /// `[min, max]`; starts at `max` until enough frames were seen.
    Adaptive {
        /// Lower bound.
        min: Duration,
        /// Upper bound (and the start value).
        max: Duration,
        /// Added to the observed 99th percentile.
        margin: Duration,
    },
}

impl Default for PlayoutDelay {
    /// Adaptive between 5 ms and 500 ms with a 2 ms margin.
    fn default() -> Self {
        PlayoutDelay::Adaptive {
            min: Duration::from_millis(5),
            max: Duration::from_millis(500),
            margin: Duration::from_millis(2),
        }
    }
}

/// Jitter buffer settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// The playout delay policy.
    pub delay: PlayoutDelay,
    /// Most frames buffered at once (at least 1).
    pub max_frames: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            delay: PlayoutDelay::default(),
            max_frames: 1024,
        }
    }
}

/// Counters and estimates of a [`JitterBuffer`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JitterStats {
    /// Frames pushed.
    pub received: u64,
    /// Frames released by `poll`.
    pub released: u64,
    /// Frames dropped because they arrived after their playout time (or
    /// behind a frame already released).
    pub late: u64,
    /// Frames dropped because the buffer was full.
    pub overflow: u64,
    /// Frames waiting now.
    pub buffered: usize,
    /// The playout delay in force.
    pub delay: Duration,
    /// RFC 3550 interarrival jitter estimate.
    pub jitter: Duration,
    /// The 99th percentile of the recent transit times (arrival − aligned),
    /// if any were seen (negative transits count as zero).
    pub transit_p99: Option<Duration>,
}

/// What happened to a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered; released at the given local time (with the current delay).
    Buffered(Timestamp),
    /// Dropped: it arrived after its playout time.
    Late,
    /// Dropped: the buffer was full.
    Overflow,
}

/// The jitter buffer (plain logic, no I/O, no timers). See the module docs.
#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    frames: BTreeMap<(u64, u64), T>,
    seq: u64,
    delay: Duration,
    last_released: Option<Timestamp>,
    transits: VecDeque<i64>,
    last_transit: Option<i64>,
    jitter_ns: f64,
    since_adapt: u64,
    /// An adaptive delay has had its first estimate (later shrinks are slewed).
    settled: bool,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        let delay = match config.delay {
            PlayoutDelay::Fixed(d) => d,
            PlayoutDelay::Adaptive { min, max, .. } => max.max(min),
        };
        JitterBuffer {
            config: JitterConfig {
                max_frames: config.max_frames.max(1),
                ..config
            },
            frames: BTreeMap::new(),
            seq: 0,
            delay,
            last_released: None,
            transits: VecDeque::new(),
            last_transit: None,
            jitter_ns: 0.0,
            since_adapt: 0,
            settled: false,
            stats: JitterStats {
                delay,
                ..JitterStats::default()
            },
        }
    }

    /// Most frames buffered at once.
    pub fn max_frames(&self) -> usize {
        self.config.max_frames
    }

    /// Counts a frame the caller dropped for lack of room before it reached
    /// the buffer (as received and overflow).
    pub fn reject_overflow(&mut self) {
        self.stats.received += 1;
        self.stats.overflow += 1;
    }

    /// The playout delay in force.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Adds a frame whose time on the local clock is `aligned`, arrived at
    /// local time `arrival`.
    pub fn push(&mut self, item: T, aligned: Timestamp, arrival: Timestamp) -> PushOutcome {
        self.stats.received += 1;
        let transit = arrival.0 as i64 - aligned.0 as i64;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit = Some(transit);
        self.transits.push_back(transit);
        if self.transits.len() > TRANSIT_WINDOW {
            self.transits.pop_front();
        }
        self.since_adapt += 1;

        let behind = self.last_released.is_some_and(|r| aligned < r);
        let outcome = if behind || arrival > aligned + self.delay {
            self.stats.late += 1;
            // React to lateness at once.
            self.since_adapt = ADAPT_EVERY;
            PushOutcome::Late
        } else if self.frames.len() >= self.config.max_frames {
            self.stats.overflow += 1;
            PushOutcome::Overflow
        } else {
            self.seq += 1;
            self.frames.insert((aligned.0, self.seq), item);
            PushOutcome::Buffered(aligned + self.delay)
        };
        if self.since_adapt >= ADAPT_EVERY {
            self.since_adapt = 0;
            self.adapt();
        }
        outcome
    }

    fn transit_p99(&self) -> Option<Duration> {
        if self.transits.is_empty() {
            return None;
        }
        let mut v: Vec<i64> = self.transits.iter().copied().collect();
        v.sort_unstable();
        let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        Some(Duration::from_nanos(v[i].max(0) as u64))
    }

    fn adapt(&mut self) {
        if let PlayoutDelay::Adaptive { min, max, margin } = self.config.delay {
            if self.transits.len() >= MIN_SAMPLES {
                if let Some(p) = self.transit_p99() {
                    let target = (p + margin).clamp(min, max.max(min));
                    self.delay = if target >= self.delay || !self.settled {
                        target
                    } else {
                        target.max(self.delay.saturating_sub(MAX_SHRINK))
                    };
                    self.settled = true;
                }
            }
        }
    }

    /// When the next frame is due (local time), if any is buffered.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.frames
            .keys()
            .next()
            .map(|&(ts, _)| Timestamp(ts) + self.delay)
    }

    /// The next frame due at `now`, with its aligned time; `None` if none
    /// is due yet. Call until `None` to drain everything due.
    pub fn poll(&mut self, now: Timestamp) -> Option<(T, Timestamp)> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        let ((ts, _), item) = self.frames.pop_first()?;
        let ts = Timestamp(ts);
        self.last_released = Some(ts);
        self.stats.released += 1;
        Some((item, ts))
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The counters and estimates now.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            buffered: self.frames.len(),
            delay: self.delay,
            jitter: Duration::from_nanos(self.jitter_ns as u64),
            transit_p99: self.transit_p99(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn fixed(ms: u64) -> JitterBuffer<u32> {
        JitterBuffer::new(JitterConfig {
            delay: PlayoutDelay::Fixed(Duration::from_millis(ms)),
            max_frames: 16,
        })
    }

    #[test]
    fn releases_in_order_at_aligned_plus_delay() {
        let mut b = fixed(20);
        assert_eq!(
            b.push(2, Timestamp(20 * MS), Timestamp(25 * MS)),
            PushOutcome::Buffered(Timestamp(40 * MS))
        );
        assert!(matches!(
            b.push(1, Timestamp(10 * MS), Timestamp(26 * MS)),
            PushOutcome::Buffered(_)
        ));
        assert_eq!(b.next_due(), Some(Timestamp(30 * MS)));
        assert_eq!(b.poll(Timestamp(30 * MS - 1)), None);
        assert_eq!(b.poll(Timestamp(30 * MS)), Some((1, Timestamp(10 * MS))));
        assert_eq!(b.poll(Timestamp(39 * MS)), None);
        assert_eq!(b.poll(Timestamp(50 * MS)), Some((2, Timestamp(20 * MS))));
        assert_eq!(b.stats().released, 2);
    }

    #[test]
    fn late_frames_are_dropped_and_counted() {
        let mut b = fixed(20);
        assert_eq!(
            b.push(1, Timestamp(10 * MS), Timestamp(31 * MS)),
            PushOutcome::Late
        );
        b.push(2, Timestamp(20 * MS), Timestamp(21 * MS));
        assert!(b.poll(Timestamp(40 * MS)).is_some());
        // Behind a released frame: late even if within the delay.
        assert_eq!(
            b.push(3, Timestamp(19 * MS), Timestamp(20 * MS)),
            PushOutcome::Late
        );
        let s = b.stats();
        assert_eq!((s.received, s.released, s.late), (3, 1, 2));
    }

    #[test]
    fn overflow_drops_the_incoming_frame() {
        let mut b = JitterBuffer::new(JitterConfig {
            delay: PlayoutDelay::Fixed(Duration::from_millis(10)),
            max_frames: 2,
        });
        b.push(1, Timestamp(MS), Timestamp(MS));
        b.push(2, Timestamp(2 * MS), Timestamp(2 * MS));
        assert_eq!(
            b.push(3, Timestamp(3 * MS), Timestamp(3 * MS)),
            PushOutcome::Overflow
        );
        assert_eq!(b.stats().overflow, 1);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn adaptive_delay_follows_the_transit_p99() {
        let mut b: JitterBuffer<u32> = JitterBuffer::new(JitterConfig {
            delay: PlayoutDelay::Adaptive {
                min: Duration::from_millis(1),
                max: Duration::from_millis(200),
                margin: Duration::from_millis(2),
            },
            max_frames: 4096,
        });
        assert_eq!(b.delay(), Duration::from_millis(200));
        // Transit 10..=30 ms, uniformly.
        for i in 0..1000u64 {
            let ts = i * 20 * MS;
            let transit = 10 * MS + (i * 7919 % 21) * MS;
            b.push(0, Timestamp(ts), Timestamp(ts + transit));
            while b.poll(Timestamp(ts + transit)).is_some() {}
        }
        let d = b.delay();
        assert!(
            d >= Duration::from_millis(31) && d <= Duration::from_millis(33),
            "{d:?}"
        );
        let s = b.stats();
        assert!(s.jitter > Duration::from_millis(3), "{:?}", s.jitter);
        assert!((s.late as f64) < 0.02 * s.received as f64, "{s:?}");
    }

    #[test]
    fn adaptive_delay_grows_at_once_and_shrinks_gradually() {
        let mut b: JitterBuffer<u32> = JitterBuffer::new(JitterConfig {
            delay: PlayoutDelay::Adaptive {
                min: Duration::from_millis(1),
                max: Duration::from_millis(500),
                margin: Duration::from_millis(2),
            },
            max_frames: 4096,
        });
        let mut ts = 0;
        let mut feed = |b: &mut JitterBuffer<u32>, n: u64, transit: u64| {
            let mut delays = vec![];
            for _ in 0..n {
                ts += 20 * MS;
                b.push(0, Timestamp(ts), Timestamp(ts + transit));
                while b.poll(Timestamp(ts + transit)).is_some() {}
                delays.push(b.delay());
            }
            delays
        };
        // First estimate: straight from the start value to transit + margin.
        feed(&mut b, 100, 50 * MS);
        assert_eq!(b.delay(), Duration::from_millis(52));
        // The path calms down: the delay walks down, never by more than
        // MAX_SHRINK at a time, and reaches the new target.
        let delays = feed(&mut b, 2000, 10 * MS);
        for w in delays.windows(2) {
            assert!(w[0] <= w[1] + MAX_SHRINK, "{:?} -> {:?}", w[0], w[1]);
        }
        assert!(delays[30] > Duration::from_millis(40), "{:?}", delays[30]);
        assert_eq!(b.delay(), Duration::from_millis(12));
        // The path worsens: the delay follows at the next recomputation.
        feed(&mut b, 600, 80 * MS);
        assert_eq!(b.delay(), Duration::from_millis(82));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { ts_ms: u64, transit_ms: u64 },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..200, 0u64..60).prop_map(|(ts_ms, transit_ms)| Op::Push { ts_ms, transit_ms }),
            (0u64..30).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn never_early_in_order_and_accounted(
            ops in proptest::collection::vec(op(), 1..200),
            adaptive in any::<bool>(),
            max_frames in 1usize..32,
        ) {
            let delay = if adaptive {
                PlayoutDelay::Adaptive {
                    min: Duration::from_millis(2),
                    max: Duration::from_millis(40),
                    margin: Duration::from_millis(1),
                }
            } else {
                PlayoutDelay::Fixed(Duration::from_millis(15))
            };
            let mut b = JitterBuffer::new(JitterConfig { delay, max_frames });
            let mut now = 0u64;
            let mut last: Option<Timestamp> = None;
            let mut released = 0u64;
            let drain = |b: &mut JitterBuffer<u64>, now: u64, last: &mut Option<Timestamp>, released: &mut u64| {
                while let Some((item, ts)) = b.poll(Timestamp(now)) {
                    prop_assert_eq!(item, ts.0);
                    // Never early.
                    prop_assert!(ts + b.delay() <= Timestamp(now));
                    // In order.
                    if let Some(l) = *last { prop_assert!(ts >= l); }
                    *last = Some(ts);
                    *released += 1;
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Push { ts_ms, transit_ms } => {
                        // Arrival never goes back in time.
                        let ts = ts_ms * MS + now.saturating_sub(100 * MS);
                        let arrival = (ts + transit_ms * MS).max(now);
                        now = arrival;
                        b.push(ts, Timestamp(ts), Timestamp(arrival));
                    }
                    Op::Advance(ms) => now += ms * MS,
                }
                drain(&mut b, now, &mut last, &mut released)?;
            }
            let s = b.stats();
            prop_assert_eq!(s.released, released);
            prop_assert!(s.buffered <= max_frames);
            prop_assert_eq!(s.received, s.released + s.late + s.overflow + s.buffered as u64);
            // Everything buffered comes out eventually.
            drain(&mut b, u64::MAX / 2, &mut last, &mut released)?;
            let s = b.stats();
            prop_assert_eq!(s.buffered, 0);
            prop_assert_eq!(s.received, s.released + s.late + s.overflow);
        }
    }
}
