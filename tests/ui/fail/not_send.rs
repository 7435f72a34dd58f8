use echostream::prelude::*;
use std::rc::Rc;

async fn tick() {}

#[echostream::handler("audio.play")]
async fn handle_play(_file: String) -> Result<()> {
    let shared = Rc::new(_file);
    tick().await;
    drop(shared);
    Ok(())
}

fn main() {}
