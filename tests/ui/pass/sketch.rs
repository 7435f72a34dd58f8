//! The handlers of the API sketch, registered on a server builder.

use echostream::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Session {
    user: String,
}

impl Session {
    fn new(user: String) -> Self {
        Session { user }
    }
}

#[echostream::handler("audio.play")]
async fn handle_play(ctx: Context, file: String) -> Result<()> {
    let _ = (ctx, file);
    Ok(())
}

#[echostream::handler("user.login")]
async fn login(ctx: Context, username: String) -> Result<Session> {
    let _ = ctx;
    Ok(Session::new(username))
}

fn main() {
    let _builder = RpcServer::builder()
        .bind("0.0.0.0:5000")
        .handler(handle_play)
        .handler(login);
}
