//! Typed message streams over an [`XStream`], stream handlers, and the
//! `create_stream` builder.
//!
//! A message is framed as `len: u32` (big-endian, counts what follows),
//! `codec: u8` (the payload codec tag, as in requests), then the payload.
//! The receiver checks `len` against its `max_message_size` before it
//! buffers the message.
//!
//! A timestamped message (`send_with_timestamp`) sets bit 7 of the codec
//! byte ([`TIMED_FLAG`]) and puts the sender's timestamp (`u64` big-endian,
//! nanoseconds since the UNIX epoch on the sender's clock) between the codec
//! byte and the payload; `len` counts it. A plain receiver ignores the
//! timestamp; a [`TimedReceiver`] maps it to the local clock and plays the
//! message out through a [`JitterBuffer`].

use super::jitter::{JitterBuffer, JitterConfig, JitterStats, PlayoutDelay};
use super::wire::{self, code};
use super::{Side, StreamError, StreamState, Streams, XStream};
use crate::protocol::timesync::Timestamp;
use crate::protocol::Peer;
use crate::rpc::{Context, RpcClient};
use crate::Error;
use bytes::{Buf, Bytes, BytesMut};
use echostream_types::{Code, Codec, Metadata, Status};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{de::DeserializeOwned, Serialize};
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

const PREFIX: usize = 4;

/// Bit 7 of the codec byte: an 8-byte timestamp follows it.
pub const TIMED_FLAG: u8 = 0x80;
/// Stream metadata key carrying the opener's playout-delay choice for a
/// time-synced stream (see [`CreateStream::with_time_sync`]).
pub const PLAYOUT_METADATA: &str = "echostream.playout";
/// Probes answered before a [`TimedReceiver`] releases anything.
const SYNC_SAMPLES: u64 = 4;
/// How long a [`TimedReceiver`] waits for the clock to sync.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Converts a stream error into the crate error, turning an error block
/// written by a typed acceptor into `Error::Remote` with its status.
fn typed_error(e: StreamError) -> Error {
    match e {
        StreamError::Remote { stream, data } => Error::Remote {
            method: stream,
            status: wire::decode_status(&data),
        },
        other => Error::Stream(other),
    }
}

/// Encodes and writes one message.
async fn send_message<M: Serialize>(
    stream: &XStream,
    codec: Codec,
    max: usize,
    msg: &M,
    ts: Option<Timestamp>,
) -> Result<(), Error> {
    let payload = codec.encode(msg).map_err(|e| {
        Error::Stream(StreamError::BadMessage {
            stream: stream.name().to_owned(),
            detail: format!("message did not encode ({}): {e}", codec.name()),
        })
    })?;
    let extra = if ts.is_some() { 9 } else { 1 };
    if payload.len() + extra > max {
        let e = StreamError::TooLarge {
            stream: stream.name().to_owned(),
            what: "message",
            size: (payload.len() + extra) as u64,
            limit: max as u64,
        };
        // The stream ends on both sides: the receiver sees the code.
        stream.abort(code::MESSAGE_TOO_LARGE).await;
        return Err(Error::Stream(e));
    }
    let mut head = BytesMut::with_capacity(PREFIX + extra);
    head.extend_from_slice(&((payload.len() + extra) as u32).to_be_bytes());
    match ts {
        Some(ts) => {
            head.extend_from_slice(&[codec.tag() | TIMED_FLAG]);
            head.extend_from_slice(&ts.0.to_be_bytes());
        }
        None => head.extend_from_slice(&[codec.tag()]),
    }
    stream
        .write_chunks(&mut [head.freeze(), payload])
        .await
        .map_err(typed_error)
}

/// Reads framed messages from an [`XStream`].
struct MessageReader {
    buf: BytesMut,
    count: u64,
}

impl MessageReader {
    fn new() -> Self {
        MessageReader {
            buf: BytesMut::new(),
            count: 0,
        }
    }

