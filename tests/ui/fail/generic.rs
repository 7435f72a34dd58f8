use echostream::prelude::*;

#[echostream::handler("audio.play")]
async fn handle_play<T: serde::de::DeserializeOwned>(_ctx: Context, _file: T) -> Result<()> {
    Ok(())
}

fn main() {}
