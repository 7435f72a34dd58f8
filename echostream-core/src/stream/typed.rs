//! Typed message streams over an [`XStream`], stream handlers, and the
//! `create_stream` builder.
//!
//! A message is framed as `len: u32` (big-endian, counts what follows),
//! `codec: u8` (the payload codec tag, as in requests), then the payload.
//! The receiver checks `len` against its `max_message_size` before it
//! buffers the message.

use super::wire::{self, code};
use super::{Side, StreamError, StreamState, Streams, XStream};
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
) -> Result<(), Error> {
    let payload = codec.encode(msg).map_err(|e| {
        Error::Stream(StreamError::BadMessage {
            stream: stream.name().to_owned(),
            detail: format!("message did not encode ({}): {e}", codec.name()),
        })
    })?;
    if payload.len() + 1 > max {
        let e = StreamError::TooLarge {
            stream: stream.name().to_owned(),
            what: "message",
            size: payload.len() as u64 + 1,
            limit: max as u64,
        };
        // The stream ends on both sides: the receiver sees the code.
        stream.abort(code::MESSAGE_TOO_LARGE).await;
        return Err(Error::Stream(e));
    }
    let mut head = BytesMut::with_capacity(PREFIX + 1);
    head.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    head.extend_from_slice(&[codec.tag()]);
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
        let codec = Codec::from_tag(msg[0]);
        self.count += 1;
        codec
            .decode::<T>(&msg[1..])
            .map(Some)
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
        self.stream
            .error_write(&wire::encode_status(&status), true)
            .await
            .map_err(Error::Stream)
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
        send_message(&self.stream, self.codec, max, &msg).await
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
        send_message(&self.stream, self.codec, max, &msg).await
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
        self.stream
            .error_write(&wire::encode_status(&status), true)
            .await
            .map_err(Error::Stream)
    }

    /// The underlying XStream.
    pub fn xstream(&self) -> &XStream {
        &self.stream
    }
}

/// What a stream handler's parameter can be: [`XStream`] (bytes),
/// [`StreamReceiver<T>`] or [`StreamDuplex<T>`].
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
            if keep
                .error_write(&wire::encode_status(&status), true)
                .await
                .is_err()
            {
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
