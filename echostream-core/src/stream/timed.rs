//! [`TimedReceiver`]: the receiving end of a time-synced stream, releasing messages at their
//! sender timestamp (mapped to the local clock) plus a playout delay.

use super::jitter::{JitterBuffer, JitterConfig, JitterStats, PushOutcome};
use super::message::{fail_with, MessageReader};
use super::typed::{decode_playout, PLAYOUT_METADATA};
use super::XStream;
use crate::protocol::timesync::Timestamp;
use crate::Error;
use echostream_types::Status;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Probes answered before a [`TimedReceiver`] releases anything.
const SYNC_SAMPLES: u64 = 4;
/// How long a [`TimedReceiver`] waits for the clock to sync.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared between a [`TimedReceiver`] and its reader task.
struct TimedShared<T> {
    state: std::sync::Mutex<TimedState<T>>,
    notify: tokio::sync::Notify,
}

struct TimedState<T> {
    buffer: JitterBuffer<T>,
    /// Frames read before the clock was synced: (message, sender stamp,
    /// arrival); `None` once synced.
    pending: Option<std::collections::VecDeque<(T, Option<Timestamp>, Timestamp)>>,
    /// The reader stopped (end of stream or error).
    ended: bool,
    error: Option<Error>,
}

impl<T> TimedState<T> {
    fn push(
        &mut self,
        clock: &crate::protocol::SyncedClock,
        msg: T,
        ts: Option<Timestamp>,
        arrival: Timestamp,
    ) {
        match &mut self.pending {
            Some(p) => {
                if p.len() >= self.buffer.max_frames() {
                    self.buffer.reject_overflow();
                    crate::metrics::jitter_dropped("overflow");
                } else {
                    p.push_back((msg, ts, arrival));
                }
            }
            None => {
                let aligned = ts.and_then(|ts| clock.to_local(ts)).unwrap_or(arrival);
                let outcome = self.buffer.push(msg, aligned, arrival);
                tracing::trace!(?outcome, "timed frame");
                match outcome {
                    PushOutcome::Late => crate::metrics::jitter_dropped("late"),
                    PushOutcome::Overflow => crate::metrics::jitter_dropped("overflow"),
                    PushOutcome::Buffered(_) => {}
                }
            }
        }
    }
}

fn lock_state<T>(m: &std::sync::Mutex<TimedState<T>>) -> std::sync::MutexGuard<'_, TimedState<T>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Below this wait, `recv_aligned` yields instead of arming a timer (tokio
/// timers have a 1 ms granularity), so frames come out close to their time.
const SPIN: std::time::Duration = std::time::Duration::from_micros(1500);

/// The receiving end of a time-synced stream: messages come out at their
/// sender timestamp, mapped to the local clock with the connection's
/// [`SyncedClock`](crate::protocol::SyncedClock), plus a playout delay
/// (a [`JitterBuffer`]).
///
/// A reader task starts the clock sync on the connection, waits until it is
/// synced, then reads messages into the jitter buffer. Messages sent without
/// a timestamp count as stamped when they arrived. The playout delay is the
/// one the opener chose (`with_time_sync` / `with_playout_delay`), else the
/// default adaptive delay; [`TimedReceiver::with_config`] overrides it.
pub struct TimedReceiver<T = Vec<u8>> {
    stream: XStream,
    shared: Arc<TimedShared<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> std::fmt::Debug for TimedReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedReceiver")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<T> Drop for TimedReceiver<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: DeserializeOwned + Send + 'static> TimedReceiver<T> {
    /// Wraps an XStream, with the playout delay the opener asked for (or
    /// the default). Must run inside a tokio runtime.
    pub fn new(stream: XStream) -> Self {
        let delay = stream
            .metadata()
            .get_str(PLAYOUT_METADATA)
            .and_then(decode_playout)
            .unwrap_or_default();
        Self::with_config(
            stream,
            JitterConfig {
                delay,
                ..JitterConfig::default()
            },
        )
    }

