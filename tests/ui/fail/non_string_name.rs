use echostream::prelude::*;

const PLAY: &str = "audio.play";

#[echostream::handler(PLAY)]
async fn handle_play(_ctx: Context, _file: String) -> Result<()> {
    Ok(())
}

#[echostream::handler(42)]
async fn handle_stop(_ctx: Context) -> Result<()> {
    Ok(())
}

#[echostream::handler("")]
async fn handle_pause(_ctx: Context) -> Result<()> {
    Ok(())
}

fn main() {}
