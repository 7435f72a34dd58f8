use echostream::prelude::*;

#[echostream::handler("audio.play")]
async fn handle_play(_ctx: &Context, _file: &str) -> Result<()> {
    Ok(())
}

fn main() {}
