//! Clock synchronisation with the peer: the probes' driver task and [`SyncedClock`], a
//! connection's view of the peer's clock. The estimation itself is sans-IO, in `timesync`.

use super::state::lock;
use super::timesync::{self, Clock, ClockFilter, Sample, Timestamp};
use super::Shared;
use super::{driver::Outgoing, Peer};
use crate::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clock-sync state of one connection.
pub(super) struct ClockSync {
    local: Arc<dyn Clock>,
    filter: Mutex<ClockFilter>,
    /// Number of samples taken so far, for waiters.
    updates: tokio::sync::watch::Sender<u64>,
    /// Asks the driver for a burst now.
    kick: tokio::sync::Notify,
}

impl ClockSync {
    /// Starts the exchange for a connection: a burst of probes every `time_sync_interval`
    /// while it lives.
    pub(super) fn start(shared: &Arc<Shared>) -> Arc<Self> {
        let sync = Arc::new(ClockSync {
            local: shared.config.clock.clone(),
            filter: Mutex::new(ClockFilter::new(512)),
            updates: tokio::sync::watch::channel(0).0,
            kick: tokio::sync::Notify::new(),
        });
        tokio::spawn(clock_sync_task(Arc::downgrade(shared), sync.clone()));
        sync
    }

    /// Adds the sample completed by an answer to one of our probes.
    pub(super) fn add(&self, s: Sample) {
        lock(&self.filter).add(s);
        self.updates.send_modify(|n| *n += 1);
    }
}

/// Probes per burst on a quiet path.
const BURST: usize = 8;
/// Spread of the low delays above which a path counts as jittery.
const JITTERY_SPREAD_NS: f64 = 200_000.0;
/// How long a probe round waits for its answers before the next.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Sends a burst of probes now and then, while the connection lives.
async fn clock_sync_task(shared: std::sync::Weak<Shared>, sync: Arc<ClockSync>) {
    // Probes are not sent as early data: their timestamps would be wrong in a replay.
    match shared.upgrade() {
        Some(s) => {
            if (Peer { shared: s }).wait_established().await.is_err() {
                return;
            }
        }
        None => return,
    }
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        if s.state.closed().is_some() {
            return;
        }
        let interval = s.config.time_sync_interval;
        let out = s.out.clone();
        let (id, now) = (s.id, s.config.clock.now().0);
        drop(s);
        // The estimate after the last burst, for the per-connection gauges.
        if let Some(e) = lock(&sync.filter).estimate() {
            crate::metrics::clock(
                id,
                e.offset_at(now).round() as i64,
                Duration::from_nanos(e.error as u64),
            );
        }
        // A jittery path needs more samples for the same accuracy (the
        // estimate rests on the few whose delay came out lowest), and probes
        // are ~40 bytes each: take four times as many there.
        let jittery = lock(&sync.filter)
            .estimate()
            .is_some_and(|e| e.spread > JITTERY_SPREAD_NS);
        // On a quiet path, pairs: the first of a pair finds an idle path (the
        // drivers asleep) and travels slower one way than its answer; the
        // second, right behind it, travels a warm path both ways. On a
        // jittery path that warm-up is noise, and a probe sent behind
        // another waits for it (the control stream delivers in order), which
        // would break the symmetry the filter relies on: send single probes.
        let (rounds, per_round) = if jittery { (4 * BURST, 1) } else { (BURST / 2, 2) };
        let mut answers = sync.updates.subscribe();
        for _ in 0..rounds {
            let before = *answers.borrow_and_update();
            for _ in 0..per_round {
                if out.send(Outgoing::TimeProbe).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            // Next round once these are answered (or lost), so that no
            // probe is ever in flight behind another.
            let answered = answers.wait_for(|n| *n >= before + per_round as u64);
            match tokio::time::timeout(PROBE_TIMEOUT, answered).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => return,
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = sync.kick.notified() => {}
        }
    }
}

/// A connection's view of the peer's clock (see [`Peer::clock`]). Cheap to clone.
///
/// All methods that need an estimate return `None` until the first probe
/// has been answered (use [`SyncedClock::synced`] to wait for it).
#[derive(Clone)]
pub struct SyncedClock {
    pub(super) sync: Arc<ClockSync>,
}

impl std::fmt::Debug for SyncedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncedClock")
            .field("estimate", &lock(&self.sync.filter).estimate())
            .finish()
    }
}

impl SyncedClock {
    fn estimate(&self) -> Option<timesync::Estimate> {
        lock(&self.sync.filter).estimate()
    }

    /// Waits until at least `samples` probes have been answered (or `timeout`).
    pub async fn synced(&self, samples: u64, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.sync.updates.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= samples))
            .await
            .map_err(|_| Error::Timeout {
                method: "clock sync".into(),
                after: timeout,
            })?
            .map_err(|_| Error::ConnectionClosed {
                code: None,
                reason: "connection ended during clock sync".into(),
            })?;
        Ok(())
    }

    /// Asks for a burst of probes now (on demand refresh).
    pub fn refresh(&self) {
        self.sync.kick.notify_one();
    }

    /// This host's clock now.
    pub fn local_now(&self) -> Timestamp {
        self.sync.local.now()
    }

    /// The peer's clock now, as estimated.
    pub fn now(&self) -> Option<Timestamp> {
        self.to_peer(self.local_now())
    }

    /// Peer clock minus local clock now, in nanoseconds.
    pub fn offset_nanos(&self) -> Option<i64> {
        let now = self.local_now().0;
        self.estimate().map(|e| e.offset_at(now).round() as i64)
    }

    /// How fast the peer's clock runs relative to ours, in parts per million.
    pub fn drift_ppm(&self) -> Option<f64> {
        self.estimate().map(|e| e.drift * 1e6)
    }

    /// The smallest round-trip delay among the trusted samples.
    pub fn rtt(&self) -> Option<Duration> {
        self.estimate().map(|e| Duration::from_nanos(e.delay as u64))
    }

    /// A bound on the offset's error: half the best round trip plus the spread of the fit.
    pub fn error_bound(&self) -> Option<Duration> {
        self.estimate().map(|e| Duration::from_nanos(e.error as u64))
    }

    /// A local time expressed on the peer's clock.
    pub fn to_peer(&self, local: Timestamp) -> Option<Timestamp> {
        self.estimate()
            .map(|e| local.offset_by(e.offset_at(local.0).round() as i64))
    }

    /// A peer time expressed on the local clock.
    pub fn to_local(&self, peer: Timestamp) -> Option<Timestamp> {
        // The offset changes by about drift·offset over the offset itself:
        // evaluate it at the local time first guessed.
        self.estimate().map(|e| {
            let guess = peer.offset_by(-(e.offset_at(peer.0).round() as i64));
            peer.offset_by(-(e.offset_at(guess.0).round() as i64))
        })
    }
}
