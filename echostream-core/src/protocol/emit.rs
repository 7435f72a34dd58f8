//! [`Peer`]'s event methods: `emit`, the broadcast's queueing of an encoded event, and giving
//! event credit back (see `credit`).

use super::call::encode_value;
use super::driver::Outgoing;
use super::{CallOptions, Delivery, Peer, Role};
use crate::Error;
use bytes::Bytes;
use echostream_types::frame::LENGTH_PREFIX;
use echostream_types::{CloseCode, Codec, EventFrame, Frame, Metadata};
use serde::Serialize;
use std::time::Duration;

impl Peer {
    /// Sends a one-way event. Returns once the event is handed to the
    /// connection's writer (not when the peer has processed it); waits while
    /// the write queue is full, and while the peer already holds as many of
    /// our events unprocessed as its listener queue takes (event credit, which
    /// the peer gives back as its listeners finish them).
    pub async fn emit<T: Serialize>(&self, name: &str, value: T) -> Result<(), Error> {
        self.emit_with(name, value, CallOptions::default()).await
    }

    /// [`Peer::emit`] with metadata or a codec.
    pub async fn emit_with<T: Serialize>(
        &self,
        name: &str,
        value: T,
        opts: CallOptions,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.shared.state.role() == Role::Client {
            // An event cannot be told apart from its replay: never send one early.
            self.wait_established().await?;
        }
        let codec = opts.codec.unwrap_or(self.shared.config.default_codec);
        let payload = encode_value(codec, &value, name, "event")?;
        let (codec, payload) = self
            .deflate(codec, &payload, opts.compression)
            .unwrap_or((codec, payload));
        // Waits while the peer's listeners are behind (event credit), never the peer's reader;
        // a connection that ends meanwhile ends the wait.
        // Biased: with credit at hand, the close watch is never polled (it takes quinn's lock).
        tokio::select! {
            biased;
            () = self.shared.credit.acquire() => {}
            e = self.closed() => return Err(e),
        }
        let frame = Frame::Event(EventFrame {
            name: name.to_owned(),
            codec,
            metadata: opts.metadata,
            payload,
        });
        // Events stay on the control stream so that they arrive in order.
        self.send_frame(&frame, || format!("event `{name}`"), false)
            .await
            .inspect(|()| crate::metrics::event_sent())
    }

    /// Queues an already encoded event, waiting at most `wait` for room in the
    /// write queue. A peer that cannot take it in time is disconnected with
    /// `SLOW_CONSUMER` (see `ServerHandle::broadcast`).
    pub(crate) async fn send_prepared_event(&self, head: Bytes, tail: Bytes, wait: Duration) -> Delivery {
        if self.end_recorded() {
            return Delivery::Skipped;
        }
        let size = (head.len() - LENGTH_PREFIX + tail.len()) as u64;
        let limit = self.peer_max_frame_size();
        if size > u64::from(limit) {
            tracing::warn!(peer = %self.shared.remote, size, limit,
                "broadcast event larger than the peer's frame limit; not sent to it");
            return Delivery::Skipped;
        }
        let queued = async {
            // The peer's listeners being behind for `wait` counts as not keeping up too.
            self.shared.credit.acquire().await;
            self.shared.out.send(Outgoing::Frame { head, tail }).await
        };
        match tokio::time::timeout(wait, queued).await {
            Ok(Ok(())) => {
                crate::metrics::event_sent();
                Delivery::Queued
            }
            Ok(Err(e)) => {
                self.note_write_failure(e);
                Delivery::Skipped
            }
            Err(_) => {
                let reason = format!(
                    "it did not keep up with events: its write queue stayed full, or its \
                     listeners behind, for {wait:?}"
                );
                tracing::warn!(peer = %self.shared.remote, reason, "disconnecting slow peer");
                self.shared
                    .conn
                    .close(CloseCode::SLOW_CONSUMER.0.into(), reason.as_bytes());
                self.mark_closed(
                    Some(CloseCode::SLOW_CONSUMER),
                    format!("closed locally: {reason}"),
                );
                crate::metrics::event_dropped("slow_consumer");
                Delivery::Evicted
            }
        }
    }

    /// Gives `n` units of event credit back to the peer (see `credit`): its listeners here
    /// finished that many of its events.
    pub(super) async fn give_event_credit(&self, n: u32) {
        let frame = Frame::Event(EventFrame {
            name: super::credit::EVENT_CREDIT_EVENT.to_owned(),
            codec: Codec::Bincode,
            metadata: Metadata::new(),
            payload: Bytes::copy_from_slice(&n.to_be_bytes()),
        });
        if let Err(e) = self.send_frame(&frame, || "event credit".into(), false).await {
            tracing::debug!(error = %e, "event credit not sent");
        }
    }
}
