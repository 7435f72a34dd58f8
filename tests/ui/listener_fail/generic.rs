use echostream::prelude::*;

#[echostream::listener("user.logged_out")]
async fn on_logout<T: serde::de::DeserializeOwned>(_ctx: Context, _user_id: T) {}

fn main() {}
