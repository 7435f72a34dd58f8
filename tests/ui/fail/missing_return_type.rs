use echostream::prelude::*;

#[echostream::handler("audio.play")]
async fn handle_play(_ctx: Context, _file: String) {}

fn main() {}
