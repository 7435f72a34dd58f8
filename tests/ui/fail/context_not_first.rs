use echostream::prelude::*;

#[echostream::handler("audio.play")]
async fn handle_play(_file: String, _ctx: Context) -> Result<()> {
    Ok(())
}

fn main() {}
