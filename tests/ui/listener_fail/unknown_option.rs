use echostream::prelude::*;

#[echostream::listener("user.logged_out", idempotent)]
async fn on_logout(_ctx: Context, _user_id: u64) {}

#[echostream::listener("user.logged_in", "fast")]
async fn on_login(_ctx: Context) {}

fn main() {}
