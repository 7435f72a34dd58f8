use echostream::prelude::*;

#[echostream::stream_handler("audio.stream")]
async fn none(_ctx: Context) {}

#[echostream::stream_handler("audio.stream2")]
async fn two(_a: StreamReceiver, _b: StreamReceiver) {}

#[echostream::stream_handler("audio.stream3")]
async fn borrowed(_s: &StreamReceiver) {}

fn main() {}