    /// Fills the buffer to `n` bytes; false at a clean end.
    async fn fill(&mut self, stream: &XStream, n: usize) -> Result<bool, StreamError> {
        while self.buf.len() < n {
            match stream.read_chunk().await? {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    async fn next<T: DeserializeOwned>(&mut self, stream: &XStream) -> Result<Option<T>, StreamError> {
        Ok(self.next_timed(stream).await?.map(|(m, _)| m))
    }

    /// The next message and its timestamp, if it carried one.
    async fn next_timed<T: DeserializeOwned>(
        &mut self,
        stream: &XStream,
    ) -> Result<Option<(T, Option<Timestamp>)>, StreamError> {
        let name = || stream.name().to_owned();
        if !self.fill(stream, PREFIX).await? {
            if self.buf.is_empty() {
                return Ok(None);
            }
            return Err(StreamError::BadMessage {
                stream: name(),
                detail: "the stream ended inside a message".into(),
            });
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let max = stream.options().max_message_size;
        if len > max {
            return Err(StreamError::TooLarge {
                stream: name(),
                what: "incoming message",
                size: len as u64,
                limit: max as u64,
            });
        }
        if len == 0 {
            return Err(StreamError::BadMessage {
                stream: name(),
                detail: "message without a codec byte".into(),
            });
        }
        if !self.fill(stream, PREFIX + len).await? {
            return Err(StreamError::BadMessage {
                stream: name(),
                detail: "the stream ended inside a message".into(),
            });
        }
        self.buf.advance(PREFIX);
        let msg = self.buf.split_to(len);
        let (codec, ts, body) = if msg[0] & TIMED_FLAG != 0 {
            if msg.len() < 9 {
                return Err(StreamError::BadMessage {
                    stream: name(),
                    detail: "timestamped message shorter than its timestamp".into(),
                });
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&msg[1..9]);
            (
                Codec::from_tag(msg[0] & !TIMED_FLAG),
                Some(Timestamp(u64::from_be_bytes(b))),
                &msg[9..],
            )
        } else {
            (Codec::from_tag(msg[0]), None, &msg[1..])
        };
        self.count += 1;
        codec
            .decode::<T>(body)
            .map(|m| Some((m, ts)))
            .map_err(|e| StreamError::BadMessage {
                stream: name(),
                detail: format!(
                    "message {} did not decode as {} ({}): {e}",
                    self.count,
                    std::any::type_name::<T>(),
                    codec.name()
                ),
            })
    }
}

/// Ends a stream after a bad incoming message, so both sides know: the
/// acceptor writes the error on the error half; the opener aborts the
/// stream with a code the acceptor reports.
async fn end_after_bad_message(stream: &XStream, e: &StreamError) {
    let (status_code, abort_code) = match e {
        StreamError::TooLarge { .. } => (Code::RESOURCE_EXHAUSTED, code::MESSAGE_TOO_LARGE),
        _ => (Code::BAD_PAYLOAD, code::BAD_MESSAGE),
    };
    match stream.side() {
        Side::Acceptor => {
            let status = Status::new(status_code, e.to_string());
            let _ = stream.error_write(&wire::encode_status(&status), false).await;
        }
        Side::Opener => stream.abort(abort_code).await,
    }
}

fn is_bad_message(e: &StreamError) -> bool {
    matches!(e, StreamError::TooLarge { .. } | StreamError::BadMessage { .. })
}

/// The receiving end of a typed message stream: what a stream handler gets.
/// Without a type parameter it receives raw byte frames (`Vec<u8>`).
pub struct StreamReceiver<T = Vec<u8>> {
    stream: XStream,
    reader: tokio::sync::Mutex<MessageReader>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for StreamReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("stream", &self.stream)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> StreamReceiver<T> {
    /// Wraps an XStream.
    pub fn new(stream: XStream) -> Self {
        StreamReceiver {
            stream,
            reader: tokio::sync::Mutex::new(MessageReader::new()),
            _t: PhantomData,
        }
    }

    /// The next message, or `None` at the end of the stream or after an
    /// error (logged; [`StreamReceiver::try_recv`] returns it).
    pub async fn recv(&self) -> Option<T> {
        match self.try_recv().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(stream = self.stream.name(), error = %e, "stream receive failed");
                None
            }
        }
    }

    /// The next message, `Ok(None)` at the clean end, or the error. A message
    /// over the size limit, or one that does not decode, ends the stream
    /// on both sides with that error.
    pub async fn try_recv(&self) -> Result<Option<T>, Error> {
        let mut reader = self.reader.lock().await;
        match reader.next::<T>(&self.stream).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_bad_message(&e) {
                    end_after_bad_message(&self.stream, &e).await;
                }
                Err(typed_error(e))
            }
        }
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

/// The sending end of a typed message stream (see `RpcClient::create_stream`).
pub struct StreamSender {
    stream: XStream,
    codec: Codec,
}

impl std::fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender")
            .field("stream", &self.stream)
            .field("codec", &self.codec)
            .finish()
    }
}

impl StreamSender {
    /// Wraps an XStream, encoding messages with `codec`.
    pub fn new(stream: XStream, codec: Codec) -> Self {
        StreamSender { stream, codec }
    }

