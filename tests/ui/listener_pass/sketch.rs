//! The listener of the API sketch, registered on both sides.

use echostream::prelude::*;

#[echostream::listener("user.logged_out")]
async fn on_logout(ctx: Context, user_id: u64) {
    /* ... */
    let _ = (ctx, user_id);
}

fn main() {
    let _server = RpcServer::builder().bind("0.0.0.0:5000").listener(on_logout);
    let _client = RpcClient::builder().listener(on_logout);
}
