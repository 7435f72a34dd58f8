use echostream::prelude::*;

#[echostream::listener("audio.volume")]
async fn on_volume(_ctx: Context, level: u8) -> u8 {
    level
}

#[echostream::listener("audio.level")]
async fn on_level(_ctx: Context, level: u8) -> Result<u8> {
    Ok(level)
}

struct PlayerError;

#[echostream::listener("audio.mute")]
async fn on_mute(_ctx: Context) -> std::result::Result<(), PlayerError> {
    Ok(())
}

fn main() {}