    /// Sends one message. An error the acceptor reported arrives here as
    /// `Error::Remote { method: <stream name>, status }`.
    pub async fn send<M: Serialize>(&self, msg: M) -> Result<(), Error> {
        let max = self.stream.options().max_message_size;
        send_message(&self.stream, self.codec, max, &msg, None).await
    }

    /// Sends one message stamped with `ts`, a time on this side's clock
    /// (see `Peer::local_clock`). A [`TimedReceiver`] maps it to its own
    /// clock and releases the message at that time plus its playout delay.
    pub async fn send_with_timestamp<M: Serialize>(&self, msg: M, ts: Timestamp) -> Result<(), Error> {
        let max = self.stream.options().max_message_size;
        send_message(&self.stream, self.codec, max, &msg, Some(ts)).await
    }

    /// Sends one message stamped with this side's clock now.
    pub async fn send_now<M: Serialize>(&self, msg: M) -> Result<Timestamp, Error> {
        let ts = self.stream.peer().local_clock().now();
        self.send_with_timestamp(msg, ts).await?;
        Ok(ts)
    }

    /// Ends the stream and waits for the acceptor to finish: `Ok` when it
    /// ended without an error, else its error.
    pub async fn finish(self) -> Result<(), Error> {
        self.stream.write_eof().await.map_err(typed_error)?;
        while self.stream.read_chunk().await.map_err(typed_error)?.is_some() {}
        let _ = self.stream.close().await;
        Ok(())
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

/// Both directions of typed messages on one stream. `send` takes any serde
/// message; `recv` yields `T` (raw byte frames by default).
pub struct StreamDuplex<T = Vec<u8>> {
    stream: XStream,
    codec: Codec,
    reader: tokio::sync::Mutex<MessageReader>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for StreamDuplex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDuplex")
            .field("stream", &self.stream)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> StreamDuplex<T> {
    /// Wraps an XStream.
    pub fn new(stream: XStream, codec: Codec) -> Self {
        StreamDuplex {
            stream,
            codec,
            reader: tokio::sync::Mutex::new(MessageReader::new()),
            _t: PhantomData,
        }
    }

    /// Sends one message.
    pub async fn send<M: Serialize>(&self, msg: M) -> Result<(), Error> {
        let max = self.stream.options().max_message_size;
        send_message(&self.stream, self.codec, max, &msg, None).await
    }

    /// Sends one message stamped with `ts` (this side's clock).
    pub async fn send_with_timestamp<M: Serialize>(&self, msg: M, ts: Timestamp) -> Result<(), Error> {
        let max = self.stream.options().max_message_size;
        send_message(&self.stream, self.codec, max, &msg, Some(ts)).await
    }

    /// The next message, or `None` at the end or after an error.
    pub async fn recv(&self) -> Option<T> {
        self.try_recv().await.ok().flatten()
    }

    /// The next message, `Ok(None)` at the clean end, or the error.
    pub async fn try_recv(&self) -> Result<Option<T>, Error> {
        let mut reader = self.reader.lock().await;
        match reader.next::<T>(&self.stream).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_bad_message(&e) {
                    end_after_bad_message(&self.stream, &e).await;
                }
                Err(typed_error(e))
            }
        }
    }

    /// Ends this side's messages; receiving goes on.
    pub async fn finish_sending(&self) -> Result<(), Error> {
        self.stream.write_eof().await.map_err(typed_error)
    }

    /// Ends the stream with an error (accepting side only).
    pub async fn fail(&self, status: Status) -> Result<(), Error> {
        fail_with(&self.stream, &status).await
    }

    /// The underlying XStream.
    pub fn xstream(&self) -> &XStream {
        &self.stream
    }
}

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
                } else {
                    p.push_back((msg, ts, arrival));
                }
            }
            None => {
                let aligned = ts.and_then(|ts| clock.to_local(ts)).unwrap_or(arrival);
                let outcome = self.buffer.push(msg, aligned, arrival);
                tracing::trace!(?outcome, "timed frame");
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
                Err(e) => {
                    if is_bad_message(&e) {
                        end_after_bad_message(&stream, &e).await;
                    }
                    break Some(typed_error(e));
                }
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

/// What a stream handler's parameter can be: [`XStream`] (bytes),
/// [`StreamReceiver<T>`], [`TimedReceiver<T>`] or [`StreamDuplex<T>`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the stream parameter of a stream handler",
    label = "not a stream type",
    note = "use `StreamReceiver<T>`, `StreamDuplex<T>` or `XStream`"
)]
pub trait FromXStream: Sized + Send + 'static {
    /// Wraps the accepted stream.
    fn from_xstream(stream: XStream) -> Self;
}

