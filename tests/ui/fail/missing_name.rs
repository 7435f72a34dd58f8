use echostream::prelude::*;

#[echostream::handler]
async fn handle_play(_ctx: Context, _file: String) -> Result<()> {
    Ok(())
}

fn main() {}
