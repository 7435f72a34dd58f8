use echostream::prelude::*;

struct Track {
    path: String,
}

#[echostream::handler("audio.play")]
async fn handle_play(_ctx: Context, _track: Track) -> Result<()> {
    Ok(())
}

#[echostream::handler("audio.queue")]
async fn queue(_ctx: Context, _position: u32, _track: Track) -> Result<()> {
    Ok(())
}

fn main() {}
