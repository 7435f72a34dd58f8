use echostream::prelude::*;

#[echostream::listener("user.logged_out")]
fn on_logout(_ctx: Context, _user_id: u64) {}

fn main() {}
