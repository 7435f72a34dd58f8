use echostream::prelude::*;

#[echostream::handler("audio.volume")]
async fn volume(_ctx: Context, level: u8) -> u8 {
    level
}

struct PlayerError;

#[echostream::handler("audio.mute")]
async fn mute(_ctx: Context) -> Result<(), PlayerError> {
    Ok(())
}

fn main() {}
