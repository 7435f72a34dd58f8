//! Typed message streams over an [`XStream`]: the endpoints [`StreamSender`],
//! [`StreamReceiver`] and [`StreamDuplex`], and the `create_stream` builder ([`CreateStream`]).
//! The framing they share is in `message`; the time-synced receiver in `timed`.

use super::jitter::PlayoutDelay;
use super::message::{fail_with, send_message, typed_error, MessageReader};
use super::{Streams, XStream};
use crate::protocol::timesync::Timestamp;
use crate::protocol::Peer;
use crate::Error;
use bytes::Bytes;
use echostream_types::{Codec, Metadata, Status};
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use std::future::IntoFuture;
use std::marker::PhantomData;

/// Stream metadata key carrying the opener's playout-delay choice for a
/// time-synced stream (see [`CreateStream::with_time_sync`]).
pub const PLAYOUT_METADATA: &str = "echostream.playout";

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
        self.reader.lock().await.next::<T>(&self.stream).await
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
    /// (see `Peer::local_clock`). A [`TimedReceiver`](super::TimedReceiver) maps it to its own
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
        self.reader.lock().await.next::<T>(&self.stream).await
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
pub(super) fn decode_playout(s: &str) -> Option<PlayoutDelay> {
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
    /// takes a [`TimedReceiver`](super::TimedReceiver) and receives with `recv_aligned`.
    pub fn with_time_sync(self) -> Self {
        self.with_playout_delay(PlayoutDelay::default())
    }

    /// Marks the stream as time-synced with this playout delay (fixed or
    /// adaptive), which the acceptor's [`TimedReceiver`](super::TimedReceiver) uses.
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
