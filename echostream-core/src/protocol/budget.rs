//! Per-connection budgets the reader enforces: permits for answers sent from their own tasks,
//! the payload bytes of the peer's running requests and of its events queued for listeners
//! (taken without waiting: an event that does not fit is dropped).
//! They bound what a peer can make this side hold, whatever the RPC layer's policy.

use super::ProtocolConfig;
use echostream_types::{Code, Status};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default most payload bytes of running requests per connection (at least the frame limit).
pub const DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;

/// Payload bytes of events queued for listeners per connection (at least the frame limit).
const DEFAULT_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// The budgets of one connection.
pub(crate) struct Budgets {
    /// Permits for answers sent from short tasks (large ones, and any while the writer is
    /// congested): they bound how many such tasks a peer that does not read its answers can
    /// make this side hold (see `replies`).
    replies: Arc<Semaphore>,
    /// One permit per payload byte of running requests.
    request_bytes: Arc<Semaphore>,
    request_bytes_limit: usize,
    /// One permit per payload byte of events queued for listeners (released when the event
    /// has been processed); an event that does not fit is dropped, never waited for.
    event_bytes: Arc<Semaphore>,
    event_bytes_limit: usize,
}

impl Budgets {
    pub(crate) fn new(config: &ProtocolConfig) -> Self {
        // A request as large as the frame limit must always be able to run alone.
        let request_bytes_limit = config.max_request_bytes.max(config.max_frame_size as usize);
        let event_bytes_limit = DEFAULT_EVENT_BYTES.max(config.max_frame_size as usize);
        Self {
            replies: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            request_bytes: Arc::new(Semaphore::new(request_bytes_limit)),
            request_bytes_limit,
            event_bytes: Arc::new(Semaphore::new(event_bytes_limit)),
            event_bytes_limit,
        }
    }

    /// Takes `len` bytes of queued events from the budget until the returned value drops, or
    /// `None` when they do not fit: the reader never waits for event room (see `driver`).
    pub(crate) fn try_reserve_event_bytes(&self, len: usize) -> Option<EventBytes> {
        let n = u32::try_from(len).ok()?;
        let permit = self.event_bytes.clone().try_acquire_many_owned(n).ok()?;
        Some(EventBytes { _permit: permit })
    }

    /// The most payload bytes of events queued for listeners at once.
    pub(crate) fn event_bytes_limit(&self) -> usize {
        self.event_bytes_limit
    }

    /// Reserves `len` payload bytes for a request of `method` until the returned permit drops,
    /// or refuses it with `RESOURCE_EXHAUSTED` naming the limit.
    pub(crate) fn reserve_request_bytes(
        &self,
        method: &str,
        len: usize,
    ) -> Result<Option<OwnedSemaphorePermit>, Status> {
        if len == 0 {
            return Ok(None);
        }
        let refused = || {
            Status::new(
                Code::RESOURCE_EXHAUSTED,
                format!(
                    "`{method}` refused: its {len}-byte argument would take the payload bytes of \
                     requests running on this connection over the limit of {} bytes; retry later",
                    self.request_bytes_limit
                ),
            )
        };
        let n = u32::try_from(len).map_err(|_| refused())?;
        self.request_bytes
            .clone()
            .try_acquire_many_owned(n)
            .map(Some)
            .map_err(|_| refused())
    }

    /// A permit for one answer sent from its own task; `None` when all are taken.
    pub(crate) fn reply_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.replies.clone().try_acquire_owned().ok()
    }

    /// Waits for a permit for one answer sent from its own task (the reader races this
    /// against handing its held answers to the writer, see `replies`).
    pub(crate) async fn reply_permit_wait(&self) -> Option<OwnedSemaphorePermit> {
        self.replies.clone().acquire_owned().await.ok()
    }
}

/// Event bytes held while an event is queued or processed (see
/// [`Budgets::try_reserve_event_bytes`]).
pub(crate) struct EventBytes {
    _permit: OwnedSemaphorePermit,
}
