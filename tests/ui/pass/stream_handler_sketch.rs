//! The stream handler of the API sketch (no type parameter: raw byte
//! frames), a typed one, a duplex one and a raw XStream one, registered on
//! server and client builders; and the sender side of the sketch.

use echostream::prelude::*; use echostream::stream::{StreamDuplex, StreamError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct AudioFrame {
    seq: u32,
    samples: Vec<i16>,
}

fn play(_frame: Vec<u8>) {}

#[echostream::stream_handler("audio.stream")]
async fn handle_audio_stream(ctx: Context, stream: StreamReceiver) {
    let _ = ctx;
    while let Some(frame) = stream.recv().await {
        play(frame)
    }
}

/// Typed frames, no context, and an error for the sender.
#[echostream::stream_handler("audio.typed")]
async fn typed(stream: StreamReceiver<AudioFrame>) -> Result<()> {
    while let Some(frame) = stream.recv().await {
        if frame.samples.is_empty() {
            return Err(Error::handler(format!("frame {} is empty", frame.seq)));
        }
    }
    Ok(())
}

#[echostream::stream_handler("chat")]
pub async fn chat(_ctx: echostream::Context, stream: StreamDuplex<String>) {
    while let Some(line) = stream.recv().await {
        let _ = stream.send(line).await;
    }
}

#[echostream::stream_handler("bytes")]
async fn raw(stream: XStream) -> std::result::Result<(), StreamError> {
    let data = stream.read_to_end().await?;
    stream.write_all(&data).await
}

async fn sender(client: RpcClient) -> Result<()> {
    let audio_frame: Vec<u8> = vec![0; 960];
    let stream = client.create_stream("audio.stream").await?;
    stream.send(audio_frame).await?;
    let frames = client
        .create_stream("audio.typed")
        .with_metadata("codec", "opus")
        .build()
        .await?;
    frames.send(AudioFrame { seq: 1, samples: vec![0] }).await?;
    frames.finish().await?;
    stream.finish().await
}

fn main() {
    let _server = RpcServer::builder()
        .stream_handler(handle_audio_stream)
        .stream_handler(typed)
        .stream_handler(chat)
        .stream_handler(raw);
    let _client = RpcClient::builder().stream_handler(handle_audio_stream);
    let _ = sender;
    assert_eq!(handle_audio_stream::STREAM, "audio.stream");
}
