use echostream::prelude::*;

#[echostream::handler("audio.play")]
fn handle_play(_ctx: Context, _file: String) -> Result<()> {
    Ok(())
}

fn main() {}
