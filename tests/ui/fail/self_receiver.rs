use echostream::prelude::*;

struct Player;

impl Player {
    #[echostream::handler("audio.play")]
    async fn handle_play(&self, _file: String) -> Result<()> {
        Ok(())
    }
}

fn main() {}
