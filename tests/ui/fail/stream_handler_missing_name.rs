use echostream::prelude::*;

#[echostream::stream_handler]
async fn handle(_ctx: Context, _stream: StreamReceiver) {}

#[echostream::stream_handler(audio)]
async fn handle_ident(_ctx: Context, _stream: StreamReceiver) {}

#[echostream::stream_handler("a", idempotent)]
async fn handle_option(_ctx: Context, _stream: StreamReceiver) {}

fn main() {}