    /// Wraps an XStream with explicit jitter-buffer settings.
    pub fn with_config(stream: XStream, config: JitterConfig) -> Self {
        let shared = Arc::new(TimedShared {
            state: std::sync::Mutex::new(TimedState {
                buffer: JitterBuffer::new(config),
                pending: Some(std::collections::VecDeque::new()),
                ended: false,
                error: None,
            }),
            notify: tokio::sync::Notify::new(),
        });
        let task = tokio::spawn(timed_reader(stream.share(), shared.clone()));
        TimedReceiver { stream, shared, task }
    }

    /// The next message and its time on the local clock, released at that
    /// time plus the playout delay; `None` when the stream ended and
    /// everything buffered was released, or after an error
    /// ([`TimedReceiver::try_recv_aligned`] returns it).
    pub async fn recv_aligned(&self) -> Option<(T, Timestamp)> {
        match self.try_recv_aligned().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(stream = self.stream.name(), error = %e, "timed stream receive failed");
                None
            }
        }
    }

    /// Like [`TimedReceiver::recv_aligned`], with the error. Frames still
    /// buffered when an error happens are released first.
    pub async fn try_recv_aligned(&self) -> Result<Option<(T, Timestamp)>, Error> {
        let clock = self.stream.peer().local_clock();
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let due = {
                let mut st = lock_state(&self.shared.state);
                let now = clock.now();
                if let Some(frame) = st.buffer.poll(now) {
                    return Ok(Some(frame));
                }
                match st.buffer.next_due() {
                    Some(due) => Some(due.since(now)),
                    None if st.ended && (st.pending.is_none() || st.error.is_some()) => {
                        return match st.error.take() {
                            Some(e) => Err(e),
                            None => Ok(None),
                        };
                    }
                    None => None,
                }
            };
            match due {
                Some(wait) if wait <= SPIN => tokio::task::yield_now().await,
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait - SPIN) => {}
                        _ = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The jitter buffer's counters and estimates.
    pub fn stats(&self) -> JitterStats {
        lock_state(&self.shared.state).buffer.stats()
    }

    /// The connection's view of the sender's clock.
    pub fn clock(&self) -> crate::protocol::SyncedClock {
        self.stream.peer().clock()
    }

    /// Ends the stream with an error the sender receives as `Error::Remote`
    /// (accepting side only).
    pub async fn fail(&self, status: Status) -> Result<(), Error> {
        fail_with(&self.stream, &status).await
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        self.stream.name()
    }

    /// The underlying XStream.
    pub fn xstream(&self) -> &XStream {
        &self.stream
    }
}

/// Reads a time-synced stream into the jitter buffer. Frames are read (and
/// their arrival stamped) from the start; they enter the jitter buffer once
/// the connection's clock is synced.
async fn timed_reader<T: DeserializeOwned + Send + 'static>(stream: XStream, shared: Arc<TimedShared<T>>) {
    let peer = stream.peer().clone();
    let synced = peer.clock();
    let local = peer.local_clock();
    let sync_part = async {
        let result = synced.synced(SYNC_SAMPLES, SYNC_TIMEOUT).await;
        let mut st = lock_state(&shared.state);
        match result {
            Ok(()) => {
                for (msg, ts, arrival) in st.pending.take().unwrap_or_default() {
                    let aligned = ts.and_then(|ts| synced.to_local(ts)).unwrap_or(arrival);
                    st.buffer.push(msg, aligned, arrival);
                }
            }
            Err(e) => {
                st.error = Some(e);
                st.ended = true;
            }
        }
        drop(st);
        shared.notify.notify_one();
    };
    let read_part = async {
        let mut reader = MessageReader::new();
        let error = loop {
            match reader.next_timed::<T>(&stream).await {
                Ok(Some((msg, ts))) => {
                    let arrival = local.now();
                    let mut st = lock_state(&shared.state);
                    if st.error.is_some() {
                        return;
                    }
                    st.push(&synced, msg, ts, arrival);
                    drop(st);
                    shared.notify.notify_one();
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let mut st = lock_state(&shared.state);
        st.ended = true;
        if st.error.is_none() {
            st.error = error;
        }
        drop(st);
        shared.notify.notify_one();
    };
    tokio::join!(sync_part, read_part);
}