impl FromXStream for XStream {
    fn from_xstream(stream: XStream) -> Self {
        stream
    }
}

impl<T: DeserializeOwned + Send + 'static> FromXStream for StreamReceiver<T> {
    fn from_xstream(stream: XStream) -> Self {
        StreamReceiver::new(stream)
    }
}

impl<T: DeserializeOwned + Send + 'static> FromXStream for TimedReceiver<T> {
    fn from_xstream(stream: XStream) -> Self {
        TimedReceiver::new(stream)
    }
}

impl<T: DeserializeOwned + Send + 'static> FromXStream for StreamDuplex<T> {
    fn from_xstream(stream: XStream) -> Self {
        StreamDuplex::new(stream, Codec::default())
    }
}

/// What a stream handler may return: nothing, or `Result<(), E>` whose error
/// reaches the opener as `Error::Remote`.
#[diagnostic::on_unimplemented(
    message = "a stream handler must return `()` or `Result<(), E>` with `E: Into<Status>`; found `{Self}`",
    label = "stream handler return type"
)]
pub trait StreamHandlerResult: Send {
    /// The error to report, if any.
    fn into_status(self) -> Result<(), Status>;
}

impl StreamHandlerResult for () {
    fn into_status(self) -> Result<(), Status> {
        Ok(())
    }
}

impl<E: Into<Status> + Send> StreamHandlerResult for Result<(), E> {
    fn into_status(self) -> Result<(), Status> {
        self.map_err(Into::into)
    }
}

/// Accepts the streams of one name, each in its own task.
/// `#[echostream::stream_handler("name")]` implements it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an EchoStream stream handler",
    label = "not a stream handler",
    note = "annotate an `async fn` with `#[echostream::stream_handler(\"name\")]` or use `stream_handler_fn`"
)]
pub trait StreamHandler: Send + Sync + 'static {
    /// The stream name it accepts.
    fn name(&self) -> &str;
    /// Runs on one accepted stream. An error is written on the error half.
    fn call(&self, ctx: Context, stream: XStream) -> BoxFuture<'static, Result<(), Status>>;
    /// What reflection (`echostream.describe`) reports about it; by default its name alone.
    fn describe(&self) -> echostream_types::descriptor::StreamInfo {
        echostream_types::descriptor::StreamInfo::unknown(self.name())
    }
}

impl std::fmt::Debug for dyn StreamHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamHandler({})", self.name())
    }
}

