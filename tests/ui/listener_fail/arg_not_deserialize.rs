use echostream::prelude::*;

struct Track {
    path: String,
}

#[echostream::listener("audio.played")]
async fn on_played(_ctx: Context, _track: Track) {}

#[echostream::listener("audio.queued")]
async fn on_queued(_ctx: Context, _position: u32, _track: Track) {}

fn main() {}
