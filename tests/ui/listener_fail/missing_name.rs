use echostream::prelude::*;

#[echostream::listener]
async fn on_logout(_ctx: Context, _user_id: u64) {}

fn main() {}