/// Runs a handler on an accepted stream, then ends the stream: closed
/// cleanly when it returned normally, with its error on the error half
/// otherwise (a panic becomes `HANDLER_PANICKED`).
pub(crate) async fn run_stream_handler(handler: Arc<dyn StreamHandler>, ctx: Context, stream: XStream) {
    let keep = stream.share();
    let name = stream.name().to_owned();
    let result = AssertUnwindSafe(handler.call(ctx, stream)).catch_unwind().await;
    let result = result.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        tracing::error!(stream = name, panic = msg, "stream handler panicked");
        Err(Status::new(
            Code::HANDLER_PANICKED,
            format!("stream handler for `{name}` panicked: {msg}"),
        ))
    });
    match result {
        Ok(()) => {
            if !matches!(keep.state(), StreamState::Closed) {
                let _ = keep.close().await;
            }
        }
        Err(status) => {
            tracing::debug!(stream = name, error = %status, "stream handler failed");
            // Boxed: a rare path whose future (about 600 bytes) would otherwise enlarge every
            // stream handler's task.
            let written = Box::pin(keep.error_write(&wire::encode_status(&status), true)).await;
            if written.is_err() {
                let _ = keep.close().await;
            }
        }
    }
}

/// A stream handler made from a name and an async closure taking the
/// context and a stream parameter ([`FromXStream`]).
pub fn stream_handler_fn<S, F, Fut>(name: impl Into<String>, f: F) -> FnStreamHandler<S, F>
where
    S: FromXStream,
    F: Fn(Context, S) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: StreamHandlerResult,
{
    FnStreamHandler {
        name: name.into(),
        f: Arc::new(f),
        _s: PhantomData,
    }
}

/// See [`stream_handler_fn`].
pub struct FnStreamHandler<S, F> {
    name: String,
    f: Arc<F>,
    _s: PhantomData<fn(S)>,
}

impl<S, F> std::fmt::Debug for FnStreamHandler<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnStreamHandler")
            .field("name", &self.name)
            .finish()
    }
}

impl<S, F, Fut> StreamHandler for FnStreamHandler<S, F>
where
    S: FromXStream,
    F: Fn(Context, S) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: StreamHandlerResult,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, ctx: Context, stream: XStream) -> BoxFuture<'static, Result<(), Status>> {
        let f = self.f.clone();
        Box::pin(async move { f(ctx, S::from_xstream(stream)).await.into_status() })
    }
}

/// A stream handler submitted by `#[stream_handler]`, for `register_all()`.
#[derive(Debug)]
pub struct StreamHandlerRegistration {
    /// Returns the handler.
    pub make: fn() -> Arc<dyn StreamHandler>,
    /// Its stream name.
    pub name: &'static str,
}

inventory::collect!(StreamHandlerRegistration);

/// All stream handlers submitted with `#[stream_handler]` in the binary.
pub fn registered_stream_handlers() -> impl Iterator<Item = &'static StreamHandlerRegistration> {
    inventory::iter::<StreamHandlerRegistration>.into_iter()
}

/// Builds a typed message stream: `create_stream(name)` then optional
/// settings, then `.await` (or `.build().await`).
///
/// ```no_run
/// # async fn doc(client: echostream_core::rpc::RpcClient) -> echostream_core::Result<()> {
/// let stream = client.create_stream("audio.stream").with_metadata("codec", "opus").build().await?;
/// stream.send(vec![0u8; 960]).await?;
/// stream.finish().await?;
/// # Ok(()) }
/// ```
#[must_use = "a CreateStream does nothing until built or awaited"]
pub struct CreateStream {
    peer: Peer,
    name: String,
    metadata: Metadata,
    codec: Option<Codec>,
}

/// Encodes a playout delay for [`PLAYOUT_METADATA`].
fn encode_playout(d: PlayoutDelay) -> String {
    match d {
        PlayoutDelay::Fixed(d) => format!("fixed:{}", d.as_nanos()),
        PlayoutDelay::Adaptive { min, max, margin } => {
            format!(
                "adaptive:{}:{}:{}",
                min.as_nanos(),
                max.as_nanos(),
                margin.as_nanos()
            )
        }
    }
}

