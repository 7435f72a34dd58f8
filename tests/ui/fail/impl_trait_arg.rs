use echostream::prelude::*;

#[echostream::handler("audio.play")]
async fn handle_play(_ctx: Context, _file: impl serde::de::DeserializeOwned) -> Result<()> {
    Ok(())
}

fn main() {}
