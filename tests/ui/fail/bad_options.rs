use echostream::prelude::*;

#[echostream::handler(name = "audio.play")]
async fn handle_play(_ctx: Context) -> Result<()> {
    Ok(())
}

#[echostream::handler(idempotent, "audio.stop")]
async fn handle_stop(_ctx: Context) -> Result<()> {
    Ok(())
}

#[echostream::handler("audio.pause", idempotent, idempotent)]
async fn handle_pause(_ctx: Context) -> Result<()> {
    Ok(())
}

#[echostream::handler("audio.seek", "fast")]
async fn handle_seek(_ctx: Context) -> Result<()> {
    Ok(())
}

fn main() {}