/// Decodes [`PLAYOUT_METADATA`]; `None` if absent or malformed.
fn decode_playout(s: &str) -> Option<PlayoutDelay> {
    let mut it = s.split(':');
    let kind = it.next()?;
    let mut n =
        || -> Option<std::time::Duration> { Some(std::time::Duration::from_nanos(it.next()?.parse().ok()?)) };
    match kind {
        "fixed" => Some(PlayoutDelay::Fixed(n()?)),
        "adaptive" => Some(PlayoutDelay::Adaptive {
            min: n()?,
            max: n()?,
            margin: n()?,
        }),
        _ => None,
    }
}

impl std::fmt::Debug for CreateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateStream")
            .field("name", &self.name)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl CreateStream {
    pub(crate) fn new(peer: Peer, name: &str) -> Self {
        CreateStream {
            peer,
            name: name.to_owned(),
            metadata: Metadata::new(),
            codec: None,
        }
    }

    /// Adds a metadata entry the acceptor sees (and its decision policy).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Marks the stream as time-synced with the default (adaptive) playout
    /// delay: send with [`StreamSender::send_with_timestamp`]; the acceptor
    /// takes a [`TimedReceiver`] and receives with `recv_aligned`.
    pub fn with_time_sync(self) -> Self {
        self.with_playout_delay(PlayoutDelay::default())
    }

    /// Marks the stream as time-synced with this playout delay (fixed or
    /// adaptive), which the acceptor's [`TimedReceiver`] uses.
    pub fn with_playout_delay(mut self, delay: PlayoutDelay) -> Self {
        self.metadata.insert(PLAYOUT_METADATA, encode_playout(delay));
        self
    }

    /// Encodes messages with `codec` (default bincode).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// Opens the stream and returns a sender of messages.
    pub async fn build(self) -> Result<StreamSender, Error> {
        let codec = self.codec.unwrap_or_default();
        let s = self.peer.open_stream_with(&self.name, self.metadata).await?;
        Ok(StreamSender::new(s, codec))
    }

    /// Opens the stream for messages both ways; `T` is what the peer sends.
    pub async fn build_duplex<T: DeserializeOwned + Send + 'static>(self) -> Result<StreamDuplex<T>, Error> {
        let codec = self.codec.unwrap_or_default();
        let s = self.peer.open_stream_with(&self.name, self.metadata).await?;
        Ok(StreamDuplex::new(s, codec))
    }
}

impl IntoFuture for CreateStream {
    type Output = Result<StreamSender, Error>;
    type IntoFuture = BoxFuture<'static, Result<StreamSender, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.build())
    }
}

impl Peer {
    /// A typed message stream toward this peer (see [`CreateStream`]).
    pub fn create_stream(&self, name: &str) -> CreateStream {
        CreateStream::new(self.clone(), name)
    }

    /// The stream control handle of the server or client this connection belongs to.
    pub fn streams(&self) -> Streams {
        Streams::new(self.stream_state().registry.clone())
    }
}

impl RpcClient {
    /// The stream control handle: accept names, open streams, set the decision policy.
    pub fn streams(&self) -> Streams {
        self.peer().streams()
    }

    /// Opens a byte stream named `name` toward the server.
    pub async fn open_stream(&self, name: &str) -> Result<XStream, StreamError> {
        self.peer().open_stream(name).await
    }

    /// A typed message stream toward the server:
    /// `client.create_stream("audio.stream").await?` or, with settings,
    /// `client.create_stream(name).with_metadata(k, v).build().await?`.
    pub fn create_stream(&self, name: &str) -> CreateStream {
        self.peer().create_stream(name)
    }
}

/// Writes `status` on the error half after the data already written: how a
/// receiver ends a typed stream with an error the sender sees as `Error::Remote`.
async fn fail_with(stream: &XStream, status: &Status) -> Result<(), Error> {
    stream
        .error_write(&wire::encode_status(status), true)
        .await
        .map_err(Error::Stream)
}
