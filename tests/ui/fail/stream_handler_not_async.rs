use echostream::prelude::*;

#[echostream::stream_handler("audio.stream")]
fn handle(_ctx: Context, _stream: StreamReceiver) {}

fn main() {}
