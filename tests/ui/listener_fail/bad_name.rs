use echostream::prelude::*;

const LOGGED_OUT: &str = "user.logged_out";

#[echostream::listener(LOGGED_OUT)]
async fn on_logout(_ctx: Context, _user_id: u64) {}

#[echostream::listener(42)]
async fn on_login(_ctx: Context) {}

#[echostream::listener("")]
async fn on_idle(_ctx: Context) {}

#[echostream::listener(event = "user.joined")]
async fn on_join(_ctx: Context) {}

fn main() {}
